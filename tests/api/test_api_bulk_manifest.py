"""POST /ingest/bulk/manifest (api/bulk_ingest.py): a FHIR Bulk Data `$export` completion manifest whose
`output` files the service reads from CAREPATH_BULK_IMPORT_DIR, and nowhere else (no web fetch, no
path out of the folder, no symbolic link out, no device or FIFO). The load itself is the one
POST /ingest/bulk and `carepath ingest --ndjson` run (tested on both databases there), so these tests
use one SQLite service."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine.registry.bulk import BulkInterrupted, BulkRunRow, BulkLoad, describe_files, ndjson_files
from engine.registry.tables import PatientRow
from tests.api.support import close_api, copy_protocols, make_api
from tests.api.test_api_bulk_ingest import wait_done
from tests.fhirbuild import resource
from tests.unit.test_bulk_gzip_manifest import gzip_files
from tests.unit.test_bulk_ingest import NHS, small_export, write_export


@pytest.fixture(scope="module")
def sqlite_api(tmp_path_factory):
    base = tmp_path_factory.mktemp("manifest-api")
    a = make_api(f"sqlite:///{base / 'carepath.db'}", copy_protocols(base / "protocols"), seed=False)
    yield a
    close_api(a)


@pytest.fixture
def import_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "exports"
    root.mkdir()
    monkeypatch.setenv("CAREPATH_BULK_IMPORT_DIR", str(root))
    return root


def manifest(outputs: list[dict]) -> dict:
    return {"transactionTime": "2027-01-10T02:00:00Z", "request": "https://ehr.example/fhir/$export",
            "requiresAccessToken": True, "output": outputs, "error": []}


def post(api, body, user: str = "admin", **params):
    return api.client.post("/ingest/bulk/manifest", params=params, content=json.dumps(body),  # ASCII: escapes kept
                           headers={**api.h(user), "content-type": "application/json"})


def test_a_manifest_of_files_in_the_import_folder_loads_them_and_reports_refused_lines(sqlite_api, import_dir):
    api = sqlite_api
    bad = [resource("Observation", "o-nobody", patient=None, code="sct|999791000000106", status="final",
                    effectiveDateTime="2026-06-01")]  # Observation.ndjson line 4: belongs to nobody
    folder = write_export(import_dir / "2027-01-10", small_export(3) + bad)
    gzip_files(folder, "Observation.ndjson")
    body = manifest([{"type": "Patient", "url": (folder / "Patient.ndjson").as_uri()},
                     {"type": "Condition", "url": "2027-01-10/Condition.ndjson"},  # relative to the import folder
                     {"type": "Observation", "url": (folder / "Observation.ndjson.gz").as_uri()},
                     {"type": "MedicationRequest", "url": f"file://localhost{folder / 'MedicationRequest.ndjson'}"}])
    r = post(api, body, source_system="gp-extract")
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["state"] == "new" and r.headers["location"] == f"/ingest/bulk/{run['id']}"
    done = wait_done(api, run["id"])
    assert done["status"] == "done" and done["patients_done"] == 3 and done["lines_loaded"] == 12
    obs = next(f for f in done["files"] if f["name"] == "Observation.ndjson.gz")
    assert [(x["line"], x["outcome"], x["resource"]) for x in obs["refusals"]] == [(4, "refused", "Observation/o-nobody")]
    assert "no subject reference to a Patient" in obs["refusals"][0]["reason"]
    with Session(api.state.engines.read) as s:
        assert set(NHS[:3]) <= set(s.exec(select(PatientRow.nhs_number)))
    assert sorted(os.listdir(folder)) == ["Condition.ndjson", "MedicationRequest.ndjson", "Observation.ndjson.gz",
                                          "Patient.ndjson"]  # the export is read in place, never removed
    log = api.get("/access-log", user="admin", params={"resource": "ingest-bulk"}).json()["items"]
    assert any(e["detail"].get("manifest") and e["detail"].get("run") == run["id"] for e in log)

    again = post(api, body, source_system="gp-extract")  # the same files: already loaded, nothing read
    assert again.status_code == 200 and again.json()["state"] == "already-loaded" and again.json()["id"] == run["id"]


def test_an_interrupted_run_resumes_when_its_manifest_is_posted_again(sqlite_api, import_dir):
    api = sqlite_api
    two = [r for r in small_export(5) if r["id"][-1] in "34"]  # p3, p4: not in the first test's export
    folder = write_export(import_dir / "nightly", two)
    files = describe_files(ndjson_files(folder))

    def stop(n: int) -> None:
        if n >= 6:
            raise BulkInterrupted()  # as a kill would: the run stays "running" with no live owner

    with pytest.raises(BulkInterrupted):
        BulkLoad(api.state.engines.write, files, source_system="nightly", chunk=1, on_line=stop).run()
    body = manifest([{"type": p.name.split(".")[0], "url": p.as_uri()} for p in ndjson_files(folder)])
    r = post(api, body, source_system="nightly")
    assert r.status_code == 202 and r.json()["state"] == "resumed", r.text
    done = wait_done(api, r.json()["id"])
    assert done["status"] == "done" and done["resumed"] == 1 and done["patients_done"] == 2, done


def test_what_the_service_will_not_read(sqlite_api, import_dir, tmp_path):
    api = sqlite_api
    write_export(import_dir / "ok", small_export(1))
    outside = write_export(tmp_path / "elsewhere", small_export(1))
    (import_dir / "link").symlink_to(outside, target_is_directory=True)
    (import_dir / "escape.ndjson").symlink_to(outside / "Patient.ndjson")
    os.mkfifo(import_dir / "pipe.ndjson")

    def refused(url: str, status: int = 422) -> str:
        r = post(api, manifest([{"type": "Patient", "url": url}]), source_system="refusals")
        assert r.status_code == status, (url, r.status_code, r.text)
        return r.json()["detail"]

    assert "remote URL" in refused("https://ehr.example/files/Patient.ndjson")
    assert "remote URL" in refused("http://169.254.169.254/latest/Patient.ndjson")
    assert "another host" in refused("file://fileserver/exports/Patient.ndjson")
    assert "only file:// URLs" in refused("ftp://ehr.example/Patient.ndjson")
    not_inside = "not inside the folder this service reads $export files from"
    assert not_inside in refused((outside / "Patient.ndjson").as_uri())                  # exists, outside
    assert not_inside in refused((tmp_path / "nothing-here" / "Patient.ndjson").as_uri())  # absent, outside: same answer
    assert not_inside in refused("../elsewhere/Patient.ndjson")
    assert not_inside in refused("ok/../../elsewhere/Patient.ndjson")
    assert not_inside in refused("link/Patient.ndjson")      # a folder link out of the import folder
    assert not_inside in refused("escape.ndjson")            # a file link out of it
    assert "expected an NDJSON file" in refused("file:///etc/passwd")
    assert "not a regular file" in refused("pipe.ndjson")
    assert "no such file" in refused("ok/Missing.ndjson")
    assert "not a file name" in refused("ok/Patient%00.ndjson")
    assert "not valid text" in refused("ok/Patient\ud800.ndjson")  # a lone surrogate: no file name, nor UTF-8
    assert "needs an `output` list" in post(api, {"output": []}, source_system="refusals").json()["detail"]
    too_many = manifest([{"type": "Patient", "url": f"x{i}.ndjson"} for i in range(201)])
    assert "at most 200 files" in post(api, too_many, source_system="refusals").json()["detail"]
    with Session(api.state.engines.read) as s:  # nothing was claimed for any of them
        assert s.exec(select(BulkRunRow).where(BulkRunRow.source_system == "refusals")).all() == []


def test_manifest_requests_the_service_refuses_before_reading_files(sqlite_api, import_dir, monkeypatch):
    api = sqlite_api
    folder = write_export(import_dir / "x", small_export(1))
    body = manifest([{"type": "Patient", "url": (folder / "Patient.ndjson").as_uri()}])
    assert api.client.post("/ingest/bulk/manifest", json=body).status_code == 401
    assert post(api, body, user="clinical.lead").status_code == 403
    h = api.h("admin")
    assert api.client.post("/ingest/bulk/manifest", headers=h | {"content-type": "text/plain"},
                           content=json.dumps(body)).status_code == 415
    assert api.client.post("/ingest/bulk/manifest", headers=h | {"content-type": "application/json"},
                           content=b"{not json").status_code == 422
    big = json.dumps(manifest([{"type": "Patient", "url": "x" * 2_000_000 + ".ndjson"}]))  # over the 1 MiB body limit
    assert api.client.post("/ingest/bulk/manifest", headers=h | {"content-type": "application/json"},
                           content=big).status_code == 413
    monkeypatch.delenv("CAREPATH_BULK_IMPORT_DIR")
    off = post(api, body)
    assert off.status_code == 409 and "CAREPATH_BULK_IMPORT_DIR" in off.json()["detail"]
