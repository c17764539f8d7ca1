"""Bulk ingest of FHIR Bulk Data NDJSON (engine/registry/bulk.py, `carepath ingest --ndjson`), on
SQLite and PostgreSQL: grouped by patient, bad lines refused with their file and line number while
the rest loads, a re-run changes nothing, an interrupted run resumes from its checkpoint, only
patients whose facts changed are re-evaluated."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlmodel import Session, func, select
from typer.testing import CliRunner

from cli.main import app as cli
from engine.synthetic.demo import demo_records
from engine.app.service import drain
from engine.language.library import load_library
from engine.records.fhir.export import export_patient_bundle
from engine.registry import bulk
from engine.registry.bulk import BulkBusy, BulkInterrupted, BulkLoad, describe_files, load_ndjson, ndjson_files, run_report
from engine.registry.ingest import load_record
from engine.registry.outputs import PatientEvaluationRow, TaskRow
from engine.registry.pending import PendingEvaluationRow
from engine.registry.tables import FactRow, IngestBatch, PatientRow, PatientSourceId
from tests.api.support import copy_protocols
from tests.fhirbuild import ndjson_by_type, patient, qty, resource

AS_OF = dt.date(2026, 11, 23)
NHS = ["9434765919", "9434765870", "9000000009", "9990000018", "9990000026"]


def write_export(folder: Path, resources: list[dict | str]) -> Path:
    """NDJSON files as a $export writes them: one file per resource type, one resource per line
    (a str is written as it is: a bad line)."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, text in ndjson_by_type(resources).items():
        (folder / f"{kind}.ndjson").write_text(text, encoding="utf-8")
    return folder


def small_export(n: int = 5) -> list[dict]:
    """n patients, each with a diabetes diagnosis, an HbA1c and a medication, in type order."""
    out: list[dict] = [patient(f"p{i}", nhs=NHS[i], birth=f"19{50 + i}-01-01") for i in range(n)]
    out += [resource("Condition", f"c{i}", patient=f"p{i}", code="sct|44054006", onsetDateTime="2015-01-01",
                     clinicalStatus="http://terminology.hl7.org/CodeSystem/condition-clinical|active") for i in range(n)]
    out += [resource("Observation", f"o{i}", patient=f"p{i}", code="sct|999791000000106", status="final",
                     effectiveDateTime="2026-06-01", valueQuantity=qty(50 + i, "mmol/mol")) for i in range(n)]
    # Dapagliflozin 5mg / Metformin 1g tablets (VMP): NHSDRUG:SGLT2IDRUG_COD:3a85b29e (shared/reference/codes/pcd-2026-12)
    out += [resource("MedicationRequest", f"m{i}", patient=f"p{i}", status="active", intent="order",
                     medicationCodeableConcept="dmd|24054611000001100", authoredOn="2026-05-01") for i in range(n)]
    return out


def registry_state(engine) -> dict:
    with Session(engine) as s:
        return dict(patients=s.exec(select(func.count()).select_from(PatientRow)).one(),
                    facts=sorted((f.source_id, f.content_hash, str(f.ingested_at)) for f in s.exec(select(FactRow))),
                    tasks=sorted((t.key, t.status, str(t.raised_at)) for t in s.exec(select(TaskRow))))


@pytest.fixture
def library(tmp_path):
    return load_library([copy_protocols(tmp_path / "protocols")])


def test_loads_an_export_grouped_by_patient(engine, tmp_path):
    folder = write_export(tmp_path / "export", small_export(3))
    report = load_ndjson(engine, folder)
    assert report["state"] == "new" and report["status"] == "done"
    assert (report["patients_total"], report["patients_done"]) == (3, 3)
    assert (report["lines_total"], report["lines_loaded"], report["lines_refused"]) == (12, 12, 0)
    assert report["facts_added"] == 9
    with Session(engine) as s:
        rec = load_record(s, NHS[1])
        assert sorted(f.id for f in rec.facts) == ["Condition/c1", "MedicationRequest/m1", "Observation/o1"]
        assert next(f for f in rec.facts if f.id == "Observation/o1").value == 51
        # the export's patient id is kept, so a later export can refer to the patient by it
        link = s.exec(select(PatientSourceId).where(PatientSourceId.source_id == "p1")).one()
        assert s.get(PatientRow, link.patient_id).nhs_number == NHS[1] and link.source_system == "fhir"
        pending = s.exec(select(func.count()).select_from(PendingEvaluationRow)).one()
    assert pending == 3  # stored and marked for evaluation in the same transactions


