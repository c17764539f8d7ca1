"""The worklist page: filters with counts, sort, pagination, one-click accept / complete /
decline-with-reason, CSV export; SLA clocks on every task.

Queries are the API's (`api.routers.worklists.Filters`, scoped to the user); task actions go
through the API's `_act` (scope check, the task lifecycle service, the access log).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from sqlalchemy import and_, case, func
from sqlmodel import Session, select

from api.state import AppState
from api.deps import Principal, log_access
from api.routers.mdt import HIGHEST_TIER
from api.routers.worklists import CSV_LIMIT, Filters, _act, _ordered, worklist_csv_response
from api.views import age_on, task_out, task_owners
from api.web.common import PREFIX, PageRoute, check_csrf, need, page_user, redirect, render, safe_next, state_of
from engine.app import practices
from engine.app.task_outcomes import OUTCOMES, completion_refusal
from engine.registry.outputs import OPEN_STATUSES, PatientEvaluationRow, TaskEventRow, TaskRow
from engine.registry.tables import PatientRow

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)

STATUSES = ("open", "accepted", "completed", "declined", "resolved")
PRIORITIES = ("urgent", "high", "routine", "low")
RISKS = ("3", "2", "1", "none")
SORTS = {
    "priority": "Priority, then due",
    "due": "Due (soonest first)",
    "-due": "Due (latest first)",
    "raised": "Raised (oldest first)",
    "-raised": "Raised (newest first)",
    "patient": "Patient",
    "practice": "Practice",
    "status": "Status",
}
PAGE_SIZES = (10, 25, 50, 100, 200)
Status = Literal["open", "accepted", "completed", "declined", "resolved"]
Priority = Literal["urgent", "high", "routine", "low"]
Short = Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]


class View:
    """The worklist's filters as the page's query string."""

    def __init__(self, status: list[Status] | None = Query(None), priority: list[Priority] | None = Query(None),
                 role: Short = None, practice: Short = None, protocol: Short = None,
                 mdt: Short = None, overdue: Literal["", "yes", "no"] = "",
                 risk: Literal["", "3", "2", "1", "none"] = "",
                 sort: Literal["priority", "due", "-due", "raised", "-raised", "patient", "practice", "status"] = "priority",
                 page: int = Query(1, ge=1, le=100000), size: int = Query(50, ge=1, le=200),
                 mine: Literal["", "yes"] = ""):
        self.mine = mine
        self.status, self.priority = list(status or []), list(priority or [])
        self.role, self.practice, self.protocol, self.mdt = role or None, practice or None, protocol or None, mdt or None
        self.overdue, self.risk, self.sort, self.page, self.size = overdue, risk, sort, page, size

    def params(self, **change) -> dict:
        p = dict(status=self.status, priority=self.priority, role=self.role, practice=self.practice,
                 protocol=self.protocol, mdt=self.mdt, overdue=self.overdue, risk=self.risk, sort=self.sort,
                 page=self.page, size=self.size, mine=self.mine)
        p.update(change)
        if "page" not in change:
            p["page"] = 1 if change else self.page
        defaults = dict(sort="priority", page=1, size=50)
        return {k: v for k, v in p.items() if v not in (None, "", []) and defaults.get(k) != v}

    def url(self, path: str = "/worklist", **change) -> str:
        return PREFIX + path + ("?" + urlencode(self.params(**change), doseq=True) if self.params(**change) else "")

    def filters(self, **change) -> Filters:
        v = dict(role=self.role, practice=self.practice, protocol=self.protocol, mdt=self.mdt,
                 status=self.status or None, priority=self.priority or None,
                 overdue={"yes": True, "no": False}.get(self.overdue))
        v.update(change)
        return Filters(provider=None, team=None, nhs_number=None, **v)

    @property
    def active(self) -> bool:
        return bool(self.status or self.priority or self.role or self.practice or self.protocol or self.mdt
                    or self.overdue or self.risk or self.mine)

    def query(self, who: Principal, now, mine: bool | None = None, **change):
        """The filters' query, plus "my tasks": the ones I accepted and still hold."""
        q = self.filters(**change).query(who, now)
        if self.mine if mine is None else mine:
            q = q.where(TaskRow.status == "accepted", TaskRow.id.in_(
                select(TaskEventRow.task_id).where(TaskEventRow.actor == who.username, TaskEventRow.action == "accepted")))
        return q


