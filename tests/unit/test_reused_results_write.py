"""The write of a selective re-evaluation (engine/app/service.py `_write`, issue 17 P2): a protocol whose
inputs did not change keeps its stored row as it is (result untouched, only `evaluated_at` moves; the
row is checked by its inputs digest read with a JSON path, which SQLite and PostgreSQL spell
differently - hence both databases), a protocol the new facts touch is derived again, and a stored row
that changed between the read and the write is never kept as if it had not."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlmodel import Session, select

from engine import metrics
from engine.app import service
from engine.app.service import EVALUATED, evaluate_one, evaluation_inputs, reevaluate, task_action
from engine.language.library import load_library
from engine.records.model import Coding, Fact, Patient, PatientRecord
from engine.registry.ingest import ingest_records, load_record
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskRow
from engine.registry.tables import PatientRow
from engine.synthetic.generate import SCT, codes

ROOT = Path(__file__).resolve().parents[2]
NHS = "9434765919"
T2DM, HYP = "t2dm-annual-care", "hypertension"
T1, T2, T3 = dt.datetime(2026, 11, 20, 9), dt.datetime(2026, 11, 20, 11), dt.datetime(2026, 11, 20, 15)


@pytest.fixture(scope="module")
def library():
    lib = load_library([ROOT / "protocols" / "t2dm-annual-care.yaml", ROOT / "protocols" / "hypertension.yaml",
                        ROOT / "protocols" / "agreements"])
    assert not lib.errors and {p.id for p in lib.in_force(T1.date())} == {T2DM, HYP}
    return lib


def fact(fid: str, key: str, day: dt.date, value: float | None = None, unit: str | None = None,
         kind: str = "observation") -> Fact:
    return Fact(id=fid, kind=kind, codes=[Coding(system=SCT, code=codes()[key][0])], start=dt.datetime.combine(day, dt.time(9)),
                value=value, unit=unit, source_system="gp")


def record(*facts: Fact) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=NHS, birth_date=dt.date(1958, 3, 1), sex="male", practice="A81001"),
                         facts=list(facts))


def base() -> PatientRecord:
    return record(fact("dx-dm", "dm_t2", dt.date(2019, 1, 1), kind="condition"),
                  fact("dx-hyp", "hyp", dt.date(2018, 1, 1), kind="condition"),
                  fact("hba1c-0", "hba1c", dt.date(2026, 2, 1), 61, "mmol/mol"),
                  fact("sbp-0", "sbp", dt.date(2026, 2, 1), 152, "mm[Hg]"), fact("dbp-0", "dbp", dt.date(2026, 2, 1), 91, "mm[Hg]"))


def stored(engine) -> dict[str, tuple[dict, dt.datetime]]:
    with Session(engine) as s:
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS)).one()
        return {r.protocol: (r.result, r.evaluated_at) for r in
                s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == pid))}


def derived_by(monkeypatch) -> list[list[str]]:
    """The protocols each evaluation derives afresh (the rest are reused)."""
    real, calls = service.evaluate, []

    def spy(rec, protocols, *args, **kwargs):
        calls.append(sorted(p.id for p in protocols))
        return real(rec, protocols, *args, **kwargs)

    monkeypatch.setattr(service, "evaluate", spy)
    return calls


def full_results(engine, library, now: dt.datetime) -> dict[str, dict]:
    """What a full re-evaluation (every protocol derived) would store now; rolled back."""
    with Session(engine) as s:
        reevaluate(s, NHS, library, as_of=now.date(), now=now, selective=False)
        s.flush()
        pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == NHS)).one()
        out = {r.protocol: r.result for r in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == pid))}
        s.rollback()
    return out


def digests(engine, library, now: dt.datetime) -> dict[str, str]:
    with Session(engine) as s:
        rec = load_record(s, NHS)
    return evaluation_inputs(rec, library.in_force(now.date()), library.agreements_in_force(now.date()), now.date())


def test_a_record_touching_one_protocol_keeps_the_others_row_and_derives_its_own(engine, library, monkeypatch):
    ingest_records(engine, [base()], source="feed")
    assert evaluate_one(engine, NHS, library, now=T1)[0] == EVALUATED
    first = stored(engine)
    d1 = digests(engine, library, T1)
    assert {p: r[service.INPUTS_KEY] for p, (r, _) in first.items()} == d1

    # An HbA1c: t2dm reads it, hypertension does not (the premise, checked).
    ingest_records(engine, [record(fact("hba1c-1", "hba1c", dt.date(2026, 11, 1), 55, "mmol/mol"))], source="lab")
    d2 = digests(engine, library, T2)
    assert d2[HYP] == d1[HYP] and d2[T2DM] != d1[T2DM]
    calls = derived_by(monkeypatch)
    assert evaluate_one(engine, NHS, library, now=T2)[0] == EVALUATED
    assert calls == [[T2DM]]  # hypertension reused, not derived
    second = stored(engine)
    assert second[HYP][0] == first[HYP][0]  # its stored result untouched ...
    assert second[HYP][1] == T2  # ... and confirmed now
    assert second[T2DM][0][service.INPUTS_KEY] == d2[T2DM] and second[T2DM][1] == T2
    assert "hba1c-1" in str(second[T2DM][0])  # the new reading is the evidence of the check
    assert {p: r for p, (r, _) in second.items()} == full_results(engine, library, T2)

    # A blood pressure: hypertension reads it, so it is derived again.
    ingest_records(engine, [record(fact("sbp-1", "sbp", dt.date(2026, 11, 2), 128, "mm[Hg]"),
                                   fact("dbp-1", "dbp", dt.date(2026, 11, 2), 78, "mm[Hg]"))], source="gp")
    d3 = digests(engine, library, T3)
    assert d3[HYP] != d2[HYP]
    assert evaluate_one(engine, NHS, library, now=T3)[0] == EVALUATED
    assert HYP in calls[-1]
    third = stored(engine)
    assert third[HYP][0][service.INPUTS_KEY] == d3[HYP] and third[HYP][0] != second[HYP][0]
    assert {p: r for p, (r, _) in third.items()} == full_results(engine, library, T3)


def test_a_reused_row_changed_between_read_and_write_is_not_kept(engine, library, monkeypatch):
    ingest_records(engine, [base()], source="feed")
    assert evaluate_one(engine, NHS, library, now=T1)[0] == EVALUATED
    ingest_records(engine, [record(fact("hba1c-1", "hba1c", dt.date(2026, 11, 1), 55, "mmol/mol"))], source="lab")
    real, calls = service.evaluate, []

    def meanwhile(rec, protocols, *args, **kwargs):
        calls.append(sorted(p.id for p in protocols))
        if len(calls) == 1:  # another writer leaves the hypertension row resting on other inputs
            with Session(engine) as s:
                row = s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.protocol == HYP)).one()
                row.result = {**row.result, service.INPUTS_KEY: "another-digest"}
                s.add(row)
                s.commit()
        return real(rec, protocols, *args, **kwargs)

    monkeypatch.setattr(service, "evaluate", meanwhile)
    conflicts = metrics.EVALUATION_CONFLICTS._value.get()
    assert evaluate_one(engine, NHS, library, now=T2)[0] == EVALUATED
    assert metrics.EVALUATION_CONFLICTS._value.get() == conflicts + 1  # the write saw the change and read again
    assert calls == [[T2DM], [HYP, T2DM]]  # the second read found no reusable hypertension row: derived
    monkeypatch.undo()
    after = stored(engine)
    assert after[HYP][0][service.INPUTS_KEY] == digests(engine, library, T2)[HYP]
    assert {p: r for p, (r, _) in after.items()} == full_results(engine, library, T2)


def outputs(engine) -> dict[str, list[dict]]:
    """The patient's task and flag rows, whole."""
    with Session(engine) as s:
        return {"tasks": [r.model_dump() for r in s.exec(select(TaskRow).order_by(TaskRow.id))],
                "flags": [r.model_dump() for r in s.exec(select(FlagRow).order_by(FlagRow.id))]}


