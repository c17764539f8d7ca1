"""Actions agreed at an MDT case conference become tasks (issue 16 item 6).

An outcome recorded for a patient may carry action entries: an action type from a fixed list, the care
role that does it, a due date, a priority and optional words. Each becomes a real task on the worklist
(kind `mdt-action`), its source the outcome (`mdt-outcome:<id>`), its why "Agreed at the <MDT> MDT case
conference on <date>: <what was decided>". These tasks are people's decisions, not a protocol's: a
re-evaluation never resolves them (engine.app.service._reconcile_tasks leaves `mdt-action` tasks alone);
they are completed or declined like any other task.

The same outcome may also change the patient's existing open tasks (`TaskChange`, `apply_task_changes`):
reassign one to another care role (and team), or close it with a coded outcome (engine.app.task_outcomes:
done / not done with the reason / declined by the patient / not clinically appropriate) and words. The MDT
decides as a team, so the person recording the outcome (an MDT member who may write outcomes) makes the
change whatever their own care role; the task's history names them, the time and the meeting
("... agreed at the central-2 MDT case conference on 7 December 2026"), the task keeps who closed it and
why (closed_by, closed_reason, outcome: the worklist's closed view), and the outcome keeps the list of
changes (mdt_outcome.task_changes).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import Session

from engine.app.task_outcomes import OUTCOMES, OutcomeError, outcome_text, role_words
from engine.registry.outputs import OPEN_STATUSES, TaskEventRow, TaskRow

MDT_KIND = "mdt-action"
MDT_PROTOCOL = "mdt-case-conference"
ACTION_TYPES = {
    "medication-review": "Structured medication review",
    "home-visit": "Home visit",
    "care-plan-update": "Update the personalised care and support plan",
    "advance-care-planning": "Advance care planning conversation",
    "falls-assessment": "Falls assessment",
    "specialist-referral": "Refer to a specialist service",
    "social-care-referral": "Refer to social care / carer support",
    "investigations": "Arrange tests or investigations",
    "phone-follow-up": "Telephone follow-up",
    "next-mdt": "Bring back to the next MDT",
}
# The care roles an MDT gives actions to (each is a role the shipped role agreements assign tasks to).
ACTION_ROLES = ("gp", "practice-nurse", "healthcare-assistant", "clinical-pharmacist", "care-coordinator",
                "community-matron", "falls-practitioner", "geriatrician", "social-worker", "podiatrist",
                "heart-failure-nurse", "diabetes-specialist-nurse", "respiratory-nurse", "mental-health-practitioner",
                "mdt")
MDT_ROLE = "mdt"
PRIORITIES = ("urgent", "high", "routine")
DUE_HOUR = 17  # an action due on a day is due by the end of that working day
MAX_DAYS_AHEAD = 366


class ActionError(ValueError):
    pass


@dataclass
class Action:
    type: str
    role: str
    due: dt.date
    priority: str = "routine"
    detail: str | None = None


def check(actions: list[Action], meeting_date: dt.date) -> None:
    """Refuse an action the worklist could not carry, in words."""
    for i, a in enumerate(actions, 1):
        if a.type not in ACTION_TYPES:
            raise ActionError(f"action {i}: unknown action type {a.type!r} (one of {', '.join(ACTION_TYPES)})")
        if a.role not in ACTION_ROLES:
            raise ActionError(f"action {i}: unknown role {a.role!r} (one of {', '.join(ACTION_ROLES)})")
        if a.priority not in PRIORITIES:
            raise ActionError(f"action {i}: priority is one of {', '.join(PRIORITIES)}")
        if a.due < meeting_date:
            raise ActionError(f"action {i}: the due date {a.due:%d %B %Y} is before the meeting")
        if a.due > meeting_date + dt.timedelta(days=MAX_DAYS_AHEAD):
            raise ActionError(f"action {i}: the due date is more than a year after the meeting")


def title_of(a: Action) -> str:
    detail = (a.detail or "").strip()
    return (f"{ACTION_TYPES[a.type]}: {detail}" if detail else ACTION_TYPES[a.type])[:300]


def why_of(mdt: str, meeting_date: dt.date, outcome: str) -> str:
    text = " ".join(outcome.split())
    if len(text) > 600:
        text = text[:597] + "..."
    return f"Agreed at the {mdt} MDT case conference on {meeting_date.day} {meeting_date:%B %Y}: {text}"


def create_tasks(session: Session, *, outcome_id: int, patient_id: int, mdt: str, meeting_date: dt.date,
                 outcome: str, actions: list[Action], actor: str, now: dt.datetime) -> list[TaskRow]:
    """One open task per action (the caller has `check`ed them and commits)."""
    check(actions, meeting_date)
    why = why_of(mdt, meeting_date, outcome)
    rows = []
    for i, a in enumerate(actions, 1):
        row = TaskRow(key=f"mdt-outcome:{outcome_id}:{i}", patient_id=patient_id, protocol=MDT_PROTOCOL,
                      version=meeting_date.isoformat(), source=f"mdt-outcome:{outcome_id}", kind=MDT_KIND,
                      title=title_of(a), priority=a.priority, status="open", raised_at=now,
                      due=dt.datetime.combine(a.due, dt.time(DUE_HOUR)), provider=mdt if a.role == "mdt" else None,
                      team=None, role=a.role, response=None, agreement=None, why=why,
                      evidence=[],  # evidence is record facts; the source (mdt-outcome:<id>) names the decision
                      condition_active=True, updated_at=now)
        session.add(row)
        session.flush()
        session.add(TaskEventRow(task_id=row.id, action="raised", actor=actor, from_status=None, to_status="open",
                                 note=why, at=now))
        rows.append(row)
    return rows


# ---- changes to existing tasks -----------------------------------------------------------------------
TASK_CHANGES = {"reassign": "Reassign", "close": "Close"}
MAX_CHANGES = 20


@dataclass
class TaskChange:
    task_id: int
    change: str                  # reassign | close
    role: str | None = None      # reassign: the care role it goes to (ACTION_ROLES)
    team: str | None = None      # reassign: the team, in words (optional)
    outcome: str | None = None   # close: engine.app.task_outcomes.OUTCOMES
    note: str | None = None      # the MDT's words (required to close as "not done")


def meeting_words(mdt: str, meeting_date: dt.date) -> str:
    return f"agreed at the {mdt} MDT case conference on {meeting_date.day} {meeting_date:%B %Y}"


def check_changes(session: Session, patient_id: int, changes: list[TaskChange]) -> dict[int, TaskRow]:
    """The tasks the changes name (task id -> row), or ActionError in words: each must be an open task of
    this patient, named once; a reassignment needs a care role, a close a coded outcome."""
    if len(changes) > MAX_CHANGES:
        raise ActionError(f"at most {MAX_CHANGES} task changes in one outcome")
    rows: dict[int, TaskRow] = {}
    for i, c in enumerate(changes, 1):
        row = session.get(TaskRow, c.task_id)
        if row is None or row.patient_id != patient_id:
            raise ActionError(f"task change {i}: task {c.task_id} is not one of this patient's tasks")
        if c.task_id in rows:
            raise ActionError(f"task change {i}: task {c.task_id} is changed twice")
        if row.status not in OPEN_STATUSES:
            raise ActionError(f"task change {i}: '{row.title}' is already {row.status}")
        if c.change == "reassign":
            if c.role not in ACTION_ROLES:
                raise ActionError(f"task change {i}: reassigning '{row.title}' needs the care role it goes to")
            if c.role == row.role and not (c.team or "").strip():
                raise ActionError(f"task change {i}: '{row.title}' is already with the {role_words(c.role)}")
        elif c.change == "close":
            if c.outcome not in OUTCOMES:
                raise ActionError(f"task change {i}: closing '{row.title}' needs an outcome ({', '.join(OUTCOMES.values())})")
            try:
                outcome_text(c.outcome, c.note)
            except OutcomeError as e:
                raise ActionError(f"task change {i}: {e}") from None
        else:
            raise ActionError(f"task change {i}: unknown change {c.change!r} (reassign or close)")
        rows[c.task_id] = row
    return rows


def _said(note: str | None, mdt: str, meeting_date: dt.date) -> str:
    note = " ".join((note or "").split())[:500]
    words = meeting_words(mdt, meeting_date)
    return f"{note} ({words})" if note else words[0].upper() + words[1:]


def apply_task_changes(session: Session, *, patient_id: int, mdt: str, meeting_date: dt.date,
                       changes: list[TaskChange], actor: str, now: dt.datetime) -> list[dict]:
    """Reassign or close the named open tasks (the caller commits); returns what was done, as the outcome
    keeps it: task id, title, change, from / to, the coded outcome and the words."""
    rows = check_changes(session, patient_id, changes)
    done = []
    for c in changes:
        row = rows[c.task_id]
        before = row.status
        said = _said(c.note, mdt, meeting_date)
        entry = {"task_id": row.id, "title": row.title, "change": c.change}
        if c.change == "reassign":
            old = " / ".join(x for x in (row.provider, row.team, row.role) if x)
            row.role = c.role
            row.team = " ".join((c.team or "").split())[:100] or None
            row.provider = mdt if c.role == MDT_ROLE else None  # the old provider served the old role
            new = " / ".join(x for x in (row.provider, row.team, row.role) if x)
            note = f"from {old} to {new}: {said}"
            session.add(TaskEventRow(task_id=row.id, action="reassigned", actor=actor, from_status=before,
                                     to_status=row.status, note=note, at=now))
            entry.update({"from": old, "to": new, "role": row.role, "team": row.team, "text": note})
        else:
            reason = outcome_text(c.outcome, said)
            row.status, row.closed_at, row.closed_reason, row.closed_by, row.outcome = "completed", now, reason, actor, c.outcome
            session.add(TaskEventRow(task_id=row.id, action="completed", actor=actor, from_status=before,
                                     to_status=row.status, note=reason, at=now))
            entry.update({"outcome": c.outcome, "text": reason})
        row.updated_at = now
        session.add(row)
        done.append(entry)
    return done