def _tiers(s: Session, q) -> dict[int, int | None]:
    """patient id -> risk tier (the API's `risk_tier`: the highest `tier.level` any stratification protocol
    stored for the patient), for the patients with tasks under the query's filters that have one. The level
    is a column of the stored evaluation (`tier_level`, kept with `result.tier.level`), read from an index:
    loading every protocol's whole result to read one number was nine tenths of the page's time for an MDT
    of 638 patients, and picking it out of the stored JSON still 0.25 s of 0.4 s for 2,472 (bench pages)."""
    pids = _joined(TaskRow.patient_id).where(q.whereclause)
    level = PatientEvaluationRow.tier_level
    rows = s.exec(select(PatientEvaluationRow.patient_id, func.max(level))
                  .where(PatientEvaluationRow.patient_id.in_(pids), level.is_not(None))
                  .group_by(PatientEvaluationRow.patient_id)).all()
    return {pid: int(top) for pid, top in rows}


def _with_risk(q, risk: str, tiers: dict[int, int | None]):
    if not risk:
        return q
    if risk == "none":
        stratified = [pid for pid, t in tiers.items() if t is not None]
        return q.where(TaskRow.patient_id.not_in(stratified)) if stratified else q
    ids = [pid for pid, t in tiers.items() if t == int(risk)]
    return q.where(TaskRow.patient_id.in_(ids))


def _joined(*columns):
    return select(*columns).select_from(TaskRow).join(PatientRow, PatientRow.id == TaskRow.patient_id)


def _count(s: Session, q) -> int:
    return s.exec(_joined(func.count()).where(q.whereclause)).one()


def _facet(s: Session, q, column) -> dict:
    """Counts by one column, under the query's filters."""
    return {k: n for k, n in s.exec(_joined(column, func.count()).where(q.whereclause).group_by(column)).all()}


FACET_COLUMNS = {"status": TaskRow.status, "priority": TaskRow.priority, "role": TaskRow.role,
                 "protocol": TaskRow.protocol, "practice": PatientRow.practice}


def _facets_filter_by_filter(s: Session, v: View, who: Principal, now, tiers: dict[int, int | None]) -> dict:
    """The status, priority, role, practice, protocol and overdue counts, each from its own query: `View.query`
    with every other filter applied (and the risk tier, `tiers`), and the total: what `_facets_in_one_pass`
    gives in one query when it can."""
    def facet(column, **change) -> dict:
        return _facet(s, _with_risk(v.query(who, now, **change), v.risk, tiers), column)

    facets = {"status": facet(TaskRow.status, status=list(STATUSES)), "priority": facet(TaskRow.priority, priority=None),
              "role": facet(TaskRow.role, role=None), "practice": facet(PatientRow.practice, practice=None),
              "protocol": facet(TaskRow.protocol, protocol=None)}
    no_late = _with_risk(v.query(who, now, overdue=None), v.risk, tiers)
    n_late = _count(s, no_late.where((TaskRow.due < now) & TaskRow.status.in_(OPEN_STATUSES)))
    facets["overdue"] = {"yes": n_late, "no": _count(s, no_late) - n_late}
    facets["total"] = _count(s, _with_risk(v.query(who, now), v.risk, tiers))
    return facets