def full_changes(engine, library, now: dt.datetime) -> tuple[service.Diff, dict]:
    """What a full re-evaluation would change now (its diff and the rows it would leave); rolled back."""
    with Session(engine) as s:
        diff, _ = reevaluate(s, NHS, library, as_of=now.date(), now=now, selective=False)
        s.flush()
        rows = {"tasks": [r.model_dump() for r in s.exec(select(TaskRow).order_by(TaskRow.id))],
                "flags": [r.model_dump() for r in s.exec(select(FlagRow).order_by(FlagRow.id))]}
        s.rollback()
    return diff, rows


def test_a_reused_results_flags_are_left_as_they_are_and_what_full_evaluation_leaves(engine, library, monkeypatch):
    """The write reconciles the flags of the protocols derived again only (a reused result's flag rows
    are already its own); the rows left are those a full re-evaluation leaves."""
    ingest_records(engine, [base()], source="feed")
    assert evaluate_one(engine, NHS, library, now=T1)[0] == EVALUATED
    before = outputs(engine)
    hyp_flags = [f for f in before["flags"] if f["protocol"] == HYP]
    assert hyp_flags and all(f["active"] for f in hyp_flags)
    ingest_records(engine, [record(fact("hba1c-1", "hba1c", dt.date(2026, 11, 1), 55, "mmol/mol"))], source="lab")
    calls = derived_by(monkeypatch)
    outcome, diff = evaluate_one(engine, NHS, library, now=T2)
    assert outcome == EVALUATED and calls == [[T2DM]]
    assert diff.flags_changed or diff.flags_cleared  # HbA1c 55: the t2dm "at or above 58" flag clears
    after = outputs(engine)
    assert [f for f in after["flags"] if f["protocol"] == HYP] == hyp_flags  # untouched, still raised
    monkeypatch.undo()
    full_diff, full_rows = full_changes(engine, library, T2)
    assert full_diff.empty and full_rows == after


