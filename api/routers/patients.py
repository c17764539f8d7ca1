"""Patients and care plans (stored evaluations from engine.app.service), with a plain-language
variant for the patient."""
from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import func, or_
from sqlmodel import Session, select

from api.state import AppState
from api.deps import Principal, get_state, log_access, patient_in_scope, require, scoped
from api.responses import API_ERRORS, errors
from api.schemas import (NHS_PATTERN, CarePlanOut, DataProblemOut, DiffOut, FlagOut, PatientListItem, PatientOut, PatientPage,
                         PlainCarePlanOut, PlainItem, PlainSection, ProtocolPlanOut, ShortText, TaskOut)
from api.views import flag_out, name_of, patient_out, task_out
from engine import metrics
from engine.app import practices
from engine.app.service import EvaluationFailed, record_failure, reevaluate
from engine.registry.pending import open_problems, pending_seq
from engine.registry.outputs import OPEN_STATUSES, FlagRow, PatientEvaluationRow, TaskRow, patient_tasks_query
from engine.registry.tables import PatientRow

router = APIRouter(prefix="/patients", tags=["patients"], responses=API_ERRORS)
NHS = Path(..., pattern=NHS_PATTERN, description="10-digit NHS number")
NOT_FOUND = errors(**{"404": "No patient with that NHS number in your scope (absent and out of scope look the same)"})


@router.get("", response_model=PatientPage)
def list_patients(request: Request, practice: ShortText | None = Query(None, description="ODS code, or words of the practice's name, e.g. 'densham'"), mdt: ShortText | None = None,
                  locality: ShortText | None = None, page: int = Query(1, ge=1, le=100000),
                  page_size: int = Query(50, ge=1, le=500),
                  who: Principal = Depends(require("patient:read")), state: AppState = Depends(get_state),
                  name: ShortText | None = Query(None, description="Part of the family or given name (any case), e.g. 'beg' or 'amina beg'"),
                  born: dt.date | None = Query(None, description="Date of birth")):
    """Patients in your scope, with their open task and red flag counts; find one by name and/or date of birth."""
    q = scoped(select(PatientRow), who)
    for word in (name or "").split()[:3]:  # every word must match the start of a name ("am beg" finds Amina Begum)
        like = word.lower().replace("\\", "").replace("%", "").replace("_", "") + "%"
        q = q.where(or_(func.lower(PatientRow.family_name).like(like), func.lower(PatientRow.given_name).like(like)))
    if born:
        q = q.where(PatientRow.birth_date == born)
    if practice:  # an ODS code, or (part of) the practice's name
        q = q.where(PatientRow.practice.in_(practices.codes_for(practice)))
    if mdt:
        q = q.where(PatientRow.mdt == mdt)
    if locality:
        q = q.where(PatientRow.locality == locality)
    with Session(state.engines.read) as s:
        total = s.exec(select(func.count()).select_from(q.subquery())).one()
        rows = list(s.exec(q.order_by(PatientRow.family_name, PatientRow.nhs_number).offset((page - 1) * page_size).limit(page_size)))
        ids = [r.id for r in rows]
        open_tasks = dict(s.exec(select(TaskRow.patient_id, func.count()).where(TaskRow.patient_id.in_(ids),
                                 TaskRow.status.in_(OPEN_STATUSES)).group_by(TaskRow.patient_id)).all()) if ids else {}
        red = dict(s.exec(select(FlagRow.patient_id, func.count()).where(FlagRow.patient_id.in_(ids), FlagRow.active,
                          FlagRow.level == "red").group_by(FlagRow.patient_id)).all()) if ids else {}
    log_access(state, request, who, "read", "patient-list", patients=[r.nhs_number for r in rows])
    return PatientPage(total=total, page=page, page_size=page_size, items=[
        PatientListItem(**patient_out(r).model_dump(), open_tasks=open_tasks.get(r.id, 0), red_flags=red.get(r.id, 0))
        for r in rows])


@router.get("/{nhs_number}", response_model=PatientOut, responses=NOT_FOUND)
def get_patient(request: Request, nhs_number: str = NHS, who: Principal = Depends(require("patient:read")),
                state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, nhs_number, "patient")
        out = patient_out(p)
    log_access(state, request, who, "read", "patient", patients=[nhs_number])
    return out


