"""Worklists (filter, sort by priority then due, paginate, CSV) and the task lifecycle
(engine.app.service.task_action: accept, complete, decline with reason, reassign, reopen)."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from sqlalchemy import case, func, or_
from sqlmodel import Session, select

from api.state import AppState
from api.deps import Principal, get_state, log_access, require, scoped
from api.responses import API_ERRORS, errors
from api.schemas import CompleteIn, DeclineIn, NoteIn, ReassignIn, ShortText, TaskDetailOut, WorklistOut
from api.views import PRIORITY_ORDER, event_out, task_out
from engine.app import practices
from engine.app.service import TaskActionError, task_action, task_history
from engine.app.task_outcomes import CLOSING_ACTIONS, completion_refusal
from engine.reports.csv_export import csv_text
from engine.registry.dialect import is_postgresql
from engine.registry.outputs import OPEN_STATUSES, TaskRow
from engine.registry.tables import PatientRow

router = APIRouter(tags=["worklists"], responses=API_ERRORS)
Status = Literal["open", "accepted", "completed", "declined", "resolved"]
Priority = Literal["urgent", "high", "routine", "low"]
TASK_ID = Path(..., ge=1, le=2**31 - 1)
CSV_LIMIT = 50_000


class Filters:
    def __init__(self, provider: ShortText | None = Query(None, description="Assigned provider, e.g. gp-practices"),
                 team: ShortText | None = Query(None), role: ShortText | None = Query(None, description="Assigned role, e.g. gp"),
                 mdt: ShortText | None = Query(None, description="The patient's MDT (or tasks assigned to that MDT)"),
                 practice: ShortText | None = Query(None, description="The patient's practice: ODS code, or words of its name"),
                 status: list[Status] | None = Query(None, description="Default: open and accepted"),
                 priority: list[Priority] | None = Query(None),
                 overdue: bool | None = Query(None, description="Only tasks past their SLA due time (or only those not)"),
                 protocol: ShortText | None = Query(None), nhs_number: str | None = Query(None, pattern=r"^[0-9]{10}$")):
        self.provider, self.team, self.role, self.mdt, self.practice = provider, team, role, mdt, practice
        self.status, self.priority, self.overdue, self.protocol, self.nhs_number = status, priority, overdue, protocol, nhs_number

    def query(self, who: Principal, now):
        q = scoped(select(TaskRow, PatientRow).join(PatientRow, PatientRow.id == TaskRow.patient_id), who)
        q = q.where(TaskRow.status.in_(self.status or OPEN_STATUSES))
        for col, value in ((TaskRow.provider, self.provider), (TaskRow.team, self.team), (TaskRow.role, self.role),
                           (TaskRow.protocol, self.protocol), (PatientRow.nhs_number, self.nhs_number)):
            if value:
                q = q.where(col == value)
        if self.practice:  # an ODS code, or (part of) the practice's name
            q = q.where(PatientRow.practice.in_(practices.codes_for(self.practice)))
        if self.mdt:
            q = q.where(or_(PatientRow.mdt == self.mdt, TaskRow.provider == self.mdt))
        if self.priority:
            q = q.where(TaskRow.priority.in_(self.priority))
        if self.overdue is not None:
            late = (TaskRow.due < now) & TaskRow.status.in_(OPEN_STATUSES)
            q = q.where(late if self.overdue else ~late)
        return q


def _ordered(q):
    rank = case(*[(TaskRow.priority == p, i) for i, p in enumerate(PRIORITY_ORDER)], else_=len(PRIORITY_ORDER))
    return q.order_by(rank, TaskRow.due, TaskRow.id)


@router.get("/worklist", response_model=WorklistOut)
def worklist(request: Request, f: Filters = Depends(), page: int = Query(1, ge=1, le=100000),
             page_size: int = Query(50, ge=1, le=500), who: Principal = Depends(require("worklist:read")),
             state: AppState = Depends(get_state)):
    """Tasks in your scope, by provider / team / role / MDT / practice; sorted by priority then due."""
    now = state.now()
    q = f.query(who, now)
    with Session(state.engines.read) as s:
        total = s.exec(select(func.count()).select_from(q.subquery())).one()
        rows = s.exec(_ordered(q).offset((page - 1) * page_size).limit(page_size)).all()
        items = [task_out(t, p, now) for t, p in rows]
    log_access(state, request, who, "read", "worklist", patients=[i.nhs_number for i in items],
               detail={"total": total, "page": page})
    return WorklistOut(total=total, page=page, page_size=page_size, items=items)


CSV_COLUMNS = ["task_id", "priority", "due", "overdue", "status", "title", "nhs_number", "patient", "practice",
               "practice_name", "mdt",
               "provider", "team", "role", "response", "protocol", "version", "why"]


def worklist_csv_response(items: list) -> Response:
    """The worklist CSV for the API and the web page alike (engine.reports.csv_export: formulas neutralised)."""
    rows = ([i.id, i.priority, i.due.isoformat(sep=" ", timespec="minutes"), "yes" if i.overdue else "no", i.status,
             i.title, i.nhs_number, i.patient_name, i.practice, i.practice_name, i.mdt, i.provider, i.team, i.role, i.sla.response,
             i.protocol, i.version, i.why] for i in items)
    return Response(csv_text(CSV_COLUMNS, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="worklist.csv"', "Cache-Control": "no-store"})


@router.get("/worklist.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
def worklist_csv(request: Request, f: Filters = Depends(), who: Principal = Depends(require("worklist:read")),
                 state: AppState = Depends(get_state)):
    """The same worklist as CSV (all pages, up to 50,000 rows). Cells a spreadsheet could run as a formula
    (starting =, +, -, @, tab, CR) are prefixed with a single quote."""
    now = state.now()
    with Session(state.engines.read) as s:
        rows = s.exec(_ordered(f.query(who, now)).limit(CSV_LIMIT)).all()
        items = [task_out(t, p, now) for t, p in rows]
    log_access(state, request, who, "read", "worklist-csv", patients=[i.nhs_number for i in items], detail={"rows": len(items)})
    return worklist_csv_response(items)


NO_TASK = "no task with that id in your scope"


def _task_in_scope(s: Session, state: AppState, request: Request, who: Principal, task_id: int, lock: bool = False):
    """The task and its patient, or 404: an unknown task and one whose patient is outside the user's
    scope look the same (both logged, the log saying which)."""
    q = select(TaskRow, PatientRow).join(PatientRow, PatientRow.id == TaskRow.patient_id).where(TaskRow.id == task_id)
    row = s.exec(q).first()
    if row is None or who.pseudonymised or not who.scope.allows(row[1]):
        log_access(state, request, who, "denied", "task", patients=[row[1].nhs_number] if row else [], status=404,
                   detail={"reason": "patient outside the user's scope" if row else "no such task", "task": task_id})
        raise HTTPException(status_code=404, detail=NO_TASK)
    t, p = row
    if lock and is_postgresql(s):
        # The same lock re-evaluation takes: a person's action and the engine never interleave.
        s.exec(select(PatientRow).where(PatientRow.id == p.id).with_for_update()).first()
        s.exec(select(TaskRow).where(TaskRow.id == task_id).with_for_update()).first()
        s.refresh(t)
    return t, p


RESP = errors(**{"404": "No such task in your scope", "409": "Not allowed in the task's current status"})


@router.get("/tasks/{task_id}", response_model=TaskDetailOut, responses=RESP)
def get_task(request: Request, task_id: int = TASK_ID, who: Principal = Depends(require("worklist:read")),
             state: AppState = Depends(get_state)):
    """A task with its evidence and full history (who changed what, when, why)."""
    with Session(state.engines.read) as s:
        t, p = _task_in_scope(s, state, request, who, task_id)
        out = task_out(t, p, state.now(), TaskDetailOut, evidence=t.evidence or [],
                       history=[event_out(e) for e in task_history(s, t.id)])
    log_access(state, request, who, "read", "task", patients=[p.nhs_number], detail={"task": task_id})
    return out


def _act(request: Request, state: AppState, who: Principal, task_id: int, action: str, **kw) -> TaskDetailOut:
    with Session(state.engines.read) as s:  # refusals are logged outside the write transaction below
        t, p = _task_in_scope(s, state, request, who, task_id)
        why = completion_refusal(t.role, who.role, who.clinical_roles, action) if action in CLOSING_ACTIONS else None
    if why:
        log_access(state, request, who, "denied", "task", patients=[p.nhs_number], status=403,
                   detail={"task": task_id, "action": action, "reason": why})
        raise HTTPException(status_code=403, detail=why)
    with Session(state.engines.write) as s:
        t, p = _task_in_scope(s, state, request, who, task_id, lock=True)
        if action in CLOSING_ACTIONS and (why := completion_refusal(t.role, who.role, who.clinical_roles, action)):
            raise HTTPException(status_code=409, detail=f"the task was reassigned meanwhile: {why}")
        try:
            task_action(s, task_id, action, who.username, now=state.now(), **kw)
        except TaskActionError as e:
            s.rollback()
            raise HTTPException(status_code=409 if "cannot" in str(e) else 422, detail=str(e)) from None
        log_access(state, request, who, "write", "task", patients=[p.nhs_number], session=s,
                   detail={"task": task_id, "action": action})
        s.commit()
        s.refresh(t)
        return task_out(t, p, state.now(), TaskDetailOut, evidence=t.evidence or [],
                        history=[event_out(e) for e in task_history(s, t.id)])


@router.post("/tasks/{task_id}/accept", response_model=TaskDetailOut, responses=RESP)
def accept(request: Request, body: NoteIn | None = None, task_id: int = TASK_ID,
           who: Principal = Depends(require("task:act")), state: AppState = Depends(get_state)):
    return _act(request, state, who, task_id, "accept", reason=body.note if body else None)


@router.post("/tasks/{task_id}/complete", response_model=TaskDetailOut,
             responses={**RESP, **errors(**{"403": "Only the task's role, a care coordinator or a clinical lead may complete it"})})
def complete(body: CompleteIn, request: Request, task_id: int = TASK_ID,
             who: Principal = Depends(require("task:act")), state: AppState = Depends(get_state)):
    """Complete with a coded outcome (done / not-done with the reason in `note` / declined-by-patient /
    not-appropriate). Only a person working in the task's role (their care roles), a care coordinator or a
    clinical lead may; anyone else gets 403 with the reason, and asks for the task to be reassigned."""
    return _act(request, state, who, task_id, "complete", reason=body.note, outcome=body.outcome)


@router.post("/tasks/{task_id}/decline", response_model=TaskDetailOut,
             responses={**RESP, **errors(**{"403": "Only the task's role, a care coordinator or a clinical lead may decline it"})})
def decline(body: DeclineIn, request: Request, task_id: int = TASK_ID, who: Principal = Depends(require("task:act")),
            state: AppState = Depends(get_state)):
    """Decline with a reason (required); the task is not raised again while the same need continues. The same
    people who may complete it may decline it; anyone else gets 403 and asks for it to be reassigned."""
    return _act(request, state, who, task_id, "decline", reason=body.reason)


@router.post("/tasks/{task_id}/reopen", response_model=TaskDetailOut, responses=RESP)
def reopen(request: Request, body: NoteIn | None = None, task_id: int = TASK_ID,
           who: Principal = Depends(require("task:act")), state: AppState = Depends(get_state)):
    return _act(request, state, who, task_id, "reopen", reason=body.note if body else None)


@router.post("/tasks/{task_id}/reassign", response_model=TaskDetailOut, responses=RESP)
def reassign(body: ReassignIn, request: Request, task_id: int = TASK_ID, who: Principal = Depends(require("task:act")),
             state: AppState = Depends(get_state)):
    """Give the task to another provider / team / role (at least one); the SLA due time is kept."""
    return _act(request, state, who, task_id, "reassign", reason=body.reason, provider=body.provider, team=body.team,
                role=body.role)