def test_a_reused_protocols_task_reopened_by_a_person_is_still_resolved(engine, library, monkeypatch):
    """Tasks are reconciled for every protocol, reused or not: a task its protocol no longer indicates,
    reopened by a person, is resolved again even when the protocol's result is reused."""
    ingest_records(engine, [base()], source="feed")
    assert evaluate_one(engine, NHS, library, now=T1)[0] == EVALUATED
    key = f"{NHS}|{HYP}|rule:above-target-untreated"
    with Session(engine) as s:
        task = s.exec(select(TaskRow).where(TaskRow.key == key)).one()
        task_action(s, task.id, "complete", "gp", now=T1, outcome="done")
        s.commit()
        tid = task.id
    # Blood pressure below target: hypertension no longer indicates it (the completed task's need ended).
    ingest_records(engine, [record(fact("sbp-1", "sbp", dt.date(2026, 11, 2), 128, "mm[Hg]"),
                                   fact("dbp-1", "dbp", dt.date(2026, 11, 2), 78, "mm[Hg]"))], source="gp")
    assert evaluate_one(engine, NHS, library, now=T2)[0] == EVALUATED
    with Session(engine) as s:
        row = s.get(TaskRow, tid)
        assert (row.status, row.condition_active) == ("completed", False)
        task_action(s, tid, "reopen", "gp", now=T2)
        s.commit()
    ingest_records(engine, [record(fact("hba1c-1", "hba1c", dt.date(2026, 11, 3), 55, "mmol/mol"))], source="lab")
    calls = derived_by(monkeypatch)
    outcome, diff = evaluate_one(engine, NHS, library, now=T3)
    assert outcome == EVALUATED and calls == [[T2DM]]  # hypertension reused ...
    assert key in [c.key for c in diff.tasks_closed]  # ... and its reopened task resolved again
    with Session(engine) as s:
        row = s.get(TaskRow, tid)
        assert (row.status, row.condition_active) == ("resolved", False)
        assert [e.action for e in service.task_history(s, tid)][-1] == "resolved"
    monkeypatch.undo()
    full_diff, full_rows = full_changes(engine, library, T3)
    assert full_diff.empty and full_rows == outputs(engine)


def test_a_protocol_no_longer_in_force_has_its_tasks_resolved_and_flags_cleared(engine, library, monkeypatch):
    ingest_records(engine, [base()], source="feed")
    assert evaluate_one(engine, NHS, library, now=T1)[0] == EVALUATED
    before = outputs(engine)
    only_t2dm = load_library([ROOT / "protocols" / "t2dm-annual-care.yaml", ROOT / "protocols" / "agreements"])
    calls = derived_by(monkeypatch)
    outcome, diff = evaluate_one(engine, NHS, only_t2dm, now=T2)
    assert outcome == EVALUATED and calls == [[]]  # t2dm reused; hypertension is not in force
    after = outputs(engine)
    assert {c.key for c in diff.flags_cleared} == {f["key"] for f in before["flags"] if f["protocol"] == HYP}
    assert {c.key for c in diff.tasks_closed} == {t["key"] for t in before["tasks"] if t["protocol"] == HYP}
    assert all(not f["active"] for f in after["flags"] if f["protocol"] == HYP)
    assert all(t["status"] == "resolved" for t in after["tasks"] if t["protocol"] == HYP)
    assert [f for f in after["flags"] if f["protocol"] == T2DM] == [f for f in before["flags"] if f["protocol"] == T2DM]
