"""MDT case-conference lists and their outcomes.

Who is on one MDT's list (patients whose MDT it is, or with tasks assigned to it):
- open escalation tasks (new = raised since the patient's last recorded outcome at this MDT),
- overdue urgent or high priority tasks,
- active red flags,
- the highest risk tier (level 3) from any stratification protocol in force (`risk_tier()`).
Ordered by urgency (`case_order`): the most urgent open item first (urgent, then high priority
tasks and red flags, then routine escalations, then highest-risk-tier alone), then the earliest due
time, then new escalations and risk tier — an urgent foot problem due tomorrow is never listed behind
routine "new to case management" patients.
"""
from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import func, or_
from sqlmodel import Session, select

from api.state import AppState
from api.deps import Principal, get_state, log_access, patient_in_scope, require, scoped
from api.responses import API_ERRORS, errors
from api.schemas import CaseConferenceOut, CasePatientOut, Day, MdtOut, OutcomeIn, OutcomeOut, OutcomeTaskOut, TaskChangeOut
from engine.app import mdt_actions
from api.security import CLINICAL_LEAD
from engine.calendar import is_working_day
from api.views import age_on, flag_out, name_of, task_out
from engine.registry.dialect import is_postgresql
from engine.registry.access import MdtOutcomeRow
from engine.registry.outputs import OPEN_STATUSES, FlagRow, PatientEvaluationRow, TaskRow
from engine.registry.tables import PatientRow

router = APIRouter(prefix="/mdts", tags=["mdt"], responses=API_ERRORS)
MDT = Path(..., pattern=r"^[A-Za-z0-9._-]{1,100}$")

HIGHEST_TIER = 3  # Kaiser-style levels: 3 = case management (highest need)
RISK_PROTOCOL = "risk-stratification"  # kept for callers that read one protocol; risk_tier() reads any


def risk_tier(evaluations: dict[str, dict]) -> int | None:
    """The patient's risk tier: the highest `tier.level` any stratification protocol in force gave
    them (stored with each protocol's evaluation). None while no stratification protocol applies;
    the list is then built from escalations, overdue urgent tasks and red flags alone."""
    levels = [r["tier"]["level"] for r in evaluations.values()
              if isinstance((r or {}).get("tier"), dict) and isinstance(r["tier"].get("level"), int)]
    return max(levels) if levels else None


PRIORITY_RANK = {"urgent": 0, "high": 1, "routine": 2}
NOTHING_DUE = dt.datetime.max


def case_priority(c: CasePatientOut) -> str:
    """The most urgent item that brings the patient to the list: a task's priority; a red flag counts
    as high; a patient listed for their risk tier alone is 'routine'."""
    prios = [t.priority for t in c.escalations + c.overdue_urgent] + ["high"] * bool(c.red_flags)
    return min(prios, key=lambda x: PRIORITY_RANK.get(x, 3), default="routine")


def case_order(c: CasePatientOut) -> tuple:
    tasks = c.escalations + c.overdue_urgent
    only_tier = not tasks and not c.red_flags
    return (PRIORITY_RANK.get(c.priority, 3), only_tier, min((t.due for t in tasks), default=NOTHING_DUE),
            not c.new_escalation, -(c.risk_tier or 0), -len(tasks), -len(c.red_flags), c.nhs_number)


def next_meeting_day(today: dt.date) -> dt.date:
    """MDTs meet on working days: opened on a Sunday or a bank holiday, the list is for the next one."""
    day = today
    while not is_working_day(day):
        day += dt.timedelta(days=1)
    return day


def _check_mdt(request: Request, state: AppState, who: Principal, mdt: str) -> None:
    if who.role == CLINICAL_LEAD and who.scope.everyone:
        return
    if who.mdt != mdt and not (who.role == CLINICAL_LEAD and (who.locality or who.practice)):
        log_access(state, request, who, "denied", "mdt", status=403, detail={"reason": f"not a member of MDT {mdt}"})
        raise HTTPException(status_code=403, detail=f"you are not a member of MDT {mdt}")


def outcome_out(o: MdtOutcomeRow, nhs: str, tasks: list[TaskRow] = ()) -> OutcomeOut:
    return OutcomeOut(id=o.id, mdt=o.mdt, nhs_number=nhs, meeting_date=o.meeting_date, outcome=o.outcome, actions=o.actions,
                      recorded_by=o.recorded_by, recorded_at=o.recorded_at,
                      tasks=[OutcomeTaskOut(id=t.id, title=t.title, role=t.role, priority=t.priority, due=t.due, status=t.status)
                             for t in tasks],
                      task_changes=[TaskChangeOut(**{k: c.get(k) for k in TaskChangeOut.model_fields}) for c in o.task_changes or []])


def outcome_tasks(s: Session, outcome_ids: list[int]) -> dict[int, list[TaskRow]]:
    """outcome id -> the tasks its agreed actions created (engine.app.mdt_actions)."""
    if not outcome_ids:
        return {}
    out: dict[int, list[TaskRow]] = {}
    for t in s.exec(select(TaskRow).where(TaskRow.source.in_([f"mdt-outcome:{i}" for i in outcome_ids]))
                    .order_by(TaskRow.id)):
        out.setdefault(int(t.source.split(":")[1]), []).append(t)
    return out


