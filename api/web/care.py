"""Patients and care plans: the patient list, the clinician's care plan (activities with status and
due dates, who is responsible, why-lines with the evidence facts, tasks and their history) and the
print-friendly plan in plain language for the patient.

Reads go through the API's own endpoints' functions (`api.routers.patients`), which check the
user's scope and write the access log.
"""
from __future__ import annotations

import datetime as dt

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import func
from sqlmodel import Session, select

from api.deps import Principal, scoped
from api.routers import patients as papi
from api.schemas import NHS_PATTERN
from api.views import event_out, task_out, task_owners
from api.web.worklist import COMPLETE_OUTCOMES, DECLINE_REASONS, cannot_complete
from api.web.common import PREFIX, PageRoute, local, need, page_user, redirect, render, state_of
from api.web.summary import SETTING_NAMES, summarise
from engine.app import practices
from engine.app.service import task_history
from engine.registry.ingest import load_record
from engine.registry.outputs import CLOSED_STATUSES, TaskRow
from engine.registry.tables import PatientRow

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
Nhs = Annotated[str, Path(pattern=NHS_PATTERN)]
Short = Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]
STATUS_WORDS = {"met": "Done", "due": "Due", "overdue": "Overdue", "excepted": "Not needed (exception)",
                "unknown": "Cannot tell (codelist not supplied)"}


@router.get("/patients")
def patients_page(request: Request, practice: Short = None, mdt: Short = None,
                  nhs: str | None = Query(None, max_length=20), page: int = Query(1, ge=1, le=100000),
                  name: Short = None, born: Annotated[str | None, Query(pattern=r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2})?$")] = None,
                  who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "patient:read")
    if nhs:
        digits = "".join(c for c in nhs if c.isdigit())
        if len(digits) == 10:
            return redirect(request, f"{PREFIX}/patients/{digits}")
        return redirect(request, f"{PREFIX}/patients", flash="An NHS number has 10 digits.")
    try:
        day = dt.date.fromisoformat(born) if born else None
    except ValueError:
        raise HTTPException(status_code=422, detail="The date of birth should be a date.") from None
    out = papi.list_patients(request, practice or None, mdt or None, None, page, 50, who, state, name=name or None, born=day)
    if (name or day) and out.total == 1:  # one match: straight to the care plan, as a GP system does
        return redirect(request, f"{PREFIX}/patients/{out.items[0].nhs_number}")
    pages = max(1, -(-out.total // out.page_size))
    return render(request, "patients.html", who, page_title="Patients", out=out, pages=pages, practice=practice or "",
                  mdt=mdt or "", name=name or "", born=born or "", practice_options=_practice_options(state, who))


def _practice_options(state, who: Principal) -> list[tuple[str, str, int]]:
    """The practices of the patients in the user's scope, by name: (code, "Name (code)", patients)."""
    with Session(state.engines.read) as s:
        counts = dict(s.exec(scoped(select(PatientRow.practice, func.count()).group_by(PatientRow.practice), who)).all())
    return [(code, label, counts[code]) for code, label in practices.by_name(counts)]


def _tasks(s: Session, patient_id: int, now):
    rows = s.exec(select(TaskRow).where(TaskRow.patient_id == patient_id).order_by(TaskRow.id.desc())).all()
    latest: dict[tuple[str, str], TaskRow] = {}
    for t in rows:
        latest.setdefault((t.protocol, t.source), t)
    closed = [t for t in rows if t.status in CLOSED_STATUSES][:15]
    return latest, closed


@router.get("/patients/{nhs_number}")
def care_plan_page(request: Request, nhs_number: Nhs, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "patient:read")
    plan = papi.care_plan(request, nhs_number, who, state)  # scope check + access log
    now = state.now()
    with Session(state.engines.read) as s:
        p = s.exec(select(PatientRow).where(PatientRow.nhs_number == nhs_number)).one()
        latest, closed = _tasks(s, p.id, now)
        record = load_record(s, nhs_number)
        histories = {t.id: [event_out(e) for e in task_history(s, t.id)] for t in closed}
        closed_out = [task_out(t, p, now) for t in closed]
        latest_out = {k: task_out(t, p, now) for k, t in latest.items()}
        owners = task_owners(s, [t.id for t in latest.values()] + [t.id for t in closed])
    summary = summarise(record, state.library, now.date()) if record else None
    on = [pr for pr in plan.protocols if pr.on_register]
    off = [pr for pr in plan.protocols if not pr.on_register]
    return render(request, "care_plan.html", who, page_title=f"Care plan: {plan.patient.given_name or ''} {plan.patient.family_name or ''}".strip(),
                  plan=plan, on=on, off=off, latest=latest_out, closed=closed_out, histories=histories, summary=summary,
                  status_words=STATUS_WORDS, settings=SETTING_NAMES, owners=owners, outcomes=COMPLETE_OUTCOMES,
                  decline_reasons=DECLINE_REASONS, cannot_complete=cannot_complete(who))


@router.get("/patients/{nhs_number}/plan")
def patient_plan_page(request: Request, nhs_number: Nhs, who: Principal = Depends(page_user)):
    """The plan for the patient, in plain language, to print or send."""
    state = state_of(request)
    need(request, who, "patient:read")
    plain = papi.care_plan_plain(request, nhs_number, who, state)  # scope check + access log
    with Session(state.engines.read) as s:
        p = s.exec(select(PatientRow).where(PatientRow.nhs_number == nhs_number)).one()
        practice = practices.practice(p.practice)  # name and phone from the practice table (None if unknown)
    return render(request, "patient_plan.html", who, page_title="Your care plan", plain=plain, practice=practice,
                  printed=local(state.now()).date())