def _care_plan(s: Session, p: PatientRow, now: dt.datetime) -> CarePlanOut:
    evals = s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == p.id)
                   .order_by(PatientEvaluationRow.protocol)).all()
    tasks = s.exec(patient_tasks_query(p.id).order_by(TaskRow.due)).all()
    flags = s.exec(select(FlagRow).where(FlagRow.patient_id == p.id, FlagRow.active).order_by(FlagRow.id)).all()
    problems = [DataProblemOut(nhs_number=p.nhs_number, practice=p.practice, mdt=p.mdt, kind=d.kind, message=d.message,
                               protocol=d.protocol, fact_source_system=d.fact_source_system, fact_source_id=d.fact_source_id,
                               fact_problem=d.fact_problem, detected_at=d.detected_at) for d in open_problems(s, [p.id])]
    return CarePlanOut(patient=patient_out(p),
                       protocols=[ProtocolPlanOut(**e.result, reference_date=e.reference_date, evaluated_at=e.evaluated_at)
                                  for e in evals],
                       open_tasks=[task_out(t, p, now) for t in tasks],
                       active_flags=[flag_out(f, p) for f in flags],
                       evaluation_pending=pending_seq(s, p.id) is not None, data_problems=problems)


@router.get("/{nhs_number}/care-plan", response_model=CarePlanOut, responses=NOT_FOUND)
def care_plan(request: Request, nhs_number: str = NHS, who: Principal = Depends(require("patient:read")),
              state: AppState = Depends(get_state)):
    """The patient's care plan under every protocol in force (latest stored evaluation), with
    why-lines, open tasks and active flags. POST .../reevaluate to refresh it as of today."""
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, nhs_number, "care-plan")
        out = _care_plan(s, p, state.now())
    log_access(state, request, who, "read", "care-plan", patients=[nhs_number])
    return out


def _day(d: dt.date | None) -> str:
    return f"{d.day} {d:%B %Y}" if d else ""


PLAIN_STATUS = {"met": "done", "due": "due", "overdue": "overdue", "excepted": "not-needed", "unknown": "unknown"}


GP_PROVIDERS = {None, "", "gp-practice", "gp-practices"}
LONG_OVERDUE = dt.timedelta(days=365)


def _who_invites(item) -> str:
    """Who books it: the GP practice, or the named service (eye screening books its own appointments)."""
    a = item.assigned
    if a.provider in GP_PROVIDERS:
        return "your GP practice"
    return f"the {(a.team or a.provider).replace('-', ' ')} service"


def _sentence(text: str) -> str:
    return text.strip().rstrip(".:;")


def plain_plan(p: PatientRow, plan: CarePlanOut, today: dt.date | None = None) -> PlainCarePlanOut:
    today = today or dt.date.today()
    sections = []
    for pr in plan.protocols:
        if not pr.on_register:
            continue
        items = []
        for item in pr.care_plan:
            what = item.patient_text or item.title
            who = _who_invites(item)
            if item.status == "met":
                text = f"Done on {_day(item.last_done)}. Next one due by {_day(item.next_due)}."
            elif item.status == "due":
                text = f"Due by {_day(item.next_due)}. {who[0].upper() + who[1:]} will invite you."
            elif item.status == "overdue":
                if item.last_done is None:
                    text = "Not done yet."  # never recorded: a date from years ago would only confuse
                elif item.next_due and today - item.next_due > LONG_OVERDUE:
                    text = f"Overdue: last done on {_day(item.last_done)}."
                else:
                    text = "Overdue" + (f" since {_day(item.next_due)}" if item.next_due else "") + "."
                text += f" Please contact {who} to arrange it." if who == "your GP practice" else \
                    f" {who[0].upper() + who[1:]} will invite you; if you have not heard from them, please tell your GP practice."
            elif item.status == "unknown":  # the practice's records cannot show it yet (a codelist is not supplied)
                text = "Your care team will check whether this is due."
            else:
                text = "Not needed at the moment, as agreed with you. You can change your mind at any time."
            items.append(PlainItem(what=what, status=PLAIN_STATUS[item.status], text=text))
        goals = [_sentence(g.patient_text or g.title) + (": you are meeting this goal." if g.status == "achieved"
                                                         else ": not met yet; your care team will talk with you about it.")
                 for g in pr.goals if g.status != "unknown"]
        if not items and not goals:
            continue  # a register with nothing for the patient to do (e.g. risk stratification): no empty heading
        sections.append(PlainSection(title=f"Your {pr.title.lower()} plan" if pr.title else "Your care plan", items=items, goals=goals))
    lines = [f"Care plan for {name_of(p) or 'you'}"]
    for sec in sections:
        lines += ["", sec.title]
        lines += [f"- {i.what} {i.text}" for i in sec.items]
        if sec.goals:
            lines += ["", "Your goals:"] + [f"- {g}" for g in sec.goals]
    if not sections:
        lines.append("There is nothing on your care plan at the moment.")
    return PlainCarePlanOut(nhs_number=p.nhs_number, name=name_of(p), sections=sections, text="\n".join(lines))


