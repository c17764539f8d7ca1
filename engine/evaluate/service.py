"""Incremental evaluation against the registry: a record arrives, that patient is re-evaluated,
stored tasks and flags are reconciled, and the diff (opened / closed / changed) is returned.

Task lifecycle (people's decisions survive re-evaluation):
- open -> accepted -> completed;  open/accepted -> declined (reason required);  reassign keeps status.
- The evaluation no longer asks for an open/accepted task -> it is `resolved` by the system, with why.
- A task someone completed or declined is not raised again while the same need continues; once an
  evaluation finds the need gone, a later recurrence (next year's check) raises a new task.
- Due times are set when a task is first raised and never move on re-evaluation (the SLA clock).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from engine.evaluate.evaluator import Options, evaluate
from engine.evaluate.outputs import Evaluation, Flag, Task
from engine.protocols.library import Library
from engine.registry.ingest import load_record
from engine.registry.outputs import (CLOSED_STATUSES, OPEN_STATUSES, FlagRow, PatientEvaluationRow, TaskEventRow,
                                     TaskRow)
from engine.registry.tables import PatientRow, utcnow

SYSTEM = "carepath"


class TaskActionError(ValueError):
    pass


@dataclass
class Change:
    key: str
    title: str
    detail: str = ""
    id: int | None = None


@dataclass
class Diff:
    nhs_number: str
    tasks_opened: list[Change] = field(default_factory=list)
    tasks_closed: list[Change] = field(default_factory=list)
    tasks_updated: list[Change] = field(default_factory=list)
    flags_raised: list[Change] = field(default_factory=list)
    flags_cleared: list[Change] = field(default_factory=list)
    flags_changed: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any((self.tasks_opened, self.tasks_closed, self.tasks_updated, self.flags_raised,
                        self.flags_cleared, self.flags_changed))

    def as_dict(self) -> dict:
        return {k: ([c.__dict__ for c in v] if isinstance(v, list) else v) for k, v in self.__dict__.items()}


def _patient_row(session: Session, nhs_number: str, lock: bool) -> PatientRow | None:
    stmt = select(PatientRow).where(PatientRow.nhs_number == nhs_number)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # one re-evaluation of a patient at a time
    return session.exec(stmt).first()


def reevaluate(session: Session, nhs_number: str, library: Library, *, as_of: dt.date | None = None,
               now: dt.datetime | None = None) -> tuple[Diff, Evaluation]:
    """Re-evaluate one patient and reconcile stored outputs. The caller commits."""
    now = now or utcnow()
    as_of = as_of or now.date()
    prow = _patient_row(session, nhs_number, lock=True)
    record = load_record(session, nhs_number)
    if prow is None or record is None:
        raise KeyError(f"no patient with NHS number {nhs_number}")
    evaluation = evaluate(record, library.in_force(as_of), library.agreements_in_force(as_of), as_of=as_of,
                          options=Options(raised_at=now))
    diff = Diff(nhs_number)
    _reconcile_tasks(session, prow.id, evaluation.tasks, diff, now)
    _reconcile_flags(session, prow.id, evaluation.flags, diff, now)
    _store_evaluation(session, prow.id, evaluation, now)
    return diff, evaluation


def reevaluate_many(engine: Engine, nhs_numbers, library: Library, *, as_of: dt.date | None = None,
                    now: dt.datetime | None = None) -> list[Diff]:
    """Re-evaluate the patients an ingest touched, each in its own transaction."""
    diffs = []
    for nhs in sorted(nhs_numbers):
        with Session(engine) as session:
            diff, _ = reevaluate(session, nhs, library, as_of=as_of, now=now)
            session.commit()
            diffs.append(diff)
    return diffs


def _current_tasks(session: Session, patient_id: int) -> dict[str, TaskRow]:
    latest = (select(TaskRow.key, func.max(TaskRow.id).label("mid")).where(TaskRow.patient_id == patient_id)
              .group_by(TaskRow.key).subquery())
    rows = session.exec(select(TaskRow).join(latest, TaskRow.id == latest.c.mid)).all()
    return {r.key: r for r in rows}


def _event(session: Session, task: TaskRow, action: str, actor: str, before: str | None, note: str | None = None,
           at: dt.datetime | None = None) -> None:
    session.add(TaskEventRow(task_id=task.id, action=action, actor=actor, from_status=before, to_status=task.status,
                             note=note, at=at or utcnow()))


def _reconcile_tasks(session: Session, patient_id: int, tasks: list[Task], diff: Diff, now: dt.datetime) -> None:
    current = _current_tasks(session, patient_id)
    wanted = {t.key: t for t in tasks}
    for key, t in wanted.items():
        row = current.get(key)
        if row is None or (row.status in CLOSED_STATUSES and not row.condition_active):
            new = TaskRow(key=key, patient_id=patient_id, protocol=t.provenance.protocol, version=t.provenance.version,
                          source=t.provenance.source, kind=t.kind, title=t.title, priority=t.priority, status="open",
                          raised_at=t.raised_at, due=t.due, provider=t.assigned.provider, team=t.assigned.team,
                          role=t.assigned.role, response=t.assigned.response, agreement=t.assigned.agreement,
                          why=t.provenance.why, evidence=[e.model_dump(mode="json") for e in t.provenance.evidence],
                          condition_active=True, updated_at=now)
            session.add(new)
            session.flush()
            _event(session, new, "raised", SYSTEM, None, t.provenance.why, now)
            diff.tasks_opened.append(Change(key, t.title, t.provenance.why, new.id))
        elif row.status in OPEN_STATUSES:
            changed = (row.title, row.priority, row.why, row.version) != (t.title, t.priority, t.provenance.why, t.provenance.version)
            row.condition_active = True
            if changed:
                row.title, row.priority, row.why, row.version = t.title, t.priority, t.provenance.why, t.provenance.version
                row.evidence = [e.model_dump(mode="json") for e in t.provenance.evidence]
                row.updated_at = now
                _event(session, row, "updated", SYSTEM, row.status, t.provenance.why, now)
                diff.tasks_updated.append(Change(key, t.title, t.provenance.why, row.id))
            session.add(row)
        else:
            row.condition_active = True  # closed by a person while the need continues: leave it closed
            session.add(row)
    for key, row in current.items():
        if key in wanted:
            continue
        if row.status in OPEN_STATUSES:
            before = row.status
            row.status, row.closed_at, row.condition_active, row.updated_at = "resolved", now, False, now
            row.closed_reason = "no longer indicated by the protocol on re-evaluation"
            _event(session, row, "resolved", SYSTEM, before, row.closed_reason, now)
            diff.tasks_closed.append(Change(key, row.title, row.closed_reason, row.id))
        elif row.condition_active:
            row.condition_active = False
        session.add(row)


def _reconcile_flags(session: Session, patient_id: int, flags: list[Flag], diff: Diff, now: dt.datetime) -> None:
    rows = {r.key: r for r in session.exec(select(FlagRow).where(FlagRow.patient_id == patient_id)).all()}
    wanted = {f.key: f for f in flags}
    for key, f in wanted.items():
        row = rows.get(key)
        evidence = [e.model_dump(mode="json") for e in f.provenance.evidence]
        if row is None:
            session.add(FlagRow(key=key, patient_id=patient_id, protocol=f.provenance.protocol, version=f.provenance.version,
                                source=f.provenance.source, kind=f.kind, code=f.code, level=f.level, text=f.text,
                                why=f.provenance.why, evidence=evidence, active=True, raised_at=now))
            diff.flags_raised.append(Change(key, f.text, f.level))
            continue
        if not row.active:
            row.active, row.raised_at, row.cleared_at = True, now, None
            diff.flags_raised.append(Change(key, f.text, f.level, row.id))
        elif row.level != f.level:
            diff.flags_changed.append(Change(key, f.text, f"{row.level} -> {f.level}", row.id))
        row.level, row.text, row.why, row.evidence, row.version = f.level, f.text, f.provenance.why, evidence, f.provenance.version
        session.add(row)
    for key, row in rows.items():
        if key not in wanted and row.active:
            row.active, row.cleared_at = False, now
            session.add(row)
            diff.flags_cleared.append(Change(key, row.text, row.level, row.id))


def _store_evaluation(session: Session, patient_id: int, evaluation: Evaluation, now: dt.datetime) -> None:
    rows = {r.protocol: r for r in session.exec(select(PatientEvaluationRow)
                                                .where(PatientEvaluationRow.patient_id == patient_id)).all()}
    for pr in evaluation.protocols:
        data = pr.model_dump(mode="json")
        row = rows.get(pr.protocol) or PatientEvaluationRow(patient_id=patient_id, protocol=pr.protocol, version=pr.version,
                                                             reference_date=evaluation.reference_date, on_register=pr.on_register)
        row.version, row.reference_date, row.on_register, row.result, row.evaluated_at = (
            pr.version, evaluation.reference_date, pr.on_register, data, now)
        session.add(row)


# ---- task lifecycle actions ------------------------------------------------------------------------
TRANSITIONS = {
    "accept": ({"open"}, "accepted"),
    "complete": ({"open", "accepted"}, "completed"),
    "decline": ({"open", "accepted"}, "declined"),
    "reopen": ({"completed", "declined"}, "open"),
}


def task_action(session: Session, task_id: int, action: str, actor: str, *, reason: str | None = None,
                provider: str | None = None, team: str | None = None, role: str | None = None,
                now: dt.datetime | None = None) -> TaskRow:
    """Accept / complete / decline (with reason) / reopen / reassign a task, keeping its history."""
    now = now or utcnow()
    row = session.get(TaskRow, task_id)
    if row is None:
        raise KeyError(f"no task {task_id}")
    before = row.status
    if action == "reassign":
        if not (provider or team or role):
            raise TaskActionError("reassign needs a provider, team or role")
        if row.status not in OPEN_STATUSES:
            raise TaskActionError(f"cannot reassign a {row.status} task")
        old = " / ".join(x for x in (row.provider, row.team, row.role) if x)
        row.provider, row.team, row.role = provider or row.provider, team or row.team, role or row.role
        note = f"from {old} to {' / '.join(x for x in (row.provider, row.team, row.role) if x)}" + (f": {reason}" if reason else "")
        _event(session, row, "reassigned", actor, before, note, now)
    else:
        if action not in TRANSITIONS:
            raise TaskActionError(f"unknown action {action!r} (accept, complete, decline, reopen, reassign)")
        allowed, target = TRANSITIONS[action]
        if row.status not in allowed:
            raise TaskActionError(f"cannot {action} a task that is {row.status}")
        if action == "decline" and not (reason and reason.strip()):
            raise TaskActionError("declining a task needs a reason")
        row.status = target
        if target in CLOSED_STATUSES:
            row.closed_at, row.closed_reason = now, reason or f"{target} by {actor}"
        else:
            row.closed_at, row.closed_reason = None, None
        _event(session, row, {"accept": "accepted", "complete": "completed", "decline": "declined",
                              "reopen": "reopened"}[action], actor, before, reason, now)
    row.updated_at = now
    session.add(row)
    return row


def task_history(session: Session, task_id: int) -> list[TaskEventRow]:
    return list(session.exec(select(TaskEventRow).where(TaskEventRow.task_id == task_id).order_by(TaskEventRow.id)).all())
