"""Practice names beside ODS codes in the API's JSON and CSV, and a practice found by its name (issue 16
item 3): the one practice table (engine.app.practices) is used, never a second list. Runs on SQLite only:
nothing here depends on the database (the `backend` fixture is narrowed to it)."""
from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from engine.app.practices import practice_name
from engine.app.users import DEMO_PASSWORD_SUFFIX
from tests.api.support import AMINA, GEORGE

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
DENSHAM, QUEENS_PARK = "The Densham Surgery", "Queens Park Medical Centre"


def test_patients_and_worklist_json_name_the_practice(api):
    patients = api.get("/patients", params={"page_size": 500}).json()["items"]
    assert patients and all(p["practice_name"] == practice_name(p["practice"]) for p in patients)
    assert {p["practice_name"] for p in patients if p["practice"] == "A81001"} == {DENSHAM}
    assert api.get(f"/patients/{GEORGE}").json()["practice_name"] == QUEENS_PARK
    tasks = api.get("/worklist", params={"page_size": 500}).json()["items"]
    assert tasks and all(t["practice_name"] == practice_name(t["practice"]) for t in tasks)
    detail = api.get(f"/tasks/{tasks[0]['id']}").json()
    assert detail["practice_name"] == practice_name(detail["practice"]) and detail["practice_name"]


def test_worklist_csv_has_the_practice_name_beside_the_code(api):
    rows = list(csv.DictReader(io.StringIO(api.get("/worklist.csv").text)))
    assert rows and all(r["practice_name"] == practice_name(r["practice"]) for r in rows)
    header = next(csv.reader(io.StringIO(api.get("/worklist.csv").text)))
    assert header[header.index("practice") + 1] == "practice_name"


def test_audit_json_names_practice_units(api):
    rows = api.get("/audit/measures", user="auditor", params={"unit_kind": "practice", "measure": "DM020"}).json()["rows"]
    assert {(r["unit"], r["unit_name"]) for r in rows} >= {("A81001", DENSHAM)}
    mdt = api.get("/audit/measures", user="auditor", params={"unit_kind": "mdt", "measure": "DM020"}).json()["rows"]
    assert mdt and all(r["unit_name"] == r["unit"] for r in mdt)  # an MDT is named as it is
    drill = api.get("/audit/measures/DM020/patients", params={"unit_kind": "area"}).json()["patients"]
    assert drill and all(p["practice_name"] == practice_name(p["practice"]) for p in drill)


def test_a_practice_is_found_by_its_name(api):
    by_code = api.get("/patients", params={"practice": "A81001"}).json()
    by_name = api.get("/patients", params={"practice": "densham"}).json()
    assert by_code["total"] > 0 and by_name == by_code
    assert AMINA in [p["nhs_number"] for p in by_name["items"]]
    assert api.get("/patients", params={"practice": "no such surgery"}).json()["total"] == 0
    tasks = api.get("/worklist", params={"practice": "queens park", "page_size": 500}).json()["items"]
    assert tasks and {t["practice"] for t in tasks} == {"A81002"}


def test_patients_page_offers_practices_by_name(api):
    """The filter is a list of the practices in the user's scope, by name (not a box for a code)."""
    c = TestClient(api.client.app, base_url="https://testserver")
    # a login of its own (mdt.member: central-1, practices A81001 and A81002); opening a session tidies the
    # user's old ones, so the bearer tokens the shared service cached are dropped and made again as needed
    api._tokens.clear()
    assert c.post("/auth/login", data={"username": "mdt.member",
                                       "password": "mdt.member" + DEMO_PASSWORD_SUFFIX}).status_code == 200
    html = c.get("/app/patients").text
    select = html[html.index('<select id="practice"'):]
    select = select[:select.index("</select>")]
    assert f">{DENSHAM} (A81001) (" in select and f">{QUEENS_PARK} (A81002) (" in select
    assert select.index(QUEENS_PARK) < select.index(DENSHAM)  # by name: Queens Park before The Densham Surgery
    page = c.get("/app/patients", params={"practice": "A81002"}).text
    assert 'value="A81002" selected' in page and "Hill" in page and "Begum" not in page
    api._tokens.clear()