def _facets_in_one_pass(s: Session, v: View, who: Principal, now) -> dict | None:
    """The status, priority, role, practice, protocol and overdue counts (each with every other filter applied)
    and the total, from one GROUP BY over those columns, filtered here: a dozen counting queries read the
    same tasks (~0.35 s for an MDT with 35,000 tasks). None when a filter cannot be applied to the grouped
    counts (risk tier, my tasks): then each is counted by itself (`_facets_filter_by_filter`).

    `kept` below re-states in Python what `View.query` (`Filters.query`) filters in SQL, for the status,
    priority, role, practice, protocol and overdue filters. It cannot call that query: each facet leaves out
    a different filter, so in SQL that is one query per facet (the dozen this replaces); here the one grouped
    result is filtered six ways. The other filters (scope, MDT) are the query's own. A filter added to
    `Filters.query` must be added here too (or make this return None for it):
    tests/api/test_worklist_facets.py holds the two to the same counts."""
    if v.risk or v.mine:
        return None
    late = case((and_(TaskRow.due < now, TaskRow.status.in_(OPEN_STATUSES)), 1), else_=0)
    q = v.query(who, now, status=list(STATUSES), priority=None, role=None, practice=None, protocol=None, overdue=None)
    cols = list(FACET_COLUMNS.values())
    grouped = s.execute(_joined(*cols, late, func.count()).where(q.whereclause).group_by(*cols, late)).all()
    wanted = {"status": set(v.status or OPEN_STATUSES), "priority": set(v.priority) if v.priority else None,
              "role": {v.role} if v.role else None, "protocol": {v.protocol} if v.protocol else None,
              "practice": set(practices.codes_for(v.practice)) if v.practice else None}
    overdue = {"yes": 1, "no": 0}.get(v.overdue)

    def kept(row, skip: str | None) -> bool:
        values = dict(zip(FACET_COLUMNS, row))
        return (all(allowed is None or values[k] in allowed for k, allowed in wanted.items() if k != skip)
                and (skip == "overdue" or overdue is None or row[5] == overdue))

    def by(name: str) -> dict:
        out: dict = {}
        i = list(FACET_COLUMNS).index(name)
        for row in grouped:
            if kept(row, name):
                out[row[i]] = out.get(row[i], 0) + row[6]
        return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))

    facets = {name: by(name) for name in FACET_COLUMNS}
    n_late = sum(r[6] for r in grouped if kept(r, "overdue") and r[5])
    facets["overdue"] = {"yes": n_late, "no": sum(r[6] for r in grouped if kept(r, "overdue")) - n_late}
    facets["total"] = sum(r[6] for r in grouped if kept(r, None))
    return facets


def _by_practice_name(counts: dict) -> dict:
    """The practice facet in the order people look for a practice: by name (codes without a patient last)."""
    return {code: counts[code] for code, _ in practices.by_name(counts)} | counts


def _ordered_by(q, sort: str):
    if sort == "priority":
        return _ordered(q)
    col = {"due": TaskRow.due, "raised": TaskRow.raised_at, "patient": PatientRow.family_name,
           "practice": PatientRow.practice, "status": TaskRow.status}[sort.lstrip("-")]
    return q.order_by(col.desc() if sort.startswith("-") else col, TaskRow.due, TaskRow.id)


def headline_counts(state: AppState, who: Principal) -> dict:
    """Counts for the home page (no patient is identified)."""
    now = state.now()
    q = Filters(None, None, None, None, None, None, None, None, None, None).query(who, now)
    with Session(state.engines.read) as s:
        total = _count(s, q)
        late = _count(s, q.where(TaskRow.due < now))
        urgent = _count(s, q.where(TaskRow.priority.in_(("urgent", "high"))))
        esc = _count(s, q.where(TaskRow.kind == "escalation"))
    return {"open": total, "overdue": late, "urgent_high": urgent, "escalations": esc}


