"""Issue 14 item 4: nobody learns more about a patient than their role allows.

- Auditors filter the access log by pseudonym only: an NHS-number filter from an auditor is refused
  (403, logged, and the refusal itself names no patient), and no row an auditor sees carries an NHS
  number, a name, or a pseudonym tied to a number the auditor typed in.
- Whether an NHS number is registered is not revealed by a per-patient endpoint: a patient who does
  not exist and one outside the caller's scope get the same status and the same body (404), in the
  API, FHIR, tasks by id and the web pages. A role without the permission still gets 403.
"""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from engine.app.users import DEMO_PASSWORD_SUFFIX
from tests.api.support import AMINA, FRANK

ABSENT = "9000000033"  # a valid NHS number that is not in the registry


# ---- the access log as seen by an auditor ------------------------------------------------------------
def test_auditor_may_not_filter_the_access_log_by_nhs_number(seeded_api):
    seeded_api.get(f"/patients/{AMINA}/care-plan", user="practice.staff")
    r = seeded_api.get("/access-log", user="auditor", params={"nhs_number": AMINA})
    assert r.status_code == 403
    assert "pseudonym" in r.json()["detail"]
    # the refusal is logged, without the number (it would hand the auditor its pseudonym)
    denied = seeded_api.get("/access-log", user="admin", params={"username": "auditor", "action": "denied"}).json()["items"]
    assert denied and denied[0]["resource"] == "accesslog:nhs-filter" and denied[0]["patients"] == []
    assert AMINA not in json.dumps(denied[0])
    # admins keep the NHS-number filter
    rows = seeded_api.get("/access-log", user="admin", params={"nhs_number": AMINA}).json()["items"]
    assert rows and all(AMINA in r["patients"] for r in rows)


def test_auditor_filters_the_access_log_by_pseudonym(seeded_api):
    seeded_api.get(f"/patients/{AMINA}/care-plan", user="practice.staff")
    seeded_api.get(f"/patients/{FRANK}/care-plan", user="mdt.other")
    pseudo = seeded_api.state.pseudonymise(AMINA)
    page = seeded_api.get("/access-log", user="auditor", params={"pseudonym": pseudo}).json()
    assert page["total"] >= 2  # the ingest and the read at least
    assert all(pseudo in r["patients"] for r in page["items"])
    assert "care-plan" in {r["resource"] for r in page["items"]}
    assert not [r for r in page["items"] if r["username"] == "mdt.other"]  # Frank's read is not Amina's
    assert seeded_api.get("/access-log", user="auditor", params={"pseudonym": "9434765919"}).status_code == 422


def test_auditor_rows_carry_no_nhs_number_name_or_typed_in_pseudonym(seeded_api):
    # An auditor tries to tie an NHS number they know to its pseudonym through their own refused requests:
    # the paths of those requests are in the log they can read.
    for path in (f"/patients/{AMINA}/care-plan", f"/patients/{AMINA}", f"/app/patients/{AMINA}"):
        seeded_api.get(path, user="auditor")
    seeded_api.client.post("/auth/token", data={"username": AMINA, "password": "x" * 12})  # a "username" that is a number
    dashed = AMINA[:3] + "-" + AMINA[3:6] + "-" + AMINA[6:]
    assert seeded_api.post("/users", user="admin", json={"username": dashed, "password": "plum-Orbit-kettle-93",
                                                         "role": "practice-staff"}).status_code == 201  # an account named like one
    seeded_api.client.post("/auth/token", data={"username": dashed, "password": "x" * 12})
    seeded_api.get(f"/patients/{AMINA}/care-plan", user="practice.staff")  # legitimate read: pseudonym in `patients`
    body = seeded_api.get("/access-log", user="auditor", params={"limit": 1000}).json()
    text = json.dumps(body)
    assert AMINA not in text and dashed not in text
    for word in ("Amina", "Begum"):
        assert word not in text
    pseudo = seeded_api.state.pseudonymise(AMINA)
    for r in body["items"]:
        if r["username"] == "auditor" or r["action"] == "login":
            assert pseudo not in json.dumps(r), r  # the auditor's own requests never show the pseudonym
    assert any(pseudo in r["patients"] for r in body["items"] if r["username"] == "practice.staff")


