"""POST /ingest/bulk and GET /ingest/bulk/{id} (api/bulk_ingest.py) against the real app on SQLite and
PostgreSQL: NDJSON files in, a background run, its report per file, the changed patients evaluated
by the service's drain, the same files again already loaded, admins only."""
from __future__ import annotations

import time

from sqlmodel import Session, select

from engine.registry.outputs import PatientEvaluationRow
from engine.registry.tables import PatientRow
from tests.fhirbuild import ndjson_by_type
from tests.unit.test_bulk_ingest import NHS, small_export


def ndjson_parts(resources: list) -> list:
    return [("files", (f"{k}.ndjson", text.encode(), "application/x-ndjson")) for k, text in ndjson_by_type(resources).items()]


def wait_done(api, run_id: int, timeout: float = 60) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = api.get(f"/ingest/bulk/{run_id}", user="admin").json()
        if body["status"] != "running":
            return body
        time.sleep(0.1)
    raise AssertionError(f"bulk run {run_id} still running")


def test_bulk_ingest_through_the_api(fresh_api):
    api = fresh_api
    parts = ndjson_parts(small_export(3) + ["Observation:{\"resourceType\": \"Observation\", \"id\": \"x\"}"])
    r = api.post("/ingest/bulk", user="admin", files=parts)
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["state"] == "new" and r.headers["location"] == f"/ingest/bulk/{run['id']}"
    done = wait_done(api, run["id"])
    assert done["status"] == "done" and done["patients_done"] == 3 and done["lines_loaded"] == 12
    obs = next(f for f in done["files"] if f["name"] == "Observation.ndjson")
    assert obs["refused"] == 1 and obs["refusals"][0]["line"] == 4 and obs["refusals"][0]["resource"] == "Observation/x"
    assert api.state.drainer.wait(60)
    with Session(api.state.engines.read) as s:
        evaluated = set(s.exec(select(PatientRow.nhs_number).join(PatientEvaluationRow,
                                                                  PatientEvaluationRow.patient_id == PatientRow.id)))
    assert evaluated == set(NHS[:3])  # the background drain evaluated the loaded patients
    log = api.get("/access-log", user="admin", params={"resource": "ingest-bulk"}).json()["items"]
    assert any(set(NHS[:3]) <= set(e["patients"]) for e in log)

    again = api.post("/ingest/bulk", user="admin", files=parts)
    assert again.status_code == 200 and again.json()["state"] == "already-loaded" and again.json()["id"] == run["id"]


def test_bulk_ingest_refusals(fresh_api):
    api = fresh_api
    parts = ndjson_parts(small_export(1))
    assert api.post("/ingest/bulk", user="clinical.lead", files=parts).status_code == 403
    assert api.client.post("/ingest/bulk", files=parts).status_code == 401
    bad_name = [("files", ("../Patient.json", b"{}", "application/x-ndjson"))]
    assert api.post("/ingest/bulk", user="admin", files=bad_name).status_code == 422
    twice = parts[:1] + parts[:1]
    assert api.post("/ingest/bulk", user="admin", files=twice).status_code == 422
    assert api.get("/ingest/bulk/424242", user="admin").status_code == 404


def test_bulk_run_times_are_utc_instants(fresh_api):
    api = fresh_api
    run = api.post("/ingest/bulk", user="admin", files=ndjson_parts(small_export(1))).json()
    done = wait_done(api, run["id"])
    assert done["started_at"].endswith("Z") and done["finished_at"].endswith("Z")
