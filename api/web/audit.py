"""The audit dashboard: per measure, practices / MDTs / localities compared with the area rate
(ranked bar chart with confidence intervals and funnel limits, funnel plot, table), trend over
reporting dates, reporting snapshots, and drill-down to patients where the role allows
(auditors see pseudonyms only). Figures come from the API's `api.routers.audit` functions."""
from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from pydantic import ValidationError
from sqlmodel import Session, select

from api.deps import Principal
from api.routers import audit as aapi
from api.schemas import SnapshotIn
from api.web.charts import (MIN_TO_RANK, Unit, count_text, funnel_plot, judgement, rank_order, ranked_bars, sparkline,
                            trend_chart)
from api.web.common import PREFIX, PageRoute, check_csrf, need, page_user, redirect, render, state_of
from engine.app.practices import practice_name
from engine.registry.access import AuditSnapshotRow

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
UnitKind = Literal["practice", "mdt", "locality"]
Short = Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9._-]*$")]
Measure = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,100}$")]
UNIT_NAMES = {"practice": "Practice", "mdt": "MDT", "locality": "Locality", "area": "Area"}
UNIT_PLURALS = {"practice": "Practices", "mdt": "MDTs", "locality": "Localities", "area": "Area"}
GROUP_NAMES = {"numerator": "Met", "not-met": "Not met", "excluded": "Excluded",
               "exception": "Exception (personalised care adjustment)", "not-in-denominator": "Not in denominator",
               "cannot-determine": "Cannot determine (codelist not supplied)"}
MAX_TREND_UNITS = 6


def exception_rate(m) -> float | None:
    """Exceptions as a share of those who could be counted (denominator less exclusions): QOF's PCA rate."""
    base = m.denominator - m.exclusions
    return m.exceptions / base if base > 0 else None


def drill_url(measure: str, protocol: str, unit_kind: str, unit: str | None = None, group: str | None = None) -> str:
    q = {"protocol": protocol, "unit_kind": unit_kind}
    if unit:
        q["unit"] = unit
    if group:
        q["group"] = group
    return f"{PREFIX}/audit/{measure}/patients?{urlencode(q)}"


@router.get("/audit")
def audit_page(request: Request, unit_kind: UnitKind = "practice", protocol: Short = None,
               measure: Short = None, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "audit:read")
    by_unit, area = aapi.measures_with_area(unit_kind, protocol or None, who, state)
    # outcome measures (`value:`, e.g. admissions per person) are counts, not proportions: the outcomes page
    # shows them; here their "rate" would read as a 0 % process measure
    lib = state.library
    is_outcome = {id(r): lib.is_value_measure(r.protocol, r.version, r.measure) for r in area.rows}
    outcome_measures = sorted({r.measure for r in area.rows if is_outcome[id(r)]})
    measures = sorted((r for r in area.rows if not is_outcome[id(r)]), key=lambda r: (r.protocol, r.measure))
    chosen = next((r for r in measures if r.measure == measure and (not protocol or r.protocol == protocol)), None)
    if chosen is None and measures:  # the measure with the most to compare: most units with data, then most patients
        units_with_data: dict[tuple, int] = {}
        for r in by_unit.rows:
            if r.denominator - r.exclusions - r.exceptions > 0:
                units_with_data[(r.protocol, r.measure)] = units_with_data.get((r.protocol, r.measure), 0) + 1
        chosen = min(measures, key=lambda r: (-units_with_data.get((r.protocol, r.measure), 0),
                                              -(r.denominator - r.exclusions - r.exceptions), r.protocol, r.measure))
    # Small-number suppression for those outside the care team (auditors see aggregates only):
    # counts 1-7 shown as "<8", as NHS statistical publications do.
    suppress = who.role == "auditor"
    # inverse measures (`improvement: decrease`, e.g. CMS122 poor HbA1c control): lower is better
    lower = {(r.protocol, r.measure) for r in measures if lib.improvement(r.protocol, r.version, r.measure) == "decrease"}
    ctx: dict = {"suppress": suppress, "min_to_rank": MIN_TO_RANK, "lower_is_better": False}
    if chosen is not None:
        lower_is_better = ctx["lower_is_better"] = (chosen.protocol, chosen.measure) in lower
        rows = [r for r in by_unit.rows if r.measure == chosen.measure and r.protocol == chosen.protocol]
        name = (lambda u: practice_name(u)) if unit_kind == "practice" else (lambda u: u)  # noqa: E731
        units = [Unit(label=name(r.unit), rate=r.rate, n=r.denominator - r.exclusions - r.exceptions, numerator=r.numerator, ci=r.ci95,
                      limits95=r.funnel95, comparison=r.comparison,
                      href=drill_url(chosen.measure, chosen.protocol, unit_kind, r.unit)) for r in rows]
        uid = f"{chosen.measure}-{unit_kind}".replace(".", "-")
        ctx["bars"] = ranked_bars(units, chosen.rate, f"bars-{uid}",
                                  f"{chosen.measure} by {UNIT_NAMES[unit_kind].lower()}, ranked, against the area rate"
                                  + (" (lower is better)" if lower_is_better else ""), suppress, lower_is_better)
        ctx["funnel"] = funnel_plot(units, chosen.rate, f"funnel-{uid}",
                                    f"{chosen.measure}: funnel plot of {UNIT_PLURALS[unit_kind].lower()} against the area rate"
                                    + (" (lower is better)" if lower_is_better else ""), suppress, lower_is_better)
        ctx["no_eligible"] = sorted(u.label for u in units if not u.n)
        ctx["too_few"] = sum(0 < u.n < MIN_TO_RANK for u in units)
        area_points = aapi.trend(chosen.measure, chosen.protocol, "area", None, who, state).points
        series = [("Area", [(p.as_of, p.rate) for p in area_points])]
        ctx["trend_area"] = area_points  # the area's exceptions and cannot-determine counts per reporting date
        for r in sorted(rows, key=lambda r: -(r.denominator - r.exclusions - r.exceptions))[:MAX_TREND_UNITS]:
            pts = aapi.trend(chosen.measure, chosen.protocol, unit_kind, r.unit, who, state).points
            if pts:
                series.append((name(r.unit), [(p.as_of, p.rate) for p in pts]))
        ctx["trend"] = trend_chart(series, f"trend-{uid}", f"{chosen.measure}: rate over reporting dates")
        ctx["trend_rows"] = series
        order = {u.label: i for i, u in enumerate(rank_order(units, lower_is_better))}
        ctx["rows"] = sorted((r for r in rows if r.denominator - r.exclusions - r.exceptions > 0), key=lambda r: order[name(r.unit)])
    return render(request, "audit.html", who, page_title="Audit dashboard", measures=measures, chosen=chosen,
                  unit_kind=unit_kind, unit_names=UNIT_NAMES, unit_plurals=UNIT_PLURALS, count=count_text,
                  exception_rate=exception_rate, protocol=protocol or "", snapshots=aapi.snapshots(who, state),
                  drill_url=drill_url, patients=area.patients, evaluated_from=area.evaluated_from,
                  evaluated_to=area.evaluated_to, counted_at=area.counted_at, recounting=area.recounting, today=state.now().date(), sparks=_sparklines(state, measures),
                  outcome_measures=outcome_measures, lower_measures=lower, judgement=judgement, **ctx)