# ---- absent and out of scope look the same -------------------------------------------------------------
PER_PATIENT = [
    ("GET", "/patients/{nhs}", {}),
    ("GET", "/patients/{nhs}/care-plan", {}),
    ("GET", "/patients/{nhs}/care-plan/plain", {}),
    ("GET", "/patients/{nhs}/tasks", {}),
    ("GET", "/patients/{nhs}/flags", {}),
    ("POST", "/patients/{nhs}/reevaluate", {}),
    ("GET", "/fhir/CarePlan?patient={nhs}", {}),
    ("GET", "/fhir/Task?patient={nhs}", {}),
    ("GET", "/fhir/Flag?patient={nhs}", {}),
    ("GET", "/fhir/MeasureReport?patient={nhs}", {}),
]


@pytest.mark.parametrize("method,path,kw", PER_PATIENT, ids=[f"{m} {p}" for m, p, _ in PER_PATIENT])
@pytest.mark.parametrize("user", ["mdt.other", "practice.other", "staff.noscope"])
def test_absent_and_out_of_scope_patients_look_the_same(api, user, method, path, kw):
    out_of_scope = api.client.request(method, path.replace("{nhs}", AMINA), headers=api.h(user), **kw)
    absent = api.client.request(method, path.replace("{nhs}", ABSENT), headers=api.h(user), **kw)
    assert out_of_scope.status_code == absent.status_code == 404
    assert out_of_scope.json() == absent.json() == {"detail": "no patient with that NHS number in your scope"}


def test_out_of_scope_refusals_are_still_logged(api):
    api.get(f"/patients/{AMINA}", user="practice.other")
    rows = api.get("/access-log", user="admin", params={"username": "practice.other", "action": "denied"}).json()["items"]
    assert rows[0]["patients"] == [AMINA] and rows[0]["status"] == 404
    assert rows[0]["detail"]["reason"] == "patient outside the user's scope"


def test_mdt_outcome_for_absent_or_out_of_scope_patient_look_the_same(api):
    def post(nhs):
        return api.post("/mdts/central-2/outcomes", user="mdt.other",
                        json={"nhs_number": nhs, "meeting_date": "2026-01-01", "outcome": "x"})
    a, b = post(AMINA), post(ABSENT)
    assert a.status_code == b.status_code == 404 and a.json() == b.json()


@pytest.fixture(scope="module")
def amina_task_id(api):
    r = api.get("/worklist", params={"nhs_number": AMINA, "page_size": 500})
    return r.json()["items"][0]["id"]


@pytest.mark.parametrize("method,path,kw", [
    ("GET", "/tasks/{id}", {}), ("POST", "/tasks/{id}/accept", {}), ("POST", "/tasks/{id}/complete", {"json": {"outcome": "done"}}),
    ("POST", "/tasks/{id}/decline", {"json": {"reason": "probe"}}), ("POST", "/tasks/{id}/reopen", {}),
    ("POST", "/tasks/{id}/reassign", {"json": {"role": "gp"}}), ("GET", "/fhir/Task/{id}", {}),
])
def test_absent_and_out_of_scope_tasks_look_the_same(api, amina_task_id, method, path, kw):
    h = api.h("practice.other")
    out_of_scope = api.client.request(method, path.replace("{id}", str(amina_task_id)), headers=h, **kw)
    absent = api.client.request(method, path.replace("{id}", "2000000000"), headers=h, **kw)
    assert out_of_scope.status_code == absent.status_code == 404
    assert out_of_scope.json() == absent.json() == {"detail": "no task with that id in your scope"}


def test_a_role_without_the_permission_still_gets_403(api):
    for user in ("auditor", "admin"):
        assert api.get(f"/patients/{AMINA}", user=user).status_code == 403
        assert api.get(f"/patients/{ABSENT}", user=user).status_code == 403


def _web(api, username: str) -> TestClient:
    c = TestClient(api.client.app, base_url="https://testserver")  # the session cookie is Secure
    r = c.post("/auth/login", data={"username": username, "password": username + DEMO_PASSWORD_SUFFIX})
    assert r.status_code == 200, r.text
    return c


@pytest.mark.parametrize("path", ["/app/patients/{nhs}", "/app/patients/{nhs}/plan"])
def test_web_pages_show_the_same_page_for_absent_and_out_of_scope(api, path):
    c = _web(api, "practice.other")
    a = c.get(path.replace("{nhs}", AMINA))
    b = c.get(path.replace("{nhs}", ABSENT))
    assert a.status_code == b.status_code == 404
    assert "no patient with that NHS number in your scope" in a.text
    assert a.text.replace(AMINA, ABSENT) == b.text.replace(AMINA, ABSENT)  # the page may echo its own URL only