@router.get("/worklist")
def worklist_page(request: Request, v: View = Depends(), who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "worklist:read")
    now = state.now()
    with Session(state.engines.read) as s:
        tiers = _tiers(s, v.query(who, now, status=list(STATUSES)))
        base = _with_risk(v.query(who, now), v.risk, tiers)
        # counts per filter: each facet counted with every other filter applied
        facets = _facets_in_one_pass(s, v, who, now)
        if facets is None:
            facets = _facets_filter_by_filter(s, v, who, now, tiers)
        total = facets.pop("total")
        facets["practice"] = _by_practice_name(facets["practice"])
        pages = max(1, -(-total // v.size))
        page = min(v.page, pages)
        # the page's task ids first (sorted from the worklist index), then only their rows: sorting the whole
        # rows (why, evidence) of every task of a large MDT to keep 50 read them all
        ids = list(s.execute(_ordered_by(base.with_only_columns(TaskRow.id), v.sort)
                             .offset((page - 1) * v.size).limit(v.size)).scalars())
        by_id = {t.id: (t, p) for t, p in s.exec(base.where(TaskRow.id.in_(ids))).all()} if ids else {}
        rows = [by_id[i] for i in ids]
        items = [task_out(t, p, now) for t, p in rows]
        facets["mdt"] = _facet(s, _with_risk(v.query(who, now, mdt=None), v.risk, tiers), PatientRow.mdt)
        facets["mine"] = _count(s, _with_risk(v.query(who, now, mine=True), v.risk, tiers))
        per_patient = _facet(s, v.query(who, now), TaskRow.patient_id)
        risk_counts: dict[str, int] = {}
        for pid, n in per_patient.items():
            t = tiers.get(pid)
            key = "none" if t is None else str(t)
            risk_counts[key] = risk_counts.get(key, 0) + n
        facets["risk"] = risk_counts
        owners = task_owners(s, [t.id for t, _ in rows])
    # the risk tier of each listed patient, for the table
    row_tiers = {t.id: tiers.get(t.patient_id) for t, _ in rows}
    log_access(state, request, who, "read", "worklist", patients=[i.nhs_number for i in items],
               detail={"total": total, "page": page, "via": "web"})
    sla = {i.id: _sla_fraction(i) for i in items}
    here = v.url(page=page) if page > 1 else v.url()
    return render(request, "worklist.html", who, page_title="Worklist", v=v, items=items, total=total, page=page,
                  pages=pages, facets=facets, statuses=STATUSES, priorities=PRIORITIES, risks=RISKS, sorts=SORTS,
                  page_sizes=PAGE_SIZES, row_tiers=row_tiers, sla=sla, highest_tier=HIGHEST_TIER, here=here,
                  groups=group_by_patient(items, {p.nhs_number: p for _, p in rows}, now.date()), owners=owners,
                  outcomes=COMPLETE_OUTCOMES, decline_reasons=DECLINE_REASONS, cannot_complete=cannot_complete(who))


def cannot_complete(who: Principal):
    """For the page: task -> why this user may not complete or decline it (None when they may)."""
    return lambda t: completion_refusal(t.role, who.role, who.clinical_roles, "complete or decline")


@dataclass
class PatientGroup:
    """One patient's tasks on the page, under a banner a clinician recognises them by."""
    nhs_number: str
    name: str | None
    age: int | None
    sex: str | None
    birth_date: dt.date | None
    practice: str | None
    mdt: str | None
    tasks: list = field(default_factory=list)


def group_by_patient(items: list, patients: dict, today: dt.date) -> list[PatientGroup]:
    """Tasks grouped by patient, groups in the order of each patient's first task in the chosen sort
    (so the most urgent patient leads under the default sort), tasks within a group in that order."""
    groups: dict[str, PatientGroup] = {}
    for t in items:
        g = groups.get(t.nhs_number)
        if g is None:
            p = patients.get(t.nhs_number)
            g = groups[t.nhs_number] = PatientGroup(
                t.nhs_number, t.patient_name, age_on(p.birth_date, today) if p else None, p.sex if p else None,
                p.birth_date if p else None, t.practice, t.mdt)
        g.tasks.append(t)
    return list(groups.values())


# Coded outcomes of a completion: engine.app.task_outcomes (stored as outcome + "label: note").
COMPLETE_OUTCOMES = OUTCOMES
DECLINE_REASONS = {
    "patient-declined": "Patient declined",
    "not-appropriate": "Not clinically appropriate",
    "not-our-team": "Not for our team (needs reassigning)",
    "duplicate": "Duplicate of another task",
    "other": "Other (say why)",
}


def _sla_fraction(t) -> float:
    """How much of the response time has gone (0..1, capped) for the SLA meter."""
    total = (t.due - t.raised_at).total_seconds()
    if total <= 0:
        return 1.0
    gone = total - t.sla.hours_left * 3600
    return max(0.0, min(1.0, gone / total))


@router.get("/worklist.csv")
def worklist_csv(request: Request, v: View = Depends(), who: Principal = Depends(page_user)):
    """The filtered worklist (every page) as CSV: the API's writer (same columns, formulas neutralised)."""
    state = state_of(request)
    need(request, who, "worklist:read")
    now = state.now()
    with Session(state.engines.read) as s:
        q = v.query(who, now)
        tiers = _tiers(s, q) if v.risk else {}
        q = _with_risk(q, v.risk, tiers)
        items = [task_out(t, p, now) for t, p in s.exec(_ordered_by(q, v.sort).limit(CSV_LIMIT)).all()]
    log_access(state, request, who, "read", "worklist-csv", patients=[i.nhs_number for i in items],
               detail={"rows": len(items), "via": "web"})
    return worklist_csv_response(items)


ACTION_DONE = {"accept": "accepted", "complete": "completed", "decline": "declined", "reopen": "reopened"}


@router.post("/tasks/bulk")
def bulk_action_form(request: Request, task: list[int] = Form([]), action: Literal["accept"] = Form("accept"),
                     next: str = Form(""), csrf_token_: str = Form("", alias="csrf_token"),
                     who: Principal = Depends(page_user)):
    """Accept several ticked tasks at once (each through the same checks and log as one)."""
    check_csrf(request, csrf_token_)
    need(request, who, "task:act")
    state = state_of(request)
    back = safe_next(next, PREFIX + "/worklist")
    ids = list(dict.fromkeys(i for i in task if 0 < i < 2**31))[:200]
    if not ids:
        return redirect(request, back, flash="Tick the tasks to accept first.")
    done, failed = 0, []
    for task_id in ids:
        try:
            _act(request, state, who, task_id, action)
            done += 1
        except HTTPException as e:
            if e.status_code not in (404, 409, 422):
                raise
            failed.append(f"task {task_id}: {e.detail}")
    msg = f"Accepted {done} task{'' if done == 1 else 's'}."
    return redirect(request, back, flash=msg + (f" Not accepted: {'; '.join(failed)}." if failed else ""))


@router.post("/tasks/{task_id}/{action}")
def task_action_form(request: Request, task_id: int = Path(..., ge=1, le=2**31 - 1),
                     action: Literal["accept", "complete", "decline", "reopen"] = Path(...),
                     reason: str = Form("", max_length=2000), code: str = Form("", max_length=40),
                     next: str = Form(""), csrf_token_: str = Form("", alias="csrf_token"),
                     who: Principal = Depends(page_user)):
    """Accept, complete (with a coded outcome), decline (a coded reason; words required for "other") or
    reopen a task; back to the same place in the list."""
    check_csrf(request, csrf_token_)
    need(request, who, "task:act")
    state = state_of(request)
    back = safe_next(next, PREFIX + "/worklist")
    reason = reason.replace("\x00", "").strip()
    codes = COMPLETE_OUTCOMES if action == "complete" else DECLINE_REASONS if action == "decline" else {}
    if code and code not in codes or action == "complete" and not code:
        return redirect(request, back, flash=f"Task {task_id}: choose one of the listed outcomes.")
    if action == "decline" and (not code and not reason or code == "other" and not reason):
        return redirect(request, back, flash=f"Task {task_id} was not declined: please give a reason.")
    kw = {}
    if action == "complete":
        kw["outcome"] = code  # the service words it (engine.app.task_outcomes.outcome_text)
    elif codes and code:
        label = codes[code].replace(" (say why)", "")
        reason = f"{label}: {reason}" if reason and code != "other" else (reason if code == "other" else label)
    try:
        out = _act(request, state, who, task_id, action, reason=reason or None, **kw)
    except HTTPException as e:
        if e.status_code in (403, 409, 422):
            return redirect(request, back, flash=f"Task {task_id}: {e.detail}.")
        raise
    anchor = back if "#" in back else f"{back}#patient-{out.nhs_number}"
    said = out.closed_reason if action == "complete" else reason
    return redirect(request, anchor, flash=f"{out.title} ({out.patient_name or out.nhs_number}): {ACTION_DONE[action]}"
                    + (f" by you — {said}." if action in ("complete", "decline") and said else "."))
