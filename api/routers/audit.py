"""Audit: measures by practice / MDT / locality with peer comparison, drill-down, snapshots, trend."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import func
from sqlmodel import Session, select

from api.state import AppState
from engine.app.audit import AREA, figures, stored_rows, take_snapshot, unit_of
from engine.app.audit_cache import counted_figures
from api.deps import Principal, get_state, log_access, require
from api.responses import API_ERRORS, errors
from api.schemas import AuditOut, DataProblemOut, DrillOut, DrillPatient, MeasureFigures, ShortText, SnapshotIn, SnapshotOut, TrendOut, TrendPoint
from api.views import name_of
from engine.app.service import record_failure
from engine.registry.access import AuditSnapshotRow
from engine.registry.pending import DataProblemRow
from engine.registry.tables import PatientRow

router = APIRouter(prefix="/audit", tags=["audit"], responses=API_ERRORS)
UnitKind = Literal["practice", "mdt", "locality", "area"]
Group = Literal["numerator", "not-met", "excluded", "exception", "not-in-denominator", "cannot-determine"]


@router.get("/measures", response_model=AuditOut)
def measures(unit_kind: UnitKind = "practice", protocol: ShortText | None = None, measure: ShortText | None = None,
             unit: ShortText | None = None, who: Principal = Depends(require("audit:read")),
             state: AppState = Depends(get_state)):
    """Every measure per unit: numerator, denominator, exclusions, rate (95% CI) and comparison with
    the area rate on funnel limits. Aggregates only: no patient is identified. Patients whose result cannot
    be determined (a declared codelist not supplied) are left out of the counts and the rate and counted
    in `cannot_determine`, with the `missing_codelists`."""
    return _measures(state, unit_kind, protocol, measure, unit)[0]


def measures_with_area(unit_kind: UnitKind, protocol: str | None, who: Principal, state: AppState) -> tuple[AuditOut, AuditOut]:
    """(figures per unit, figures for the area) from one aggregation: what the audit page shows (`measures`
    for unit_kind and for the area, without summing the stored measures twice). The caller has checked that
    `who` may read the audit (audit:read), as `measures` requires."""
    return _measures(state, unit_kind, protocol, None, None, with_area=True)


def _measures(state: AppState, unit_kind: str, protocol: str | None, measure: str | None, unit: str | None,
              with_area: bool = False) -> tuple:
    # SQL sums over the stored measures (engine.app.audit_sql), kept until the stored evaluations change
    counted = counted_figures(state.engines.read, unit_kind, protocol, state.now())
    live = counted.figures
    with Session(state.engines.read) as s:  # aggregate only: how many patients' latest evaluation failed
        problems = s.exec(select(func.count(func.distinct(DataProblemRow.patient_id)))
                          .where(DataProblemRow.resolved_at.is_(None))).one()
    kinds = [(unit_kind, live.per_unit)] + ([(AREA, {(*k, AREA): c for k, c in live.area.items()})] if with_area else [])
    outs = []
    for kind, per_unit in kinds:
        out = []
        for key, c in sorted(per_unit.items()):
            if (measure and c.measure != measure) or (unit and c.unit != unit):
                continue
            out.append(MeasureFigures(**figures(c, live.area.get(key[:2]))))
        outs.append(AuditOut(unit_kind=kind, patients=live.patients, evaluated_from=live.evaluated_from,
                             evaluated_to=live.evaluated_to, rows=out, data_problems=problems,
                             counted_at=counted.counted_at, recounting=counted.recounting))
    return tuple(outs)


def _group(m: dict) -> str:
    if m.get("cannot_determine"):  # a codelist it needs is not supplied: neither met nor not met
        return "cannot-determine"
    if not m.get("denominator"):
        return "not-in-denominator"
    if m.get("exclusion"):
        return "excluded"
    if m.get("exception"):  # a denominator exception (QOF personalised care adjustment): not met, not counted against
        return "exception"
    return "numerator" if m.get("numerator") else "not-met"


@router.get("/measures/{measure}/patients", response_model=DrillOut,
            responses=errors(**{"404": "No such measure"}))
def drill_down(request: Request, measure: str = Path(..., pattern=r"^[A-Za-z0-9._-]{1,100}$"),
               protocol: ShortText | None = None, unit_kind: UnitKind = "practice", unit: ShortText | None = None,
               group: list[Group] | None = Query(None, description="Default: every group except not-in-denominator"),
               who: Principal = Depends(require("audit:drilldown")), state: AppState = Depends(get_state)):
    """The patients behind a measure's figures, within your scope. Auditors see pseudonyms, no names."""
    groups = set(group or ("numerator", "not-met", "excluded", "exception", "cannot-determine"))
    with Session(state.engines.read) as s:
        rows = stored_rows(s, protocol, measure)
    found, out, proto_seen = False, [], None
    for p, e in rows:
        m = next((x for x in (e.result or {}).get("measures", []) if x["measure"] == measure), None)
        if m is None:
            continue
        found, proto_seen = True, e.protocol
        if unit and unit_kind != AREA and unit_of(p, unit_kind) != unit:
            continue
        if not who.scope.allows(p):
            continue
        g = _group(m)
        if g not in groups:
            continue
        out.append((p, g, m["provenance"]["why"]))
    if not found:
        raise HTTPException(status_code=404, detail=f"no stored results for measure {measure!r}")
    pseudo = who.pseudonymised
    patients = [DrillPatient(patient=state.pseudonymise(p.nhs_number) if pseudo else p.nhs_number,
                             name=None if pseudo else name_of(p), practice=p.practice, mdt=p.mdt, group=g, why=why)
                for p, g, why in out]
    log_access(state, request, who, "read", "audit-drilldown", patients=[p.nhs_number for p, _, _ in out],
               detail={"measure": measure, "pseudonymised": pseudo})
    return DrillOut(protocol=protocol or proto_seen, measure=measure, unit_kind=unit_kind, unit=unit, pseudonymised=pseudo,
                    patients=patients)