def _sparklines(state, measures) -> dict[tuple[str, str], object]:
    """(protocol, measure) -> a sparkline of the area rate over the reporting snapshots (one query)."""
    points: dict[tuple[str, str], list] = {}
    with Session(state.engines.read) as s:
        for r in s.exec(select(AuditSnapshotRow).where(AuditSnapshotRow.unit_kind == "area")
                        .order_by(AuditSnapshotRow.as_of)):
            eligible = r.denominator - r.exclusions - r.exceptions
            points.setdefault((r.protocol, r.measure), []).append((r.as_of, r.numerator / eligible if eligible > 0 else None))
    return {(m.protocol, m.measure): sparkline(points.get((m.protocol, m.measure), []), f"{m.measure} area rate over time")
            for m in measures}


@router.post("/audit/snapshots")
def snapshot_form(request: Request, as_of: str = Form(""), csrf_token_: str = Form("", alias="csrf_token"),
                  who: Principal = Depends(page_user)):
    check_csrf(request, csrf_token_)
    need(request, who, "audit:snapshot")
    state = state_of(request)
    try:
        body = SnapshotIn(as_of=as_of)
    except ValidationError:
        return redirect(request, f"{PREFIX}/audit", flash="Give the reporting date as a date (YYYY-MM-DD).")
    out = aapi.snapshot(body, request, who, state)
    return redirect(request, f"{PREFIX}/audit",
                    flash=f"Snapshot taken as of {out.as_of.isoformat()}: {out.patients} patients, {out.rows} figures.")


@router.get("/audit/{measure}/patients")
def drill_page(request: Request, measure: Measure, protocol: Short = None,
               unit_kind: Literal["practice", "mdt", "locality", "area"] = "practice", unit: Short = None,
               group: list[aapi.Group] | None = Query(None),
               who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "audit:drilldown")
    out = aapi.drill_down(request, measure, protocol or None, unit_kind, unit or None, group, who, state)  # scope + log
    counts: dict[str, int] = {}
    for p in out.patients:
        counts[p.group] = counts.get(p.group, 0) + 1
    return render(request, "audit_drill.html", who, page_title=f"{measure}: patients", out=out, counts=counts,
                  group_names=GROUP_NAMES, unit_names=UNIT_NAMES, groups=group or [],
                  link_patients=not out.pseudonymised and who.role in ("clinical-lead", "practice-staff", "mdt-member"))

