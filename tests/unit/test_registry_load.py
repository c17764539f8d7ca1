"""The benchmark bulk loader stores exactly what ingest_records stores (SQLite and PostgreSQL:
`db_url`, tests/conftest.py)."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text
from sqlmodel import Session

import engine.synthetic.generate as generate_module
import engine.registry.ingest as ingest
from engine.app import registry_load
from engine.synthetic.generate import generate
from engine.registry import db
from engine.registry.ingest import ingest_records, load_record

N, SEED, AS_OF = 120, 3, dt.date(2026, 11, 20)  # 3 blocks of the loader (BLOCK below)
NOW = dt.datetime(2026, 11, 20, 9, 30)

FACT_COLUMNS = ('source_system, source_id, kind, start, "end", value, unit, status, care_setting, exception_type, '
                'CAST(codes AS TEXT), CAST(value_codes AS TEXT), CAST(attrs AS TEXT), content_hash, ingested_at')
PATIENT_COLUMNS = ("nhs_number, birth_date, sex, practice, locality, mdt, death_date, registered_on, given_name, family_name, "
                   "created_at, updated_at")


def snapshot(engine, nhs_numbers) -> dict:
    """Everything stored, as read back by the registry and as raw column text (ids left out)."""
    with Session(engine) as s:
        records = {n: load_record(s, n) for n in nhs_numbers}
    with engine.connect() as c:
        facts = c.execute(text(f"SELECT p.nhs_number, {FACT_COLUMNS} FROM fact JOIN patient p ON p.id = fact.patient_id "
                               "ORDER BY p.nhs_number, fact.id")).all()
        patients = c.execute(text(f"SELECT {PATIENT_COLUMNS} FROM patient ORDER BY nhs_number")).all()
        links = c.execute(text("SELECT p.nhs_number, source_system, source_id FROM patient_source_id l "
                               "JOIN patient p ON p.id = l.patient_id ORDER BY p.nhs_number, l.id")).all()
    return {"records": records, "facts": facts, "patients": patients, "links": links}


def wipe(engine) -> None:
    with engine.begin() as c:
        for table in ("fact", "patient_source_id", "patient", "ingest_batch"):
            c.execute(text(f"DELETE FROM {table}"))


def test_bulk_load_stores_what_ingest_records_stores(db_url, monkeypatch):
    records = list(generate(N, seed=SEED, as_of=AS_OF))
    records[0].patient.source_ids = {"gp-system": "gp-0001"}  # the generator gives none: cover the link rows too
    # The loader's workers draw people from the generator: hand them these records (the fork inherits the patch).
    monkeypatch.setattr(generate_module, "generate", lambda n, seed, as_of, start=0: iter(records[start:start + n]))
    nhs = [r.patient.nhs_number for r in records]
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine)
        monkeypatch.setattr(ingest, "utcnow", lambda: NOW)
        summary = ingest_records(engine, records, source="reference")
        assert summary.added > 10 * N
        reference = snapshot(engine, nhs)
        wipe(engine)

        monkeypatch.setattr(registry_load, "BLOCK", 45)  # several blocks, so the worker pool is used
        monkeypatch.setattr(registry_load, "COMMIT_EVERY", 2)
        result = registry_load.bulk_load(engine, N, seed=SEED, as_of=AS_OF, workers=2, now=NOW)
        assert (result["patients"], result["facts"]) == (N, summary.added)
        fast = snapshot(engine, nhs)

        assert all(fast["records"][n] == reference["records"][n] for n in nhs)
        assert fast["facts"] == reference["facts"]  # content hashes and the JSON text included
        assert fast["patients"] == reference["patients"]
        assert fast["links"] == reference["links"] == [(records[0].patient.nhs_number, "gp-system", "gp-0001")]

        # The normal path sees the bulk-loaded facts as the same facts: nothing to add or update.
        again = ingest_records(engine, records, source="again")
        assert (again.added, again.updated, again.unchanged) == (0, 0, summary.added)
        assert again.affected == set()
    finally:
        engine.dispose()


def test_populate_outputs_stores_what_reevaluate_stores(tmp_path):
    from engine.app.service import reevaluate_many
    from benchmarks.bench_batch import ROOT
    from tests.unit.cached import shipped_library

    library = shipped_library()
    records = list(generate(60, seed=SEED, as_of=AS_OF))
    mdt = max({r.patient.mdt for r in records}, key=lambda m: sum(r.patient.mdt == m for r in records))
    members = sorted(r.patient.nhs_number for r in records if r.patient.mdt == mdt)
    rows = ("SELECT p.nhs_number, t.key, t.protocol, t.version, t.kind, t.title, t.priority, t.status, t.raised_at, t.due, "
            "t.provider, t.team, t.role, t.response, t.agreement, t.why, t.evidence, t.condition_active FROM task t "
            "JOIN patient p ON p.id = t.patient_id ORDER BY p.nhs_number, t.key",
            "SELECT p.nhs_number, f.key, f.code, f.level, f.text, f.why, f.evidence, f.active, f.raised_at FROM flag f "
            "JOIN patient p ON p.id = f.patient_id ORDER BY p.nhs_number, f.key",
            "SELECT p.nhs_number, e.protocol, e.version, e.reference_date, e.on_register, e.result, e.evaluated_at "
            "FROM patient_evaluation e JOIN patient p ON p.id = e.patient_id ORDER BY p.nhs_number, e.protocol",
            "SELECT e.action, e.actor, e.to_status, e.note, e.at FROM task_event e JOIN task t ON t.id = e.task_id "
            "JOIN patient p ON p.id = t.patient_id ORDER BY p.nhs_number, t.key")

    def stored(engine):
        with engine.connect() as c:
            return [c.execute(text(q)).all() for q in rows]

    fast, slow = (db.make_engine(f"sqlite:///{tmp_path / name}.db") for name in ("fast", "slow"))
    try:
        for e in (fast, slow):
            db.upgrade(e)
        registry_load.bulk_load(fast, 60, seed=SEED, as_of=AS_OF, workers=1, now=NOW)
        result = registry_load.populate_outputs(fast, mdt, library=library, as_of=AS_OF, now=NOW, workers=2)
        assert result["patients_evaluated"] == len(members) and result["tasks_opened"] > 0
        assert registry_load.populate_outputs(fast, mdt, library=library, as_of=AS_OF, now=NOW)["patients_evaluated"] == 0

        ingest_records(slow, records, source="reference")
        reevaluate_many(slow, members, library, as_of=AS_OF, now=NOW)
        assert stored(fast) == stored(slow)
    finally:
        fast.dispose()
        slow.dispose()
