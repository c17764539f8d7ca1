"""Evaluation outside the write transaction (issue 17 item 1), on SQLite and PostgreSQL: the record is
read, evaluated with no lock held, and the outputs are written after checking under the patient's
lock that the record did not change; a change means read and evaluate again (bounded), and a record
that keeps changing stays marked for the drain, never stored without its evaluation."""
from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from api.db import make_engines
from engine import metrics
from engine.app import service
from engine.app.service import CONFLICT_RETRIES, EVALUATED, PENDING, drain, evaluate_one, evaluation_inputs, pending_patients
from engine.language.library import load_library
from engine.records.model import Coding, Fact, Patient, PatientRecord
from engine.registry import db
from engine.registry.ingest import ingest_records, load_record
from engine.registry.outputs import PatientEvaluationRow
from engine.registry.tables import PatientRow

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 23, 9, 0)
NHS_A = "9434765919"
T2DM, HBA1C = "44054006", "999791000000106"


@pytest.fixture(scope="module")
def library():
    return load_library([ROOT / "protocols" / "t2dm-annual-care.yaml", ROOT / "protocols" / "agreements"])


@pytest.fixture
def engines(db_url):
    """The service's two engines (on SQLite the write engine begins with BEGIN IMMEDIATE)."""
    db.upgrade(db_url)
    e = make_engines(db_url)
    yield e
    e.dispose()


def rec(*facts: Fact) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=NHS_A, birth_date=dt.date(1960, 1, 1), sex="female"), facts=list(facts))


def dx() -> Fact:
    return Fact(id="dx", kind="condition", codes=[Coding(system="sct", code=T2DM)], start=dt.datetime(2020, 1, 1),
                source_system="gp")


def hba1c(i: int, day: dt.date) -> Fact:
    return Fact(id=f"hba1c-{i}", kind="observation", codes=[Coding(system="sct", code=HBA1C)], start=day, value=50 + i,
                unit="mmol/mol", source_system="lab")


def stored_t2dm(engine) -> dict:
    with Session(engine) as s:
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS_A)).one()
        return s.exec(select(PatientEvaluationRow.result).where(PatientEvaluationRow.patient_id == pid,
                                                                PatientEvaluationRow.protocol == "t2dm-annual-care")).first()


def matches_final_facts(engine, library) -> bool:
    """The stored result rests on exactly the record stored now (its inputs' digest)."""
    with Session(engine) as s:
        record = load_record(s, NHS_A)
    as_of = NOW.date()
    want = evaluation_inputs(record, library.in_force(as_of), library.agreements_in_force(as_of), as_of)
    return stored_t2dm(engine)[service.INPUTS_KEY] == want["t2dm-annual-care"]


def during_evaluation(monkeypatch, action):
    """Run `action(call_number)` inside each evaluation, between the read and the write."""
    real, calls = service.evaluate, []

    def wrapped(*args, **kwargs):
        calls.append(1)
        action(len(calls))
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "evaluate", wrapped)
    return calls


def test_no_write_lock_is_held_while_evaluating(engines, library, monkeypatch, db_url):
    ingest_records(engines.write, [rec(dx(), hba1c(0, dt.date(2026, 1, 5)))], source="feed")
    with Session(engines.read) as s:
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS_A)).one()
    got_through = []

    def other_writer(_n):
        if engines.write.dialect.name == "postgresql":  # the patient row is not locked: NOWAIT would fail at once
            with engines.write.connect() as c:
                c.execute(text("SELECT id FROM patient WHERE id = :i FOR UPDATE NOWAIT"), {"i": pid})
                c.rollback()
        else:  # the database's write lock is free: a short-timeout writer gets it
            raw = sqlite3.connect(make_url(db_url).database, timeout=0.5, isolation_level=None)
            try:
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            finally:
                raw.close()
        got_through.append(True)

    during_evaluation(monkeypatch, other_writer)
    outcome, _ = evaluate_one(engines.write, NHS_A, library, now=NOW, read_engine=engines.read)
    assert outcome == EVALUATED and got_through == [True]
    assert pending_patients(engines.read) == []


