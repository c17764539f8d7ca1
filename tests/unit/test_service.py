"""Incremental re-evaluation against the registry: diffs, and task lifecycle surviving re-evaluation."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine.app.service import TaskActionError, reevaluate, reevaluate_many, task_action, task_history
from engine.language.library import load_library
from engine.records.model import Fact, Patient, PatientRecord
from engine.registry.ingest import ingest_records
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskRow

ROOT = Path(__file__).resolve().parents[2]
SCT = "http://snomed.info/sct"
HBA1C, T2DM = "999791000000106", "44054006"
AS_OF = dt.date(2026, 11, 20)  # a Friday
NOW = dt.datetime(2026, 11, 20, 10, 30)
NHS = "9434765919"


@pytest.fixture(scope="module")
def library():
    lib = load_library([ROOT / "protocols" / "t2dm-annual-care.yaml", ROOT / "protocols" / "agreements"])
    assert not lib.errors
    return lib


def record(*facts: Fact) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=NHS, birth_date=dt.date(1960, 1, 1), sex="female", practice="A81001",
                                         locality="central", mdt="central-1"), facts=list(facts))


def fact(fid, code, when, value=None, unit=None, kind="observation") -> Fact:
    return Fact(id=fid, kind=kind, codes=[{"system": SCT, "code": code}], start=when, value=value, unit=unit,
                source_system="gp-system")


BASE = [fact("dx", T2DM, dt.date(2015, 1, 1), kind="condition"),
        fact("a1", HBA1C, dt.date(2026, 9, 1), 64, "mmol/mol")]


def evaluate_now(engine, library, now=NOW):
    with Session(engine) as s:
        diff, ev = reevaluate(s, NHS, library, as_of=now.date(), now=now)
        s.commit()
    return diff


def tasks(engine):
    with Session(engine) as s:
        return {(t.source, t.status): t for t in s.exec(select(TaskRow)).all()}


def test_first_evaluation_opens_tasks_and_flags_with_provenance(engine, library):
    ingest_records(engine, [record(*BASE)], source="test")
    diff = evaluate_now(engine, library)
    opened = {c.title for c in diff.tasks_opened}
    assert "Review glucose-lowering therapy" in opened
    assert "Blood pressure check overdue" in opened
    assert any(c.key.endswith("rule:hba1c-above-individual-target") for c in diff.flags_raised)
    with Session(engine) as s:
        t = s.exec(select(TaskRow).where(TaskRow.source == "rule:hba1c-above-individual-target")).one()
        assert (t.provider, t.role, t.status, t.version) == ("gp-practices", "gp", "open", "1.0.0")
        assert t.due == dt.datetime(2026, 12, 4, 10, 30)  # 10 working days from Friday 20 Nov 10:30
        assert "64 mmol/mol" in t.why and t.evidence[0]["fact_id"] == "a1"
        stored = s.exec(select(PatientEvaluationRow)).one()
        assert stored.on_register and stored.result["protocol"] == "t2dm-annual-care"
    # evaluating again with nothing new changes nothing
    assert evaluate_now(engine, library).empty


def test_new_record_closes_what_it_satisfies_and_reports_the_diff(engine, library):
    ingest_records(engine, [record(*BASE)], source="test")
    evaluate_now(engine, library)
    later = NOW + dt.timedelta(days=3)
    summary = ingest_records(engine, [record(*BASE, fact("a2", HBA1C, dt.date(2026, 11, 22), 52, "mmol/mol"))], source="test")
    assert summary.affected == {NHS}
    (diff,) = reevaluate_many(engine, summary.affected, library, as_of=later.date(), now=later)
    closed = {c.title for c in diff.tasks_closed}
    assert closed == {"Review glucose-lowering therapy"}
    assert {c.key.split("|")[-1] for c in diff.flags_cleared} == {"rule:hba1c-above-individual-target"}
    assert not diff.tasks_opened
    t = tasks(engine)[("rule:hba1c-above-individual-target", "resolved")]
    assert t.closed_at == later and "no longer indicated" in t.closed_reason


def test_a_task_a_clinician_completed_is_not_raised_again_while_the_need_continues(engine, library):
    ingest_records(engine, [record(*BASE)], source="test")
    evaluate_now(engine, library)
    with Session(engine) as s:
        t = s.exec(select(TaskRow).where(TaskRow.source == "activity:blood-pressure")).one()
        task_action(s, t.id, "accept", "nurse.jones", now=NOW)
        task_action(s, t.id, "complete", "nurse.jones", reason="BP taken, result to follow", now=NOW, outcome="done")
        s.commit()
        tid = t.id
    diff = evaluate_now(engine, library, NOW + dt.timedelta(days=1))
    assert not any(c.key.endswith("activity:blood-pressure") for c in diff.tasks_opened)
    with Session(engine) as s:
        rows = s.exec(select(TaskRow).where(TaskRow.source == "activity:blood-pressure")).all()
        assert [r.status for r in rows] == ["completed"]
        assert [e.action for e in task_history(s, tid)] == ["raised", "accepted", "completed"]


def test_need_gone_then_back_raises_a_new_task(engine, library):
    ingest_records(engine, [record(*BASE)], source="test")
    evaluate_now(engine, library)
    with Session(engine) as s:
        t = s.exec(select(TaskRow).where(TaskRow.source == "rule:hba1c-above-individual-target")).one()
        task_action(s, t.id, "decline", "dr.khan", reason="Patient on holiday; review in January", now=NOW)
        s.commit()
    # HbA1c comes down: the declined task's need is gone
    ingest_records(engine, [record(*BASE, fact("a2", HBA1C, dt.date(2026, 11, 21), 50, "mmol/mol"))], source="test")
    evaluate_now(engine, library, NOW + dt.timedelta(days=2))
    # ... and rises again: a new task, the declined one stays declined
    ingest_records(engine, [record(*BASE, fact("a2", HBA1C, dt.date(2026, 11, 21), 50, "mmol/mol"),
                                   fact("a3", HBA1C, dt.date(2026, 11, 24), 70, "mmol/mol"))], source="test")
    diff = evaluate_now(engine, library, NOW + dt.timedelta(days=5))
    assert [c.title for c in diff.tasks_opened] == ["Review glucose-lowering therapy"]
    with Session(engine) as s:
        rows = s.exec(select(TaskRow).where(TaskRow.source == "rule:hba1c-above-individual-target").order_by(TaskRow.id)).all()
        assert [r.status for r in rows] == ["declined", "open"]
        assert rows[0].closed_reason == "Patient on holiday; review in January"


def test_task_actions_are_validated(engine, library):
    ingest_records(engine, [record(*BASE)], source="test")
    evaluate_now(engine, library)
    with Session(engine) as s:
        t = s.exec(select(TaskRow).where(TaskRow.source == "activity:bmi")).one()
        with pytest.raises(TaskActionError, match="needs a reason"):
            task_action(s, t.id, "decline", "x", reason="  ")
        with pytest.raises(TaskActionError, match="unknown action"):
            task_action(s, t.id, "delete", "x")
        task_action(s, t.id, "reassign", "lead", team="phlebotomy", role="healthcare-assistant", reason="clinic capacity")
        assert (t.team, t.role, t.status) == ("phlebotomy", "healthcare-assistant", "open")
        task_action(s, t.id, "complete", "hca", outcome="done")
        with pytest.raises(TaskActionError, match="cannot accept a task that is completed"):
            task_action(s, t.id, "accept", "x")
        with pytest.raises(TaskActionError, match="cannot reassign"):
            task_action(s, t.id, "reassign", "x", role="gp")


def test_compliance_flag_level_change_is_reported(engine, library):
    ingest_records(engine, [record(*BASE, fact("bp", "72313002", dt.date(2025, 12, 10), 130, "mm[Hg]"))], source="test")
    evaluate_now(engine, library)  # BP done 2025-12-10: due (within 12 months, inside the 1-month due-soon window)
    diff = evaluate_now(engine, library, dt.datetime(2026, 12, 15, 9, 0))  # now more than 12 months: overdue
    changed = {c.key.split("|")[-1]: c.detail for c in diff.flags_changed}
    assert changed["activity:blood-pressure"] == "due -> overdue"
    with Session(engine) as s:
        f = s.exec(select(FlagRow).where(FlagRow.key.like("%activity:blood-pressure"))).one()
        assert f.level == "overdue" and f.active


def test_unknown_patient(engine, library):
    with Session(engine) as s, pytest.raises(KeyError):
        reevaluate(s, "4010232137", library, as_of=AS_OF, now=NOW)
