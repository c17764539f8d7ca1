"""Bulk NDJSON, gzipped and from a `$export` manifest (issue 17; engine/registry/bulk_sources.py), on
SQLite and PostgreSQL."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.bulk_ingest import NAME
from cli.main import app as cli
from engine.registry.bulk import BulkError, load_ndjson, ndjson_files
from engine.registry.tables import FactRow
from tests.fhirbuild import resource
from tests.unit.test_bulk_ingest import small_export, write_export


def gzip_files(folder: Path, *names: str) -> None:
    for name in names:
        plain = folder / name
        with open(plain, "rb") as src, gzip.open(folder / f"{name}.gz", "wb") as dst:
            dst.write(src.read())
        plain.unlink()


def facts(engine) -> list:
    with Session(engine) as s:
        return sorted((f.source_id, f.content_hash) for f in s.exec(select(FactRow)))


def test_gzipped_files_load_as_the_plain_ones_and_report_their_own_lines(engine, tmp_path, db_url):
    bad = [resource("Observation", "o-nobody", patient=None, code="sct|999791000000106", status="final",
                    effectiveDateTime="2026-06-01")]  # Observation.ndjson line 4
    folder = write_export(tmp_path / "export", small_export(3) + bad)
    gzip_files(folder, "Observation.ndjson", "Condition.ndjson")
    assert [p.name for p in ndjson_files(folder)] == ["Condition.ndjson.gz", "MedicationRequest.ndjson",
                                                      "Observation.ndjson.gz", "Patient.ndjson"]
    report = load_ndjson(engine, folder)
    assert report["status"] == "done" and report["facts_added"] == 9 and report["lines_loaded"] == 12
    files = {f["name"]: f for f in report["files"]}
    assert [(r["line"], r["outcome"]) for r in files["Observation.ndjson.gz"]["refusals"]] == [(4, "refused")]
    gz_facts = facts(engine)
    # the same export uncompressed, into a registry of its own: the same facts
    from engine.registry import db
    other = f"sqlite:///{tmp_path / 'plain.db'}"
    db.upgrade(other)
    plain_engine = db.make_engine(other)
    load_ndjson(plain_engine, write_export(tmp_path / "plain", small_export(3) + bad))
    assert facts(plain_engine) == gz_facts
    plain_engine.dispose()
    assert load_ndjson(engine, folder)["state"] == "already-loaded"  # the .gz files are the run's fingerprint


def test_a_damaged_gzip_file_stops_the_run_naming_it(engine, tmp_path):
    folder = write_export(tmp_path / "export", small_export(2))
    gzip_files(folder, "Condition.ndjson")
    data = (folder / "Condition.ndjson.gz").read_bytes()
    (folder / "Condition.ndjson.gz").write_bytes(data[: len(data) // 2])  # cut short
    with pytest.raises(BulkError, match="Condition.ndjson.gz: not a readable gzip file"):
        load_ndjson(engine, folder)


def manifest(folder: Path, outputs: list[dict]) -> Path:
    path = folder / "manifest.json"
    path.write_text(json.dumps({"transactionTime": "2027-01-10T02:00:00Z", "request": "https://ehr.example/$export",
                                "requiresAccessToken": True, "output": outputs, "error": []}))
    return path


def test_an_export_manifest_with_local_files(engine, tmp_path):
    folder = write_export(tmp_path / "export", small_export(3))
    gzip_files(folder, "Observation.ndjson")
    m = manifest(tmp_path, [{"type": "Patient", "url": (folder / "Patient.ndjson").as_uri()},
                            {"type": "Condition", "url": "export/Condition.ndjson"},           # relative to the manifest
                            {"type": "Observation", "url": (folder / "Observation.ndjson.gz").as_uri()},
                            {"type": "MedicationRequest", "url": f"file://localhost{folder / 'MedicationRequest.ndjson'}"}])
    assert sorted(p.name for p in ndjson_files(m)) == ["Condition.ndjson", "MedicationRequest.ndjson",
                                                       "Observation.ndjson.gz", "Patient.ndjson"]
    out = CliRunner().invoke(cli, ["ingest", "--ndjson", str(m), "--no-evaluate", "--database-url", str(engine.url.render_as_string(hide_password=False))])
    assert out.exit_code == 0, out.output
    assert len(facts(engine)) == 9


@pytest.mark.parametrize("outputs, message", [
    ([{"type": "Patient", "url": "https://ehr.example/files/Patient.ndjson"}], "remote URL; carepath reads local files only"),
    ([{"type": "Patient", "url": "file:///nowhere/Patient.ndjson"}], "no such file"),
    ([{"type": "Patient", "url": "file://otherhost/data/Patient.ndjson"}], "a file URL on another host"),
    ([{"type": "Patient", "url": "ftp://ehr.example/Patient.ndjson"}], "only file:// URLs or relative paths"),
    ([{"type": "Patient", "url": "export/Patient.csv"}], "expected an NDJSON file"),
    ([{"url": "export/Patient.ndjson"}], "expected {\"type\""),
    ([], "needs an `output` list"),
])
def test_a_manifest_the_load_cannot_use_is_refused_saying_why(tmp_path, outputs, message):
    write_export(tmp_path / "export", small_export(1))
    with pytest.raises(BulkError, match="output|manifest") as e:
        ndjson_files(manifest(tmp_path, outputs))
    assert message in str(e.value)


def test_the_api_takes_gzipped_file_names():
    assert NAME.match("Observation.ndjson.gz") and NAME.match("Patient.ndjson")
    assert not NAME.match("Patient.ndjson.zip") and not NAME.match("Patient.gz")