def test_a_record_changed_during_evaluation_is_read_and_evaluated_again(engines, library, monkeypatch):
    ingest_records(engines.write, [rec(dx(), hba1c(0, dt.date(2026, 1, 5)))], source="feed")
    conflicts = metrics.EVALUATION_CONFLICTS._value.get()

    def concurrent_ingest(n):
        if n == 1:  # a delivery lands between this evaluation's read and its write
            ingest_records(engines.write, [rec(hba1c(1, dt.date(2026, 10, 1)))], source="lab-feed")

    calls = during_evaluation(monkeypatch, concurrent_ingest)
    outcome, _ = evaluate_one(engines.write, NHS_A, library, now=NOW, read_engine=engines.read)
    assert outcome == EVALUATED
    assert len(calls) == 2 and metrics.EVALUATION_CONFLICTS._value.get() == conflicts + 1
    item = next(i for i in stored_t2dm(engines.read)["care_plan"] if i["activity"] == "hba1c")
    assert item["last_done"] == "2026-10-01"  # the evaluation stored is of the final facts
    assert matches_final_facts(engines.read, library)
    assert pending_patients(engines.read) == []


def test_a_record_that_keeps_changing_stays_marked_and_nothing_stale_is_stored(engines, library, monkeypatch):
    ingest_records(engines.write, [rec(dx(), hba1c(0, dt.date(2026, 1, 5)))], source="feed")

    def every_time(n):
        ingest_records(engines.write, [rec(hba1c(n, dt.date(2026, 1, 5) + dt.timedelta(days=n)))], source="lab-feed")

    calls = during_evaluation(monkeypatch, every_time)
    outcome, _ = evaluate_one(engines.write, NHS_A, library, now=NOW, read_engine=engines.read)
    assert outcome == PENDING and len(calls) == CONFLICT_RETRIES
    assert stored_t2dm(engines.read) is None  # nothing of a stale read was written
    assert pending_patients(engines.read) == [NHS_A]  # the outbox keeps the patient for the drain
    monkeypatch.undo()
    result = drain(engines.write, library, lambda: NOW, read_engine=engines.read)
    assert set(result.evaluated) == {NHS_A} and pending_patients(engines.read) == []
    assert matches_final_facts(engines.read, library)


def test_a_failing_write_leaves_the_mark_for_the_drain(engines, library, monkeypatch):
    ingest_records(engines.write, [rec(dx(), hba1c(0, dt.date(2026, 1, 5)))], source="feed")

    def broken(*_a, **_k):
        raise service.OperationalError("INSERT", {}, RuntimeError("database went away"))

    monkeypatch.setattr(service, "store_evaluation", broken)
    outcome, _ = evaluate_one(engines.write, NHS_A, library, now=NOW, read_engine=engines.read, retries=2)
    assert outcome == PENDING and pending_patients(engines.read) == [NHS_A]
    monkeypatch.undo()
    assert set(drain(engines.write, library, lambda: NOW).evaluated) == {NHS_A}
    assert matches_final_facts(engines.read, library)


def test_reevaluate_with_a_read_session_reads_a_changed_record_again(engines, library, monkeypatch):
    """The API's POST /patients/{nhs}/reevaluate path: one read session kept across the retry."""
    ingest_records(engines.write, [rec(dx(), hba1c(0, dt.date(2026, 1, 5)))], source="feed")

    def concurrent_ingest(n):
        if n == 1:  # the same fact corrected (content changed in place) while the first evaluation runs
            ingest_records(engines.write, [rec(hba1c(0, dt.date(2026, 10, 2)))], source="lab-feed")

    calls = during_evaluation(monkeypatch, concurrent_ingest)
    with Session(engines.write) as s, Session(engines.read) as rs:
        service.reevaluate(s, NHS_A, library, as_of=NOW.date(), now=NOW, read_session=rs)
        s.commit()
    assert len(calls) == 2
    item = next(i for i in stored_t2dm(engines.read)["care_plan"] if i["activity"] == "hba1c")
    assert item["last_done"] == "2026-10-02"
    assert matches_final_facts(engines.read, library)