def test_bad_lines_are_refused_with_their_line_numbers_and_the_rest_loads(engine, tmp_path):
    good = small_export(3)
    bad = [
        "Condition:{not json",                                                                  # Condition.ndjson line 4
        resource("Condition", "c-bad-date", patient="p0", code="sct|44054006", onsetDateTime="2015-13-45"),  # line 5
        resource("Observation", "o-nobody", patient=None, code="sct|999791000000106", status="final",
                 effectiveDateTime="2026-06-01"),                                               # Observation line 4
        resource("Observation", "o-stranger", patient="p-unknown", code="sct|999791000000106", status="final",
                 effectiveDateTime="2026-06-01", valueQuantity=qty(70, "mmol/mol")),             # Observation line 5
        resource("Observation", "o-nodate", patient="p1", code="sct|999791000000106", status="final"),  # line 6: skipped
        {"resourceType": "Practitioner", "id": "dr1"},                                        # not imported
        "Patient:{\"resourceType\": \"Patient\", \"gender\": \"male\"}",                      # Patient line 4: no id
    ]
    folder = write_export(tmp_path / "export", good + bad)
    report = load_ndjson(engine, folder)
    assert report["status"] == "done" and report["patients_done"] == report["patients_total"] == 4  # p-unknown too
    files = {f["name"]: f for f in report["files"]}
    cond = {r["line"]: r for r in files["Condition.ndjson"]["refusals"]}
    assert set(cond) == {4, 5}
    assert cond[4]["outcome"] == "refused" and "not valid JSON" in cond[4]["reason"]
    assert cond[5]["resource"] == "Condition/c-bad-date" and "onsetDateTime" in cond[5]["reason"]
    obs = {r["line"]: r for r in files["Observation.ndjson"]["refusals"]}
    assert set(obs) == {4, 5, 6}
    assert "no subject reference" in obs[4]["reason"]
    assert obs[5]["resource"] == "Observation/o-stranger" and "Patient/p-unknown" in obs[5]["reason"]
    assert obs[6]["outcome"] == "skipped" and obs[6]["resource"] == "Observation/o-nodate"
    assert [r["line"] for r in files["Patient.ndjson"]["refusals"]] == [4]
    assert files["Practitioner.ndjson"]["unsupported"] == 1
    assert (report["lines_refused"], report["lines_skipped"], report["lines_unsupported"]) == (5, 1, 1)
    assert report["lines_loaded"] == 12 and report["lines_total"] == 19
    with Session(engine) as s:
        rec = load_record(s, NHS[0])  # the patient whose bad Condition was refused still has the rest
        assert sorted(f.id for f in rec.facts) == ["Condition/c0", "MedicationRequest/m0", "Observation/o0"]
        assert s.exec(select(func.count()).select_from(PatientRow)).one() == 3


def test_a_refused_patient_refuses_its_lines(engine, tmp_path):
    resources = small_export(2) + [patient("p9", nhs="9434765918", birth="1960-01-01"),  # wrong check digit
                                   resource("Condition", "c9", patient="p9", code="sct|44054006", onsetDateTime="2015-01-01")]
    report = load_ndjson(engine, write_export(tmp_path / "export", resources))
    files = {f["name"]: f for f in report["files"]}
    p = files["Patient.ndjson"]["refusals"]
    assert [(r["line"], r["resource"]) for r in p] == [(3, "Patient/p9")] and "NHS number" in p[0]["reason"]
    c = files["Condition.ndjson"]["refusals"]
    assert [r["line"] for r in c] == [3] and "Patient.ndjson line 3" in c[0]["reason"]
    assert report["patients_done"] == 3 and report["lines_loaded"] == 8


def test_running_the_same_files_again_changes_nothing(engine, tmp_path, library):
    folder = write_export(tmp_path / "export", small_export(4))
    load_ndjson(engine, folder)
    drain(engine, library, lambda: dt.datetime.combine(AS_OF, dt.time(9)))
    before = registry_state(engine)
    with Session(engine) as s:
        batches = s.exec(select(func.count()).select_from(IngestBatch)).one()
    again = load_ndjson(engine, folder)
    assert again["state"] == "already-loaded" and again["id"] is not None
    forced = load_ndjson(engine, folder, force=True)
    assert forced["state"] == "new" and forced["id"] != again["id"]
    assert (forced["facts_added"], forced["facts_updated"], forced["facts_unchanged"]) == (0, 0, 12)
    assert registry_state(engine) == before
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(PendingEvaluationRow)).one() == 0  # nobody to re-evaluate
        assert s.exec(select(func.count()).select_from(IngestBatch)).one() == batches + 1


