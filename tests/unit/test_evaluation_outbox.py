"""The evaluation outbox and data problems on a real database (SQLite, and PostgreSQL when
CAREPATH_TEST_POSTGRES_URL is set): engine/registry/pending.py, engine/app/service.py."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine.app.service import EvaluationFailed, drain, pending_patients, reevaluate, reevaluate_many
from engine.language.library import load_library
from engine.records.model import Coding, Fact, Patient, PatientRecord
from engine.registry import db, pending
from engine.registry.ingest import IngestError, ingest_records, load_record
from engine.registry.outputs import PatientEvaluationRow
from engine.registry.pending import DataProblemRow, PendingEvaluationRow
from engine.registry.tables import FactRow, IngestBatch, PatientRow

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 23, 9, 0)
NHS_A, NHS_B = "9434765919", "9434765870"
T2DM, HBA1C = "44054006", "999791000000106"


@pytest.fixture(scope="module")
def library():
    return load_library([ROOT / "protocols" / "t2dm-annual-care.yaml", ROOT / "protocols" / "agreements"])


def rec(nhs: str, *facts: Fact) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=nhs, birth_date=dt.date(1960, 1, 1), sex="female"), facts=list(facts))


def dx(id: str = "dx", start=dt.datetime(2020, 1, 1)) -> Fact:
    return Fact(id=id, kind="condition", codes=[Coding(system="sct", code=T2DM)], start=start, source_system="gp")


def marked(engine) -> set[str]:
    return set(pending_patients(engine))


def test_ingest_marks_changed_patients_in_its_own_transaction(engine):
    s1 = ingest_records(engine, [rec(NHS_A, dx()), rec(NHS_B)], source="feed")
    assert s1.queued == {NHS_A, NHS_B} and marked(engine) == {NHS_A, NHS_B}
    # a delivery the database refuses stores neither facts nor marks
    with Session(engine) as s:
        s.add(PatientRow(nhs_number="9000000009", birth_date=dt.date(1970, 1, 1), sex="male"))
        s.commit()
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == "9000000009")).one()
    with pytest.raises(IngestError):  # the Patient's id already belongs to A: the whole delivery rolls back
        ingest_records(engine, [rec("9000000009", dx("x")).model_copy(update={"patient": Patient(
            nhs_number="9000000009", birth_date=dt.date(1970, 1, 1), source_ids={"gp": "A"})}),
            rec(NHS_A, dx()).model_copy(update={"patient": Patient(nhs_number=NHS_A, birth_date=dt.date(1960, 1, 1),
                                                                      source_ids={"gp": "A"})})], source="feed")
    with Session(engine) as s:
        assert s.get(PendingEvaluationRow, pid) is None
    assert marked(engine) == {NHS_A, NHS_B}


def test_evaluation_clears_the_mark_and_a_repeat_marks_nobody_evaluated(engine, library):
    ingest_records(engine, [rec(NHS_A, dx()), rec(NHS_B)], source="feed")
    result = drain(engine, library, lambda: NOW)
    assert set(result.evaluated) == {NHS_A, NHS_B} and not result.problems and not result.pending
    assert marked(engine) == set()
    again = ingest_records(engine, [rec(NHS_A, dx()), rec(NHS_B)], source="feed")
    assert again.queued == set() and marked(engine) == set()
    # lost outputs (an evaluation that never happened): the repeat marks that patient again
    with Session(engine) as s:
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS_B)).one()
        for row in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == pid)):
            s.delete(row)
        s.commit()
    assert ingest_records(engine, [rec(NHS_A, dx()), rec(NHS_B)], source="feed").queued == {NHS_B}


def test_a_delivery_during_an_evaluation_keeps_its_mark(engine, library):
    """The evaluation removes only the mark it saw: a newer delivery's mark survives it."""
    ingest_records(engine, [rec(NHS_A, dx())], source="feed")
    with Session(engine) as s:
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS_A)).one()
        seen = pending.pending_seq(s, pid)
    with Session(engine) as s:  # another delivery lands and marks A again
        pending.queue(s, [pid], now=NOW)
        s.commit()
    with Session(engine) as s:
        pending.clear(s, pid, seen)  # what the earlier evaluation does when it finishes
        s.commit()
        assert pending.pending_seq(s, pid) == seen + 1
    with Session(engine) as s:  # a full evaluation now answers the newer mark
        reevaluate(s, NHS_A, library, as_of=NOW.date(), now=NOW)
        s.commit()
    assert marked(engine) == set()


def _year_one_fact(engine, nhs: str) -> None:
    with Session(engine) as s:
        p = s.exec(select(PatientRow).where(PatientRow.nhs_number == nhs)).one()
        batch = s.exec(select(IngestBatch.id)).first()
        s.add(FactRow(patient_id=p.id, source_system="legacy", source_id="Condition/1", kind="condition",
                      start=dt.datetime(1, 1, 1), care_setting="gp", codes=[{"system": "http://snomed.info/sct", "code": T2DM}],
                      content_hash="legacy", batch_id=batch))
        s.commit()
        pending.queue(s, [p.id], now=NOW)
        s.commit()


def test_one_patients_failure_is_their_data_problem(engine, library):
    ingest_records(engine, [rec(NHS_A), rec(NHS_B, dx())], source="feed")
    _year_one_fact(engine, NHS_A)
    with Session(engine) as s:  # stored rows are read back as they are, even against today's rules
        assert load_record(s, NHS_A).facts[0].start.year == 1
    with Session(engine) as s, pytest.raises(EvaluationFailed) as failed:
        reevaluate(s, NHS_A, library, as_of=NOW.date(), now=NOW)
    assert (failed.value.fact_source_system, failed.value.fact_source_id) == ("legacy", "Condition/1")
    assert failed.value.protocol == "t2dm-annual-care" and "year 0" in failed.value.message

    result = drain(engine, library, lambda: NOW)
    assert set(result.evaluated) == {NHS_B} and set(result.problems) == {NHS_A} and marked(engine) == set()
    with Session(engine) as s:
        [problem] = pending.open_problems(s)
        assert problem.fact_source_id == "Condition/1" and "before 1900" in problem.fact_problem
    # the same failure again keeps one open problem; reevaluate_many carries on past it
    assert [d.nhs_number for d in reevaluate_many(engine, {NHS_A, NHS_B}, library, as_of=NOW.date(), now=NOW)] == [NHS_B]
    with Session(engine) as s:
        assert len(pending.open_problems(s)) == 1 and len(list(s.exec(select(DataProblemRow)))) == 1