@router.post("/snapshots", response_model=SnapshotOut, status_code=201)
def snapshot(body: SnapshotIn, request: Request, who: Principal = Depends(require("audit:snapshot")),
             state: AppState = Depends(get_state)):
    """Evaluate everyone as of a reporting date and store the counts per unit (for trends).
    Taking a snapshot for the same date again replaces it."""
    problems: list = []
    now = state.now()
    with Session(state.engines.write) as s:
        patients, n = take_snapshot(s, state.library, body.as_of, who.username, now, problems=problems)
        for failed in problems:  # kept on each patient, like a failed re-evaluation
            record_failure(s, failed, now)
        units = {p.nhs_number: (p.practice, p.mdt) for p in s.exec(select(PatientRow).where(
            PatientRow.nhs_number.in_([f.nhs_number for f in problems])))} if problems else {}
        log_access(state, request, who, "write", "audit-snapshot", session=s,
                   detail={"as_of": body.as_of.isoformat(), "patients": patients, "data_problems": len(problems)})
        s.commit()
    out = []
    for f in problems:  # whoever takes snapshots (lead, auditor) sees pseudonyms here, never NHS numbers
        practice, mdt = units.get(f.nhs_number, (None, None))
        out.append(DataProblemOut(**{**f.as_dict(), "nhs_number": None}, patient=state.pseudonymise(f.nhs_number),
                                  practice=practice, mdt=mdt))
    return SnapshotOut(as_of=body.as_of, patients=patients, rows=n, taken_by=who.username, data_problems=out)


@router.get("/snapshots", response_model=list[SnapshotOut])
def snapshots(who: Principal = Depends(require("audit:read")), state: AppState = Depends(get_state)):
    """Reporting dates with a stored snapshot."""
    with Session(state.engines.read) as s:
        rows = s.exec(select(AuditSnapshotRow).where(AuditSnapshotRow.unit_kind == AREA)).all()
    by_date: dict = {}
    for r in rows:
        d = by_date.setdefault(r.as_of, {"rows": 0, "by": r.taken_by, "patients": 0})
        d["rows"] += 1
        d["patients"] = max(d["patients"], r.initial_population)
    return [SnapshotOut(as_of=k, patients=v["patients"], rows=v["rows"], taken_by=v["by"]) for k, v in sorted(by_date.items())]


@router.get("/trend", response_model=TrendOut)
def trend(measure: ShortText, protocol: ShortText | None = None, unit_kind: UnitKind = "area", unit: ShortText | None = None,
          who: Principal = Depends(require("audit:read")), state: AppState = Depends(get_state)):
    """A measure's figures over the reporting dates that have a snapshot."""
    unit = AREA if unit_kind == AREA else unit
    if unit is None:
        raise HTTPException(status_code=422, detail=f"unit is required for unit_kind={unit_kind}")
    q = select(AuditSnapshotRow).where(AuditSnapshotRow.measure == measure, AuditSnapshotRow.unit_kind == unit_kind,
                                       AuditSnapshotRow.unit == unit)
    if protocol:
        q = q.where(AuditSnapshotRow.protocol == protocol)
    with Session(state.engines.read) as s:
        rows = s.exec(q.order_by(AuditSnapshotRow.as_of)).all()
    points = []
    for r in rows:
        eligible = r.denominator - r.exclusions - r.exceptions
        points.append(TrendPoint(as_of=r.as_of, denominator=r.denominator, exclusions=r.exclusions, exceptions=r.exceptions,
                                 numerator=r.numerator, cannot_determine=r.cannot_determine or 0,
                                 rate=round(r.numerator / eligible, 4) if eligible > 0 else None))
    return TrendOut(protocol=protocol or (rows[0].protocol if rows else None), measure=measure, unit_kind=unit_kind, unit=unit,
                    points=points)
