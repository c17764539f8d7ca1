"""The outcomes view of the audit pages (issue 19): for a cohort and an outcome, XmR charts of the
monthly age-sex standardised rate for the area or each locality / MDT / a practice, the funnel between
units, and — given pilot practices and a start month — the before/after and difference-in-differences
comparison with its caveats and the savings scenario. Figures are the outcome measures of the pilot-outcomes
protocol (`value:` measures, its cohorts) over the registry's records, counted by the protocol route
(engine/app/outcomes/protocol_route.py from_registry; docs/outcomes.md). The table is counted once a day (per
as-of date and protocol version) and kept: the figures are complete months, which change only as late
records arrive, while the registry changes with every delivery — a table keyed by its content would be
recounted (~20-30 s for three years of months) on nearly every visit of a live service. The page says when
it was counted."""
from __future__ import annotations

import datetime as dt
import threading
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request

from api.deps import Principal
from api.web.charts import count_text
from api.web.common import PREFIX, PageRoute, need, page_user, render, state_of
from api.web.outcome_charts import RULE_WORDS, ratio_funnel, spc_chart
from engine.app.outcomes import rates, spc
from engine.app.outcomes.report import CAVEATS, DEFAULT_COST, Options, build, pilot_practices
from engine.app.outcomes.protocol_route import from_registry
from engine.app.outcomes.risk_model import choose_protocol
from engine.app.outcomes.table import COHORT_NAMES, OUTCOME_NAMES, OutcomeTable

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
Short = Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9._, -]*$")]
Month = Annotated[str | None, Query(pattern=r"^(\d{4}-\d{2})?$")]
LEVEL_NAMES = {"area": "Area", "locality": "Localities", "mdt": "MDTs", "practice": "Practice"}
PLURAL = {"practice": "practices", "mdt": "MDTs", "locality": "localities"}


def money(x: float) -> str:
    return ("−" if x < 0 else "") + f"£{abs(x):,.0f}"
MAX_PRACTICE_CHARTS = 1
PROTOCOL = "pilot-outcomes"  # the outcome measures the page counts with
DEFAULT_COHORT = "75-plus"
MONTHS: int | None = None  # months evaluated (None: every complete month of the 3 years reported)

_cache: dict = {}
_lock = threading.Lock()


def outcome_table(state, as_of: dt.date) -> tuple[OutcomeTable, dt.datetime]:
    """The registry's outcome table for an as-of date by the protocol route (the pilot-outcomes version in
    force then), counted once per date and protocol version; (table, when it was counted)."""
    eng = state.engines.read
    proto = choose_protocol(state.library.protocols, PROTOCOL, as_of)
    key = (str(eng.url), as_of, proto.key, MONTHS)
    with _lock:
        if _cache.get("key") != key:
            _cache.clear()
            _cache.update(key=key, table=from_registry(eng, proto, as_of, months=MONTHS), counted_at=state.now())
        return _cache["table"], _cache["counted_at"]


