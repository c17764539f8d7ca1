"""Issue 14 item 5: CSV exports neutralise spreadsheet formulas (OWASP "CSV injection"), and the
worklist CSV is written by one writer (engine/reports/csv_export.py) for the API and the web page."""
from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from fastapi.testclient import TestClient

from engine.app.users import DEMO_PASSWORD_SUFFIX
from engine.records.model import Fact, Patient, PatientRecord
from engine.reports.csv_export import csv_text, neutralise

DATABASES = ["sqlite"]  # the CSV writer's text: no database behaviour (tests/conftest.py)

SCT = "http://snomed.info/sct"
T2DM = "44054006"
HYPERLINK = '=HYPERLINK("http://x","y")'
SUM = "+SUM(A1)"
EVIL = {"9000000017": HYPERLINK, "9000000025": SUM}


def _record(nhs: str, given: str) -> PatientRecord:
    return PatientRecord(
        patient=Patient(nhs_number=nhs, birth_date=dt.date(1960, 1, 1), sex="female", practice="A81001", locality="central",
                        mdt="central-1", given_name=given, family_name="@Evans"),
        facts=[Fact(id=f"dx-{nhs}", kind="condition", codes=[{"system": SCT, "code": T2DM}],
                    start=dt.date.today() - dt.timedelta(days=800), source_system="gp-system")])


@pytest.fixture
def evil_api(seeded_api):
    records = [_record(n, g).model_dump(mode="json") for n, g in EVIL.items()]
    r = seeded_api.post("/ingest/records", user="admin", json={"source": "probe", "records": records})
    assert r.status_code == 200, r.text
    return seeded_api


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _check(rows: list[dict]) -> None:
    evil = [r for r in rows if r["nhs_number"] in EVIL]
    assert evil, "the probe patients' tasks are in the export"
    for r in evil:
        assert r["patient"] == "'" + EVIL[r["nhs_number"]] + " @Evans"
    for r in rows:
        for col, value in r.items():
            assert not value or value[0] not in "=+-@\t\r", (col, value)


def test_api_worklist_csv_neutralises_formulas(evil_api):
    r = evil_api.get("/worklist.csv", user="practice.staff")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    _check(_rows(r.text))


def test_web_worklist_csv_neutralises_formulas(evil_api):
    c = TestClient(evil_api.client.app, base_url="https://testserver")  # the session cookie is Secure
    assert c.post("/auth/login", data={"username": "practice.staff",
                                       "password": "practice.staff" + DEMO_PASSWORD_SUFFIX}).status_code == 200
    r = c.get("/app/worklist.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    _check(_rows(r.text))
    api_rows = _rows(evil_api.get("/worklist.csv", user="practice.staff").text)
    assert _rows(r.text) == api_rows  # one writer: the same bytes either way (default sort)


def test_one_csv_writer():
    import api.routers.worklists as wl
    import api.web.worklist as web
    from pathlib import Path
    for mod in (wl, web):
        src = Path(mod.__file__).read_text()
        assert "\nimport csv\n" not in src and "csv.writer" not in src, mod.__name__


@pytest.mark.parametrize("value,expected", [
    ("=1+1", "'=1+1"), ("+SUM(A1)", "'+SUM(A1)"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("\uff1d1+1", "'\uff1d1+1"),  # full-width equals sign: some spreadsheets treat it as '='
    ("plain", "plain"), ("", ""), ("a=b", "a=b"), (None, ""),
    (-5, -5), (3.5, 3.5), (12, 12),  # numbers from numeric columns stay numbers
])
def test_neutralise(value, expected):
    assert neutralise(value) == expected


def test_csv_text_quotes_and_neutralises():
    text = csv_text(["a", "b"], [[1, '=cmd|" /C calc"!A0'], [-1, "ok, fine"]])
    assert text.splitlines() == ["a,b", '1,"\'=cmd|"" /C calc""!A0"', '-1,"ok, fine"']
