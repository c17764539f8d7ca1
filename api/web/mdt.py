"""MDT pages: the MDTs a user can see, and one MDT's case conference: who to discuss and why, each
patient's summary across care settings and current care plan, and recording the outcome.

The list and the outcome go through the API's `api.routers.mdt` functions (membership check,
patient scope, access log); the summaries are logged as a read of those patients.
"""
from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from pydantic import ValidationError
from sqlmodel import Session, select

from api.deps import Principal, log_access
from api.routers import mdt as mapi
from api.schemas import OutcomeIn
from api.web.common import PREFIX, PageRoute, check_csrf, need, page_user, redirect, render, state_of
from api.web.summary import SETTING_NAMES, summarise
from api.views import PRIORITY_ORDER
from engine.app.mdt_actions import ACTION_ROLES, ACTION_TYPES, MAX_CHANGES
from engine.app.task_outcomes import OUTCOMES
from engine.registry.ingest import load_record
from engine.registry.outputs import OPEN_STATUSES, PatientEvaluationRow, TaskRow
from engine.registry.tables import PatientRow

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
Mdt = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,100}$")]


@router.get("/mdt")
def mdt_list(request: Request, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "mdt:read")
    mdts = mapi.list_mdts(who, state)
    if len(mdts) == 1 and who.mdt:
        return redirect(request, f"{PREFIX}/mdt/{mdts[0].mdt}")
    return render(request, "mdt_list.html", who, page_title="MDT case conferences", mdts=mdts)


def _plan_at_a_glance(rows: list[PatientEvaluationRow]) -> list[dict]:
    out = []
    for e in rows:
        r = e.result or {}
        if not r.get("on_register"):
            continue
        items = r.get("care_plan", [])
        out.append({"title": r.get("title") or e.protocol, "version": e.version, "reference_date": e.reference_date,
                    "overdue": [i["title"] for i in items if i["status"] == "overdue"],
                    "due": [i["title"] for i in items if i["status"] == "due"],
                    "met": sum(i["status"] == "met" for i in items),
                    "excepted": sum(i["status"] == "excepted" for i in items),
                    "goals": [(g["title"], g["status"]) for g in r.get("goals", [])]})
    return out


@router.get("/mdt/{mdt}")
def case_conference_page(request: Request, mdt: Mdt, meeting_date: dt.date | None = Query(None),
                         who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "mdt:read")
    if meeting_date is not None and not dt.date(1900, 1, 1) <= meeting_date <= dt.date(2200, 12, 31):
        raise HTTPException(status_code=422, detail="meeting date out of range")
    conf = mapi.case_conference(request, mdt, meeting_date, who, state)  # membership + scope + access log
    summaries, plans, open_tasks = {}, {}, {}
    with Session(state.engines.read) as s:
        for c in conf.patients:
            rec = load_record(s, c.nhs_number)
            if rec is not None:
                summaries[c.nhs_number] = summarise(rec, state.library, conf.meeting_date)
            pid = s.exec(select(PatientRow.id).where(PatientRow.nhs_number == c.nhs_number)).one()
            plans[c.nhs_number] = _plan_at_a_glance(list(s.exec(select(PatientEvaluationRow).where(
                PatientEvaluationRow.patient_id == pid).order_by(PatientEvaluationRow.protocol))))
            open_tasks[c.nhs_number] = _ordered_tasks(s.exec(select(TaskRow).where(
                TaskRow.patient_id == pid, TaskRow.status.in_(OPEN_STATUSES))).all())[:MAX_CHANGES]
    if conf.patients:
        log_access(state, request, who, "read", "patient-summary", patients=[c.nhs_number for c in conf.patients],
                   detail={"mdt": mdt, "via": "web case conference"})
    return render(request, "case_conference.html", who, page_title=f"Case conference: {mdt}", conf=conf,
                  summaries=summaries, plans=plans, settings=SETTING_NAMES, action_types=ACTION_TYPES,
                  action_roles=ACTION_ROLES, open_tasks=open_tasks, close_outcomes=OUTCOMES)


def _ordered_tasks(rows) -> list:
    """A patient's open tasks as the MDT reads them: most urgent, then earliest due, first."""
    rank = {p: i for i, p in enumerate(PRIORITY_ORDER)}
    return sorted(rows, key=lambda t: (rank.get(t.priority, len(rank)), t.due, t.id))