def test_an_interrupted_load_resumes_from_its_checkpoint(engine, tmp_path):
    folder = write_export(tmp_path / "export", small_export(5) + ["Condition:not json at all"])
    files = describe_files(ndjson_files(folder))

    def stop_after_13_lines(n: int) -> None:
        if n >= 13:  # patients p0..p3 read (4 lines each): p0, p1 stored, p2, p3 in the unstored chunk
            raise BulkInterrupted()

    with pytest.raises(BulkInterrupted):
        BulkLoad(engine, files, chunk=2, on_line=stop_after_13_lines).run()
    with Session(engine) as s:
        stored = sorted(s.exec(select(PatientRow.nhs_number)))
    assert stored == sorted(NHS[:2])  # the first chunk committed, the second never was
    with Session(engine) as s:
        (run_id,) = s.exec(select(bulk.BulkRunRow.id)).all()
    run = run_report(engine, run_id)
    assert run["status"] == "interrupted" and run["checkpoint"] == "p1" and run["patients_done"] == 2

    resumed = BulkLoad(engine, describe_files(ndjson_files(folder)), chunk=2).run()
    assert resumed["state"] == "resumed" and resumed["id"] == run["id"] and resumed["resumed"] == 1
    assert resumed["status"] == "done" and resumed["patients_done"] == 5
    assert resumed["lines_loaded"] == 20 and resumed["lines_refused"] == 1  # each line counted once
    assert resumed["facts_added"] == 15 and resumed["facts_unchanged"] == 0

    clean_db = tmp_path / "clean.db"
    from engine.registry import db
    db.upgrade(f"sqlite:///{clean_db}")
    clean = db.make_engine(f"sqlite:///{clean_db}")
    try:
        load_ndjson(clean, folder, chunk=2)
        assert [_content(clean)] == [_content(engine)]  # the same registry as an uninterrupted load
    finally:
        clean.dispose()


def _content(engine) -> list:
    with Session(engine) as s:
        return sorted((p.nhs_number, f.source_id, f.content_hash) for f, p in
                      s.exec(select(FactRow, PatientRow).join(PatientRow, PatientRow.id == FactRow.patient_id)))


def test_a_run_being_loaded_by_a_live_process_is_not_taken_over(engine, tmp_path):
    folder = write_export(tmp_path / "export", small_export(1))
    files = describe_files(ndjson_files(folder))
    live = bulk.claim(engine, files, "fhir")  # this process, still loading
    try:
        with pytest.raises(BulkBusy):
            BulkLoad(engine, files).run()
    finally:
        bulk.release(live)
    report = BulkLoad(engine, files).run()  # its owner stopped without finishing: resumed
    assert report["state"] == "resumed" and report["status"] == "done"


def test_an_incremental_export_refers_to_patients_of_earlier_ones(engine, tmp_path):
    load_ndjson(engine, write_export(tmp_path / "day1", small_export(2)))
    day2 = [resource("Observation", "o1-new", patient="p1", code="sct|999791000000106", status="final",
                     effectiveDateTime="2026-10-01", valueQuantity=qty(48, "mmol/mol")),
            resource("Observation", "o7", patient="p7", code="sct|999791000000106", status="final",
                     effectiveDateTime="2026-10-01", valueQuantity=qty(48, "mmol/mol"))]
    report = load_ndjson(engine, write_export(tmp_path / "day2", day2))
    (obs,) = report["files"]
    assert report["lines_loaded"] == 1 and [r["line"] for r in obs["refusals"]] == [2]
    assert "Patient/p7" in obs["refusals"][0]["reason"]
    with Session(engine) as s:
        rec = load_record(s, NHS[1])
        assert "Observation/o1-new" in {f.id for f in rec.facts}
        assert rec.patient.birth_date == dt.date(1951, 1, 1)  # demographics untouched
        queued = {s.get(PatientRow, m.patient_id).nhs_number for m in s.exec(select(PendingEvaluationRow))}
    assert NHS[1] in queued