@router.get("", response_model=list[MdtOut])
def list_mdts(who: Principal = Depends(require("mdt:read")), state: AppState = Depends(get_state)):
    """The MDTs you can see, with patient and open escalation counts."""
    with Session(state.engines.read) as s:
        counts = s.exec(scoped(select(PatientRow.mdt, func.count()).where(PatientRow.mdt.is_not(None)), who)
                        .group_by(PatientRow.mdt)).all()
        esc = dict(s.exec(scoped(select(PatientRow.mdt, func.count()).join(TaskRow, TaskRow.patient_id == PatientRow.id)
                                 .where(TaskRow.kind == "escalation", TaskRow.status.in_(OPEN_STATUSES)), who)
                          .group_by(PatientRow.mdt)).all())
    return [MdtOut(mdt=m, patients=n, open_escalations=esc.get(m, 0)) for m, n in sorted(counts)
            if who.role == CLINICAL_LEAD or m == who.mdt]


@router.get("/{mdt}/case-conference", response_model=CaseConferenceOut, responses=errors(**{"403": "Not your MDT"}))
def case_conference(request: Request, mdt: str = MDT, meeting_date: Day | None = Query(None, description="Default: today, or the next working day at a weekend or bank holiday"),
                    who: Principal = Depends(require("mdt:read")), state: AppState = Depends(get_state)):
    """The patients this MDT should discuss, why, and any outcome already recorded for the meeting."""
    _check_mdt(request, state, who, mdt)
    now = state.now()
    meeting = meeting_date or next_meeting_day(now.date())
    with Session(state.engines.read) as s:
        member = or_(PatientRow.mdt == mdt, PatientRow.id.in_(select(TaskRow.patient_id).where(TaskRow.provider == mdt)))
        patients = {p.id: p for p in s.exec(scoped(select(PatientRow).where(member), who))}
        ids = list(patients)
        tasks = s.exec(select(TaskRow).where(TaskRow.patient_id.in_(ids), TaskRow.status.in_(OPEN_STATUSES))).all() if ids else []
        flags = s.exec(select(FlagRow).where(FlagRow.patient_id.in_(ids), FlagRow.active, FlagRow.level == "red")).all() if ids else []
        evals: dict[int, dict[str, dict]] = {}
        for e in (s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.patient_id.in_(ids))) if ids else []):
            evals.setdefault(e.patient_id, {})[e.protocol] = e.result
        outcomes: dict[int, list[MdtOutcomeRow]] = {}
        for o in (s.exec(select(MdtOutcomeRow).where(MdtOutcomeRow.mdt == mdt, MdtOutcomeRow.patient_id.in_(ids))
                         .order_by(MdtOutcomeRow.recorded_at, MdtOutcomeRow.id)) if ids else []):
            outcomes.setdefault(o.patient_id, []).append(o)
        made = outcome_tasks(s, [o.id for os_ in outcomes.values() for o in os_ if o.meeting_date == meeting])
    by_patient: dict[int, dict] = {i: {"esc": [], "late": [], "red": []} for i in ids}
    for t in tasks:
        if t.kind == "escalation":
            by_patient[t.patient_id]["esc"].append(t)
        elif t.priority in ("urgent", "high") and t.due < now:
            by_patient[t.patient_id]["late"].append(t)
    for f in flags:
        by_patient[f.patient_id]["red"].append(f)
    out = []
    for pid, b in by_patient.items():
        p = patients[pid]
        tier = risk_tier(evals.get(pid, {}))
        if not (b["esc"] or b["late"] or b["red"] or (tier is not None and tier >= HIGHEST_TIER)):
            continue
        history = outcomes.get(pid, [])
        last = history[-1] if history else None
        today = next((o for o in reversed(history) if o.meeting_date == meeting), None)
        since = max((o.recorded_at for o in history if o.meeting_date < meeting), default=None)
        new_esc = any(since is None or t.raised_at > since for t in b["esc"])
        reasons = []
        if tier is not None and tier >= HIGHEST_TIER:
            reasons.append(f"highest risk tier ({tier})")
        for t in b["esc"]:
            reasons.append(f"{'new ' if since is None or t.raised_at > since else ''}escalation: {t.title}")
        for t in b["late"]:
            reasons.append(f"overdue {t.priority} task: {t.title} (due {t.due:%Y-%m-%d %H:%M})")
        for f in b["red"]:
            reasons.append(f"red flag: {f.text}")
        out.append(CasePatientOut(nhs_number=p.nhs_number, name=name_of(p), practice=p.practice, birth_date=p.birth_date,
                                  age=age_on(p.birth_date, meeting), sex=p.sex, risk_tier=tier, reasons=reasons,
                                  new_escalation=new_esc, escalations=[task_out(t, p, now) for t in b["esc"]],
                                  overdue_urgent=[task_out(t, p, now) for t in sorted(b["late"], key=lambda t: t.due)],
                                  red_flags=[flag_out(f, p) for f in b["red"]],
                                  outcome=outcome_out(today, p.nhs_number, made.get(today.id, [])) if today else None,
                                  last_outcome=outcome_out(last, p.nhs_number) if last else None))
    for c in out:
        c.priority = case_priority(c)
    out.sort(key=case_order)
    log_access(state, request, who, "read", "mdt-list", patients=[c.nhs_number for c in out], detail={"mdt": mdt})
    return CaseConferenceOut(mdt=mdt, meeting_date=meeting, generated_at=now, patients=out)