@router.post("/mdt/{mdt}/outcomes")
def record_outcome_form(request: Request, mdt: Mdt, nhs_number: str = Form(...), meeting_date: str = Form(...),
                        outcome: str = Form("", max_length=4000), actions: str = Form("", max_length=4000),
                        action_type: list[str] = Form([]), action_role: list[str] = Form([]),
                        action_due: list[str] = Form([]), action_priority: list[str] = Form([]),
                        action_detail: list[str] = Form([]),
                        change_task: list[str] = Form([]), change_kind: list[str] = Form([]),
                        change_role: list[str] = Form([]), change_outcome: list[str] = Form([]),
                        change_note: list[str] = Form([]),
                        csrf_token_: str = Form("", alias="csrf_token"), who: Principal = Depends(page_user)):
    """Record the outcome; each filled action row (type, role, due date) becomes a task on the worklist, each
    existing task marked "reassign" or "close" is changed in the MDT's name."""
    check_csrf(request, csrf_token_)
    need(request, who, "mdt:write")
    state = state_of(request)
    back = f"{PREFIX}/mdt/{mdt}?meeting_date={meeting_date}" if _is_day(meeting_date) else f"{PREFIX}/mdt/{mdt}"
    here = f"{back}#p-{nhs_number}" if nhs_number.isdigit() else back
    rows = _action_rows(action_type, action_role, action_due, action_priority, action_detail)
    if isinstance(rows, str):
        return redirect(request, here, flash=f"The outcome was not recorded: {rows}")
    changes = _change_rows(change_task, change_kind, change_role, change_outcome, change_note)
    if isinstance(changes, str):
        return redirect(request, here, flash=f"The outcome was not recorded: {changes}")
    try:
        body = OutcomeIn(nhs_number=nhs_number, meeting_date=meeting_date, outcome=outcome.strip(),
                         actions=actions.strip() or None, action_items=rows, task_changes=changes)
    except ValidationError as e:
        locs = [err["loc"][:1] for err in e.errors()]
        problem = ("write what the MDT decided" if ("outcome",) in locs
                   else "check each changed task's new role or outcome" if ("task_changes",) in locs
                   else "check each action's type, role and due date")
        return redirect(request, here, flash=f"The outcome was not recorded: {problem}.")
    try:
        out = mapi.record_outcome(body, request, mdt, who, state)  # membership + scope + access log
    except HTTPException as e:
        if e.status_code != 422:
            raise
        return redirect(request, here, flash=f"The outcome was not recorded: {e.detail}.")
    made = f" {len(out.tasks)} task{'' if len(out.tasks) == 1 else 's'} added to the worklist." if out.tasks else ""
    for kind, words in (("reassign", "reassigned"), ("close", "closed")):
        n = sum(c.change == kind for c in out.task_changes)
        made += f" {n} task{'' if n == 1 else 's'} {words}." if n else ""
    return redirect(request, f"{back}#p-{out.nhs_number}", flash=f"Outcome recorded for {out.nhs_number}.{made}")


def _action_rows(types, roles, dues, priorities, details) -> list[dict] | str:
    """The filled action rows of the form (a row with no action type is empty), or what is missing, in words."""
    rows = []
    for i, kind in enumerate(types[:10]):
        role, due = (roles[i] if i < len(roles) else ""), (dues[i] if i < len(dues) else "")
        if not kind.strip():
            if role or due:
                return f"action {i + 1} has no action type."
            continue
        if not role or not due:
            return f"action {i + 1} needs who does it and a due date."
        rows.append({"type": kind, "role": role, "due": due,
                     "priority": (priorities[i] if i < len(priorities) else "") or "routine",
                     "detail": ((details[i] if i < len(details) else "").replace("\x00", "").strip() or None)})
    return rows


def _change_rows(tasks, kinds, roles, outcomes, notes) -> list[dict] | str:
    """The existing tasks marked to reassign or close (a row left at "no change" is skipped), or what is
    missing, in words."""
    rows = []
    for i, task in enumerate(tasks[:MAX_CHANGES]):
        kind = (kinds[i] if i < len(kinds) else "").strip()
        if not kind:
            continue
        if not task.isdigit():
            return "a changed task is not one of the listed tasks."
        role, code = (roles[i] if i < len(roles) else ""), (outcomes[i] if i < len(outcomes) else "")
        note = (notes[i] if i < len(notes) else "").replace("\x00", "").strip() or None
        if kind == "reassign" and not role:
            return f"changed task {i + 1}: choose the role it goes to."
        if kind == "close" and not code:
            return f"changed task {i + 1}: choose the outcome it is closed with."
        rows.append({"task_id": int(task), "change": kind, "role": role or None if kind == "reassign" else None,
                     "outcome": code or None if kind == "close" else None, "note": note})
    return rows


def _is_day(s: str) -> bool:
    try:
        dt.date.fromisoformat(s)
        return True
    except ValueError:
        return False
