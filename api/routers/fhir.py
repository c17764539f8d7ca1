"""FHIR R4 out: CarePlan, Task, Flag, MeasureReport (individual and summary), validated with
fhir.resources.R4B. Searches return a `searchset` Bundle. Content type application/fhir+json."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session, select

from engine.app import fhir_out
from api.state import AppState
from engine.app.audit import figures
from engine.app.audit_sql import live_figures
from api.deps import Principal, get_state, log_access, patient_in_scope, require
from api.routers.worklists import NO_TASK
from api.responses import API_ERRORS, errors
from api.schemas import NHS_PATTERN, ShortText
from engine.engines.derive import Context
from engine.evaluation.outputs import ProtocolResult
from engine.ir import nodes as ir
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskEventRow, TaskRow, patient_tasks_query
from engine.registry.tables import PatientRow

router = APIRouter(prefix="/fhir", tags=["fhir"], responses=API_ERRORS)
FHIR_JSON = "application/fhir+json"
PATIENT = Query(..., pattern=NHS_PATTERN, description="NHS number")
RESP = {200: {"content": {FHIR_JSON: {}}}, **errors(**{"404": "No such patient (or task) in your scope"})}


def fhir(content: dict) -> JSONResponse:
    return JSONResponse(content=content, media_type=FHIR_JSON)


def _period(state: AppState, protocol: str, reference: dt.date) -> tuple[dt.date, dt.date]:
    p = state.library.find(protocol)
    ctx = Context.as_of(reference, p.period if p else ir.Duration(12, "months"), None)
    return ctx.period_start, ctx.period_end


@router.get("/CarePlan", response_class=JSONResponse, responses=RESP)
def care_plans(request: Request, patient: str = PATIENT, who: Principal = Depends(require("patient:read")),
               state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, patient, "fhir-careplan")
        evals = s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == p.id)
                       .order_by(PatientEvaluationRow.protocol)).all()
        out = fhir_out.bundle([fhir_out.care_plan(p, ProtocolResult(**e.result), e.reference_date, e.evaluated_at) for e in evals])
    log_access(state, request, who, "read", "fhir-careplan", patients=[patient])
    return fhir(out)


@router.get("/Task", response_class=JSONResponse, responses=RESP)
def tasks(request: Request, patient: str = PATIENT, include_closed: bool = False,
          who: Principal = Depends(require("patient:read")), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, patient, "fhir-task")
        rows = s.exec(patient_tasks_query(p.id, include_closed).order_by(TaskRow.id)).all()
        out = fhir_out.bundle([fhir_out.task(t, p) for t in rows])
    log_access(state, request, who, "read", "fhir-task", patients=[patient])
    return fhir(out)


@router.get("/Task/{task_id}", response_class=JSONResponse, responses=RESP)
def task(request: Request, task_id: int = Path(..., ge=1, le=2**31 - 1), who: Principal = Depends(require("patient:read")),
         state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        row = s.exec(select(TaskRow, PatientRow).join(PatientRow, PatientRow.id == TaskRow.patient_id)
                     .where(TaskRow.id == task_id)).first()
        if row is None or who.pseudonymised or not who.scope.allows(row[1]):  # as /tasks/{id}: absent = out of scope
            log_access(state, request, who, "denied", "fhir-task", patients=[row[1].nhs_number] if row else [], status=404,
                       detail={"reason": "patient outside the user's scope" if row else "no such task", "task": task_id})
            raise HTTPException(status_code=404, detail=NO_TASK)
        t, p = row
        history = s.exec(select(TaskEventRow).where(TaskEventRow.task_id == t.id).order_by(TaskEventRow.id)).all()
        out = fhir_out.task(t, p, list(history))
    log_access(state, request, who, "read", "fhir-task", patients=[p.nhs_number])
    return fhir(out)


@router.get("/Flag", response_class=JSONResponse, responses=RESP)
def flags(request: Request, patient: str = PATIENT, include_inactive: bool = False,
          who: Principal = Depends(require("patient:read")), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, patient, "fhir-flag")
        q = select(FlagRow).where(FlagRow.patient_id == p.id)
        if not include_inactive:
            q = q.where(FlagRow.active)
        out = fhir_out.bundle([fhir_out.flag(f, p) for f in s.exec(q.order_by(FlagRow.id))])
    log_access(state, request, who, "read", "fhir-flag", patients=[patient])
    return fhir(out)


@router.get("/MeasureReport", response_class=JSONResponse, responses=RESP)
def individual_reports(request: Request, patient: str = PATIENT, measure: ShortText | None = None,
                       who: Principal = Depends(require("patient:read")), state: AppState = Depends(get_state)):
    """Individual MeasureReports: one per measure of every protocol evaluated for the patient."""
    with Session(state.engines.read) as s:
        p = patient_in_scope(s, state, request, who, patient, "fhir-measurereport")
        reports = []
        for e in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id == p.id)
                        .order_by(PatientEvaluationRow.protocol)):
            period = _period(state, e.protocol, e.reference_date)
            for m in (e.result or {}).get("measures", []):
                if measure and m["measure"] != measure:
                    continue
                reports.append(fhir_out.individual_report(p, e.protocol, e.version, m, period, e.evaluated_at))
    log_access(state, request, who, "read", "fhir-measurereport", patients=[patient])
    return fhir(fhir_out.bundle(reports))


@router.get("/MeasureReport/summary", response_class=JSONResponse, responses={200: {"content": {FHIR_JSON: {}}}})
def summary_reports(measure: ShortText | None = None, protocol: ShortText | None = None,
                    unit_kind: Literal["practice", "mdt", "locality", "area"] = "area", unit: ShortText | None = None,
                    who: Principal = Depends(require("audit:read")), state: AppState = Depends(get_state)):
    """Summary MeasureReports (counts and rate; for a measure with `value:` the values added up) per unit, from
    the stored evaluations."""
    with Session(state.engines.read) as s:  # SQL sums over the stored measures (engine.app.audit_sql)
        live = live_figures(s, unit_kind, protocol)
    ref = live.evaluated_to or state.now().date()
    reports = []
    for key, c in sorted(live.per_unit.items()):
        if (measure and c.measure != measure) or (unit and c.unit != unit):
            continue
        has_value = state.library.is_value_measure(c.protocol, c.version, c.measure)  # a continuous-variable report
        reports.append(fhir_out.summary_report(figures(c, live.area.get(key[:2])), _period(state, c.protocol, ref),
                                               state.now(), has_value=has_value,
                                               improvement=state.library.improvement(c.protocol, c.version, c.measure)))
    return fhir(fhir_out.bundle(reports))