@router.get("/{nhs_number}/care-plan/plain", response_model=PlainCarePlanOut, responses=NOT_FOUND)
def care_plan_plain(request: Request, nhs_number: str = NHS, who: Principal = Depends(require("patient:read")),
                    state: AppState = Depends(get_state)):
    """The care plan in plain language for the patient (no codes, no clinical shorthand)."""
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, nhs_number, "care-plan")
        now = state.now()
        out = plain_plan(p, _care_plan(s, p, now), now.date())
    log_access(state, request, who, "read", "care-plan-plain", patients=[nhs_number])
    return out


@router.post("/{nhs_number}/reevaluate", response_model=DiffOut, responses=NOT_FOUND)
def reevaluate_patient(request: Request, nhs_number: str = NHS, who: Principal = Depends(require("patient:reevaluate")),
                       state: AppState = Depends(get_state)):
    """Re-evaluate the patient as of now (e.g. a check fell due since the last delivery); returns the changes."""
    with Session(state.engines.read) as s:
        patient_in_scope(s, state, request, who, nhs_number, "reevaluate")
    now = state.now()
    with Session(state.engines.write) as s, Session(state.engines.read) as rs:
        try:  # read and evaluated outside the write transaction; written after checking nothing changed
            diff, _ = reevaluate(s, nhs_number, state.library, as_of=now.date(), now=now, read_session=rs)
        except EvaluationFailed as failed:  # this patient's data problem: recorded on them, answered, never a 500
            s.rollback()
            metrics.EVALUATIONS.labels("data-problem").inc()
            record_failure(s, failed, now)
            log_access(state, request, who, "write", "reevaluate", patients=[nhs_number], session=s,
                       detail={"data_problem": failed.message})
            s.commit()
            return DiffOut(nhs_number=nhs_number, data_problem=DataProblemOut(**failed.as_dict(), detected_at=now))
        log_access(state, request, who, "write", "reevaluate", patients=[nhs_number], session=s,
                   detail={"opened": len(diff.tasks_opened), "closed": len(diff.tasks_closed)})
        s.commit()
    metrics.EVALUATIONS.labels("evaluated").inc()
    return DiffOut(**diff.as_dict())


@router.get("/{nhs_number}/tasks", response_model=list[TaskOut], responses=NOT_FOUND)
def patient_tasks(request: Request, nhs_number: str = NHS, include_closed: bool = False,
                  who: Principal = Depends(require("patient:read")), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, nhs_number, "task")
        out = [task_out(t, p, state.now()) for t in s.exec(patient_tasks_query(p.id, include_closed).order_by(TaskRow.due))]
    log_access(state, request, who, "read", "task", patients=[nhs_number])
    return out


@router.get("/{nhs_number}/flags", response_model=list[FlagOut], responses=NOT_FOUND)
def patient_flags(request: Request, nhs_number: str = NHS, include_cleared: bool = False,
                  who: Principal = Depends(require("patient:read")), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, nhs_number, "flag")
        q = select(FlagRow).where(FlagRow.patient_id == p.id)
        if not include_cleared:
            q = q.where(FlagRow.active)
        out = [flag_out(f, p) for f in s.exec(q.order_by(FlagRow.id))]
    log_access(state, request, who, "read", "flag", patients=[nhs_number])
    return out
