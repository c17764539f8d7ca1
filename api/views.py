"""Rows -> response bodies, shared by the routers."""
from __future__ import annotations

import datetime as dt

from api.schemas import FlagOut, PatientOut, SlaOut, TaskEventOut, TaskOut
from sqlmodel import Session, select

from engine.registry.outputs import OPEN_STATUSES, FlagRow, TaskEventRow, TaskRow
from engine.registry.tables import PatientRow

PRIORITY_ORDER = ("urgent", "high", "routine", "low")


def age_on(birth: dt.date | None, day: dt.date) -> int | None:
    if birth is None:
        return None
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def name_of(p: PatientRow) -> str | None:
    name = " ".join(x for x in (p.given_name, p.family_name) if x)
    return name or None


def patient_out(p: PatientRow) -> PatientOut:
    return PatientOut(nhs_number=p.nhs_number, given_name=p.given_name, family_name=p.family_name, birth_date=p.birth_date,
                      sex=p.sex, practice=p.practice, locality=p.locality, mdt=p.mdt, death_date=p.death_date)


def is_overdue(t: TaskRow, now: dt.datetime) -> bool:
    return t.status in OPEN_STATUSES and t.due < now


def task_out(t: TaskRow, p: PatientRow, now: dt.datetime, cls=TaskOut, **extra) -> TaskOut:
    overdue = is_overdue(t, now)
    hours_left = round((t.due - now).total_seconds() / 3600, 1)
    return cls(id=t.id, key=t.key, nhs_number=p.nhs_number, patient_name=name_of(p), practice=p.practice, mdt=p.mdt,
               protocol=t.protocol, version=t.version, source=t.source, kind=t.kind, title=t.title, priority=t.priority,
               status=t.status, raised_at=t.raised_at, due=t.due, overdue=overdue,
               sla=SlaOut(response=t.response, agreement=t.agreement, due=t.due, overdue=overdue, hours_left=hours_left),
               provider=t.provider, team=t.team, role=t.role, why=t.why, closed_at=t.closed_at,
               closed_reason=t.closed_reason, closed_by=t.closed_by, outcome=t.outcome, updated_at=t.updated_at, **extra)


def event_out(e: TaskEventRow) -> TaskEventOut:
    return TaskEventOut(at=e.at, action=e.action, actor=e.actor, from_status=e.from_status, to_status=e.to_status, note=e.note)


def flag_out(f: FlagRow, p: PatientRow) -> FlagOut:
    return FlagOut(id=f.id, key=f.key, nhs_number=p.nhs_number, protocol=f.protocol, version=f.version, source=f.source,
                   kind=f.kind, code=f.code, level=f.level, text=f.text, why=f.why, active=f.active, raised_at=f.raised_at,
                   cleared_at=f.cleared_at)


def task_owners(s: Session, task_ids: list[int]) -> dict[int, dict]:
    """Who holds or closed each task, from its history: the last accept, and the last close with its reason."""
    out: dict[int, dict] = {}
    if not task_ids:
        return out
    for e in s.exec(select(TaskEventRow).where(TaskEventRow.task_id.in_(task_ids)).order_by(TaskEventRow.id)):
        o = out.setdefault(e.task_id, {})
        if e.action == "accepted":
            o["accepted"] = (e.actor, e.at)
        elif e.action in ("completed", "declined"):
            o["closed"] = (e.action, e.actor, e.at, e.note)
        elif e.action == "reopened":
            o.pop("closed", None)
            o.pop("accepted", None)
    return out
