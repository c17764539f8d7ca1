"""Actions agreed at an MDT case conference become tasks (issue 16 item 6).

An outcome recorded for a patient may carry action entries: an action type from a fixed list, the care
role that does it, a due date, a priority and optional words. Each becomes a real task on the worklist
(kind `mdt-action`), its source the outcome (`mdt-outcome:<id>`), its why "Agreed at the <MDT> MDT case
conference on <date>: <what was decided>". These tasks are people's decisions, not a protocol's: a
re-evaluation never resolves them (engine.app.service._reconcile_tasks leaves `mdt-action` tasks alone);
they are completed or declined like any other task.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlmodel import Session

from engine.registry.outputs import TaskEventRow, TaskRow

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