@router.post("/{mdt}/outcomes", response_model=OutcomeOut, status_code=201,
             responses=errors(**{"403": "Not your MDT", "404": "No such patient",
                                 "422": "Invalid request, or the patient is not under this MDT"}))
def record_outcome(body: OutcomeIn, request: Request, mdt: str = MDT, who: Principal = Depends(require("mdt:write")),
                   state: AppState = Depends(get_state)):
    """Record what the case conference decided for one patient: agreed actions become new tasks
    (`action_items`); the patient's open tasks may be reassigned to another care role or closed with a coded
    outcome (`task_changes`), in the MDT's name by the person recording it (kept in each task's history)."""
    _check_mdt(request, state, who, mdt)
    with Session(state.engines.read) as s:  # refusals are logged outside the write transaction below
        patient_in_scope(s, state, request, who, body.nhs_number, "mdt-outcome")
    with Session(state.engines.write) as s:
        p = s.exec(select(PatientRow).where(PatientRow.nhs_number == body.nhs_number)).one()
        if body.task_changes and is_postgresql(s):
            # the lock re-evaluation and task actions take: a change and the engine never interleave
            s.exec(select(PatientRow).where(PatientRow.id == p.id).with_for_update()).first()
        assigned = s.exec(select(TaskRow.id).where(TaskRow.patient_id == p.id, TaskRow.provider == mdt)).first()
        if p.mdt != mdt and assigned is None:
            raise HTTPException(status_code=422, detail=f"patient {p.nhs_number} is not under MDT {mdt}")
        actions = [mdt_actions.Action(a.type, a.role, a.due, a.priority, a.detail) for a in body.action_items]
        try:
            mdt_actions.check(actions, body.meeting_date)
        except mdt_actions.ActionError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        now = state.now()
        row = MdtOutcomeRow(mdt=mdt, patient_id=p.id, meeting_date=body.meeting_date, outcome=body.outcome,
                            actions=body.actions, recorded_by=who.username, recorded_at=now)
        s.add(row)
        s.flush()
        tasks = mdt_actions.create_tasks(s, outcome_id=row.id, patient_id=p.id, mdt=mdt, meeting_date=body.meeting_date,
                                         outcome=body.outcome, actions=actions, actor=who.username, now=now)
        changes = [mdt_actions.TaskChange(c.task_id, c.change, c.role, c.team, c.outcome, c.note) for c in body.task_changes]
        try:
            row.task_changes = mdt_actions.apply_task_changes(s, patient_id=p.id, mdt=mdt, meeting_date=body.meeting_date,
                                                              changes=changes, actor=who.username, now=now)
        except mdt_actions.ActionError as e:
            s.rollback()
            raise HTTPException(status_code=422, detail=str(e)) from None
        s.add(row)
        log_access(state, request, who, "write", "mdt-outcome", patients=[p.nhs_number], session=s,
                   detail={"mdt": mdt, "tasks": [t.id for t in tasks],
                           "task_changes": [[c["task_id"], c["change"]] for c in row.task_changes]})
        s.commit()
        s.refresh(row)
        for t in tasks:
            s.refresh(t)
        return outcome_out(row, p.nhs_number, tasks)


@router.get("/{mdt}/outcomes", response_model=list[OutcomeOut], responses=errors(**{"403": "Not your MDT"}))
def list_outcomes(request: Request, mdt: str = MDT, nhs_number: str | None = Query(None, pattern=r"^[0-9]{10}$"),
                  who: Principal = Depends(require("mdt:read")), state: AppState = Depends(get_state)):
    """Recorded outcomes for this MDT (newest first), optionally for one patient."""
    _check_mdt(request, state, who, mdt)
    with Session(state.engines.read) as s:
        q = scoped(select(MdtOutcomeRow, PatientRow).join(PatientRow, PatientRow.id == MdtOutcomeRow.patient_id)
                   .where(MdtOutcomeRow.mdt == mdt), who)
        if nhs_number:
            q = q.where(PatientRow.nhs_number == nhs_number)
        rows = s.exec(q.order_by(MdtOutcomeRow.meeting_date.desc(), MdtOutcomeRow.id.desc())).all()
        made = outcome_tasks(s, [o.id for o, _ in rows])
    out = [outcome_out(o, p.nhs_number, made.get(o.id, [])) for o, p in rows]
    log_access(state, request, who, "read", "mdt-outcome", patients=[o.nhs_number for o in out], detail={"mdt": mdt})
    return out
