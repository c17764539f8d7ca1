"""What an evaluation reads of one patient (engine/registry/evaluation_state.py, issue 17 P2): on
PostgreSQL the read and the locked re-check are each one statement of JSON-aggregated rows (plus the
facts / the lock), elsewhere one statement per table - hence both databases. Whichever way, the
answers are those of the ORM's rows: the same record and digest, stored results, heads (inputs digest
and measures by JSON path), and task and flag rows (but the flags of the protocols left out) with their dates and times as Python values (a
reconciled task's row gives the stored result its `raised_at` / `due`). On PostgreSQL the re-check
reads after the lock is granted, so a writer that held the lock is seen."""
from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from engine.app.service import EVALUATED, evaluate_one
from engine.registry.evaluation_state import INPUTS_KEY, locked_state, read_state
from engine.registry.ingest import ingest_records, load_record_versioned, record_digest
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskRow
from engine.registry.tables import PatientRow, PatientSourceId
from tests.unit.test_reused_results_write import NHS, T1, base, library  # noqa: F401 - library: the module's fixture


def _columns(row) -> dict:
    return {c.name: getattr(row, c.name) for c in row.__table__.columns}


@pytest.fixture
def evaluated(engine, library):  # noqa: F811 - the imported fixture
    rec = base()
    rec.patient.source_ids = {"gp": "P-1", "hospital": "H-9"}
    ingest_records(engine, [rec], source="feed")
    assert evaluate_one(engine, NHS, library, now=T1)[0] == EVALUATED
    with Session(engine) as s:
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS)).one()
        assert len(list(s.exec(select(PatientSourceId).where(PatientSourceId.patient_id == pid)))) == 2
        assert s.exec(select(TaskRow).where(TaskRow.patient_id == pid)).first() is not None
        assert s.exec(select(FlagRow).where(FlagRow.patient_id == pid)).first() is not None
    return pid


def test_the_read_is_the_orm_rows(engine, evaluated):
    with Session(engine) as s:
        got = read_state(s, NHS)
        prow, record, digest = load_record_versioned(s, NHS)
        assert got.patient.id == prow.id == evaluated
        assert got.digest == digest and got.record() == record
        rows = {r.protocol: r for r in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == prow.id))}
        assert set(got.stored) == set(rows) and len(rows) == 2
        for protocol, r in rows.items():
            assert tuple(got.stored[protocol]) == (r.id, r.protocol, r.version, r.reference_date, r.result)
        tasks = {r.key: r for r in s.exec(select(TaskRow).where(TaskRow.patient_id == prow.id))}
        assert {k: (t.status, t.condition_active) for k, t in got.tasks.items()} == \
               {k: (t.status, t.condition_active) for k, t in tasks.items()}
        assert read_state(s, "9999999999") is None


def test_the_locked_re_check_is_the_orm_rows(engine, evaluated):
    with Session(engine) as s:
        got = locked_state(s, evaluated)
        assert got.digest == record_digest(s, evaluated)
        rows = {r.protocol: r for r in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == evaluated))}
        assert {p: (h.id, h.version, h.reference_date, h.inputs, h.measures, h.is_object) for p, h in got.heads.items()} == \
               {p: (r.id, r.version, r.reference_date, r.result[INPUTS_KEY], r.result.get("measures"), True)
                for p, r in rows.items()}
        tasks = {r.key: _columns(r) for r in s.exec(select(TaskRow).where(TaskRow.patient_id == evaluated))}
        flags = {r.key: _columns(r) for r in s.exec(select(FlagRow).where(FlagRow.patient_id == evaluated))}
        assert {k: r._values for k, r in got.tasks.items()} == tasks
        assert {k: r._values for k, r in got.flags.items()} == flags
        assert all(isinstance(r.raised_at, dt.datetime) and isinstance(r.due, dt.datetime) for r in got.tasks.values())
        s.rollback()
        # The flags of reused results left out (the write does not reconcile them); tasks and heads all there.
        some = locked_state(s, evaluated, leave_out_flags={"hypertension"})
        assert {k: r._values for k, r in some.flags.items()} == {k: v for k, v in flags.items() if v["protocol"] != "hypertension"}
        assert len(some.flags) < len(flags) and set(some.tasks) == set(tasks) and set(some.heads) == set(rows)
        s.rollback()
        assert locked_state(s, 10 ** 9) is None


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # row locks and statement snapshots: PostgreSQL's
def test_a_re_check_that_waited_for_the_lock_sees_what_the_lock_holder_wrote(engine, evaluated):
    table = PatientEvaluationRow.__table__
    seen: list = []
    with Session(engine) as holder:
        holder.execute(sa.text("SELECT id FROM patient WHERE id = :id FOR UPDATE"), {"id": evaluated})

        def recheck():
            with Session(engine) as s:
                seen.append(locked_state(s, evaluated))
                s.rollback()

        waiting = threading.Thread(target=recheck)
        waiting.start()
        time.sleep(0.5)  # the re-check is now waiting for the lock (its statement has begun)
        assert not seen
        holder.execute(sa.update(table).where(table.c.patient_id == evaluated)
                       .values(result=sa.cast(sa.func.json_build_object(INPUTS_KEY, "written-by-the-holder"), sa.JSON)))
        holder.commit()
        waiting.join(30)
    assert [h.inputs for h in seen[0].heads.values()] == ["written-by-the-holder"] * 2