def test_only_patients_whose_facts_changed_are_re_evaluated(engine, tmp_path, library):
    """Day 1: the demo patients' records as a $export; evaluated. Day 2: the same export with one
    patient's HbA1c changed: only that patient is marked and evaluated."""
    records = demo_records(AS_OF)
    resources = [e["resource"] for r in records for e in export_patient_bundle(r)["entry"]]
    folder = write_export(tmp_path / "day1", resources)
    clock = lambda: dt.datetime.combine(AS_OF, dt.time(9))  # noqa: E731
    load_ndjson(engine, folder)
    first = drain(engine, library, clock)
    assert len(first.evaluated) == len(records) and not first.problems
    amina = records[0].patient.nhs_number
    i = next(i for i, r in enumerate(resources)
             if r["resourceType"] == "Observation" and r["subject"]["reference"].endswith(amina)
             and any(c["code"] == "999791000000106" for c in r["code"]["coding"]) and "valueQuantity" in r)
    resources[i] = {**resources[i], "valueQuantity": {**resources[i]["valueQuantity"],
                                                      "value": resources[i]["valueQuantity"]["value"] - 20}}
    report = load_ndjson(engine, write_export(tmp_path / "day2", resources))
    assert report["facts_updated"] == 1 and report["facts_added"] == 0
    second = drain(engine, library, clock)
    assert set(second.evaluated) == {amina}
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(PatientEvaluationRow)).one() > 0


def test_cli_ingest_ndjson(db_url, tmp_path):
    folder = write_export(tmp_path / "export", small_export(3) + ["Observation:{\"resourceType\": 1}"])
    protocols = copy_protocols(tmp_path / "protocols")
    args = ["ingest", "--ndjson", str(folder), "--database-url", db_url, "--protocols", str(protocols),
            "--as-of", AS_OF.isoformat()]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 1, first.output  # a line was refused: reported, the rest loaded
    assert "3 of 3 patients" in first.output and "12 loaded, 1 refused" in first.output
    assert "Observation.ndjson:4: refused" in first.output and "not a FHIR resource" in first.output
    assert "3 evaluated" in first.output
    again = CliRunner().invoke(cli, args)
    assert "already loaded" in again.output
    assert CliRunner().invoke(cli, ["ingest", "--database-url", db_url]).exit_code == 2  # neither files nor --ndjson


KILLED_LOAD = """
import os, signal, sys
from pathlib import Path
from engine.registry import db
from engine.registry.bulk import BulkLoad, describe_files, ndjson_files

def kill_after(n):
    if n >= int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup at all, as a crash or the OOM killer

engine = db.make_engine(sys.argv[1])
BulkLoad(engine, describe_files(ndjson_files(Path(sys.argv[2]))), chunk=2, on_line=kill_after).run()
"""


def test_a_killed_process_leaves_a_run_that_resumes(tmp_path):
    """A real SIGKILL in another process part way through: the run is left 'running' with a dead
    owner; the same files again resume it and the registry equals an uninterrupted load."""
    import os
    import subprocess
    import sys

    from engine.registry import db

    url = f"sqlite:///{tmp_path / 'reg.db'}"
    db.upgrade(url)
    folder = write_export(tmp_path / "export", small_export(5))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", KILLED_LOAD, url, str(folder), "13"], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            (row,) = s.exec(select(bulk.BulkRunRow)).all()
            assert row.status == "running" and row.checkpoint == "p1"
        assert run_report(engine, row.id)["status"] == "interrupted"
        resumed = load_ndjson(engine, folder, chunk=2)
        assert resumed["state"] == "resumed" and resumed["status"] == "done"
        assert resumed["patients_done"] == 5 and resumed["lines_loaded"] == 20 and resumed["facts_added"] == 15
    finally:
        engine.dispose()


def test_a_run_that_finishes_while_its_report_is_read_is_not_called_interrupted(engine, tmp_path, monkeypatch):
    # The loader commits "done" and then lets go of the run; a report that read "running" before the
    # commit and asked whether the owner is alive after the release must not answer "interrupted".
    folder = write_export(tmp_path / "export", small_export(2))
    done = BulkLoad(engine, describe_files(ndjson_files(folder))).run()
    table = bulk.BulkRunRow.__table__
    with engine.begin() as c:
        c.execute(table.update().where(table.c.id == done["id"]).values(status="running"))

    def finishes_meanwhile(owner, updated_at, now=None):
        with engine.begin() as c:
            c.execute(table.update().where(table.c.id == done["id"]).values(status="done"))
        return False  # released after the commit

    monkeypatch.setattr(bulk, "owner_alive", finishes_meanwhile)
    assert run_report(engine, done["id"])["status"] == "done"