@router.get("/audit/outcomes")
def outcomes_page(request: Request, cohort: Short = DEFAULT_COHORT,
                  outcome: Literal["emergency_admission", "ae_attendance", "bed_days", "readmission_30d"] = "emergency_admission",
                  level: Literal["area", "locality", "mdt", "practice"] = "area", unit: Short = None,
                  funnel_level: Literal["practice", "mdt", "locality"] = "practice",
                  pilot: Short = None, start: Month = None, cost: Annotated[float, Query(ge=0, le=1e6)] = DEFAULT_COST,
                  who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "audit:read")
    as_of = state.now().date()
    try:
        t, counted_at = outcome_table(state, as_of)
    except ValueError as e:  # no pilot-outcomes protocol in the library
        return render(request, "audit_outcomes.html", who, page_title="Outcomes", t=None, error=str(e),
                      outcome=outcome, outcome_names=OUTCOME_NAMES)
    if not t.cohorts():
        return render(request, "audit_outcomes.html", who, page_title="Outcomes", t=None, outcome=outcome,
                      outcome_names=OUTCOME_NAMES, error="No one in the registry is in a pilot cohort yet.")
    months = [m.strftime("%Y-%m") for m in t.months]
    error = None
    if cohort not in t.cohorts():
        error, cohort = (f"No cohort {cohort!r} here: the cohorts are {', '.join(t.cohorts())}.",
                         DEFAULT_COHORT if DEFAULT_COHORT in t.cohorts() else t.cohorts()[0])
    unavailable = t.unavailable.get(outcome)
    if unavailable:
        error = (f"{OUTCOME_NAMES[outcome]} cannot be counted: {unavailable}. No chart is drawn until the site "
                 f"supplies it (carepath codelists import); nothing is counted as 0 in its place.")
    pilot_set: frozenset[str] = frozenset()
    if pilot:
        try:
            pilot_set = pilot_practices(t, pilot)
        except ValueError as e:
            error = str(e)
    if start and start not in months:
        error, start = f"The start month {start} is outside the months reported ({months[0]} to {months[-1]}).", None
    if pilot_set and start and months.index(start) < 2:
        error, start = "Choose a start month with at least two months before it.", None
    units = t.unit_names(level) if level != "area" else ["area"]
    if level == "practice":
        units = [unit] if unit in t.units else units[:MAX_PRACTICE_CHARTS]
    elif unit and unit in units:
        units = [unit]
    unit_label = "per 1,000 people a year"
    if unavailable:
        units = []
    charts = []
    start_index = months.index(start) if start else None
    for name in units:
        pracs = None if level == "area" else t.practices(level, name)
        pts = rates.series(t, outcome, cohort, pracs)
        values = [p.standardised for p in pts]
        if sum(v is not None for v in values) < 2:
            charts.append({"name": name, "svg": None, "chart": None, "points": pts})
            continue
        baseline = start_index if start_index is not None and start_index >= 12 else None
        chart = spc.xmr([v if v is not None else 0.0 for v in values], baseline=baseline)
        uid = f"spc-{level}-{name}".replace(".", "-").replace(" ", "-")
        svg = spc_chart(months, values, chart, uid,
                        f"{OUTCOME_NAMES[outcome]}, {COHORT_NAMES[cohort].lower()}: {name if level != 'area' else 'the area'}, "
                        f"monthly, age-sex standardised", unit_label, start_index)
        charts.append({"name": name, "svg": svg, "chart": chart, "points": pts})
    funnel_units, area_rate = rates.funnel(t, outcome, cohort, funnel_level)
    q = {"cohort": cohort, "outcome": outcome}
    hrefs = {u.label: f"{PREFIX}/audit/outcomes?" + urlencode({**q, "level": funnel_level, "unit": u.label})
             for u in funnel_units}
    funnel_svg = ratio_funnel(funnel_units, f"funnel-{funnel_level}",
                              f"{OUTCOME_NAMES[outcome]}: {LEVEL_NAMES[funnel_level].lower()} against the area, last 12 months",
                              hrefs)
    comparison = scenario = None
    if pilot_set and start and not error and not unavailable:
        rep = build(t, Options(cohort=cohort, outcome=outcome, pilot=pilot_set, start_month=start, cost=cost,
                               resamples=1000))
        comparison, scenario = rep.get("comparison"), rep.get("savings_scenario")
    outside = [u for u in funnel_units if u.comparison in ("above", "below")]
    phi, outside_adjusted = rates.overdispersion(funnel_units)
    return render(request, "audit_outcomes.html", who, page_title="Outcomes", t=t, months=months, cohort=cohort,
                  outcome=outcome, level=level, unit=unit or "", funnel_level=funnel_level, pilot=pilot or "",
                  start=start or "", cost=cost, charts=charts, funnel=funnel_svg, funnel_units=funnel_units,
                  area_rate=area_rate, outside=outside, phi=phi, outside_adjusted=outside_adjusted, comparison=comparison, scenario=scenario, error=error,
                  cohort_names={c: COHORT_NAMES[c] for c in t.cohorts()}, outcome_names=OUTCOME_NAMES, level_names=LEVEL_NAMES,
                  rule_words=RULE_WORDS, caveats=CAVEATS, as_of=as_of, counted_at=counted_at, pilot_count=len(pilot_set), unavailable=unavailable,
                  protocol_label=t.source.split('protocol measures ')[-1].split(' ')[0],
                  suppress=who.role == "auditor", count=count_text, unit_label=unit_label,
                  all_units={k: t.unit_names(k) for k in ("locality", "mdt", "practice")}, plural=PLURAL, money=money)
