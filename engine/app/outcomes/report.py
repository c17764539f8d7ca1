"""One outcome report (the command writes it, the audit pages draw it): for a cohort and an outcome,
the SPC chart of the standardised monthly rate at one level and unit, the funnel between units, and,
given pilot practices and a start month, the before/after and difference-in-differences comparison with
its caveats and the savings scenario."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from engine.app.outcomes import did as did_mod
from engine.app.outcomes import rates, spc
from engine.app.outcomes.table import COHORT_NAMES, OUTCOME_NAMES, OutcomeTable

LEVELS = ("area", "locality", "mdt", "practice")
DEFAULT_COST = 2000.0  # an assumed average cost of an emergency admission (GBP); set it from local costs

CAVEATS = [
    "Observational comparison: pilot practices were not chosen at random, so a difference may reflect how "
    "they were chosen (e.g. regression to the mean if chosen for high admission rates) rather than the pilot.",
    "The estimate assumes the pilot and the other practices would have followed parallel trends without the "
    "pilot; the placebo test below checks this only for the months before the start.",
    "Anything else that changed at the same time in the pilot practices (staff, other schemes, coding, "
    "hospital policy) is mixed into the estimate.",
    "Rates are crude in the difference-in-differences (age and sex mix within each group changes little over "
    "the period); the charts are directly age-sex standardised to the area cohort.",
    "Cohort membership is fixed at the start of each month (codes recorded before it, age on that day), so "
    "each month counts the people in the cohort then; people who registered or moved away during a month "
    "count for the whole month.",
    "The intervals allow for chance only; they do not cover bias, missing hospital data or coding changes. "
    "Looking at many cohorts, outcomes and units makes some 'significant' results likely by chance alone.",
]


def _month_index(t: OutcomeTable, month: str) -> int:
    labels = [m.strftime("%Y-%m") for m in t.months]
    return labels.index(month)


@dataclass
class Options:
    cohort: str = "all"
    outcome: str = "emergency_admission"
    level: str = "area"
    unit: str | None = None
    funnel_level: str = "practice"
    pilot: frozenset[str] = frozenset()
    start_month: str | None = None  # YYYY-MM
    cost: float = DEFAULT_COST
    resamples: int = 2000
    baseline_before_start: bool = True  # SPC limits from the months before the start, when there is one


def pilot_practices(t: OutcomeTable, spec: str) -> frozenset[str]:
    """Pilot practices from a comma-separated list of practice codes, MDTs or localities."""
    out: set[str] = set()
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        for level in ("practice", "mdt", "locality"):
            got = t.practices(level, item) if level != "practice" else ({item.upper()} & set(t.units))
            if got:
                out |= got
                break
        else:
            raise ValueError(f"{item!r} is not a practice, MDT or locality in the data")
    return frozenset(out)


def build(t: OutcomeTable, o: Options) -> dict:
    if o.outcome not in OUTCOME_NAMES or o.cohort not in t.cohorts() or o.level not in LEVELS:
        raise ValueError(f"unknown outcome, cohort or level (cohorts here: {', '.join(t.cohorts())})")
    if o.outcome in t.unavailable:
        raise ValueError(f"{OUTCOME_NAMES[o.outcome]} cannot be counted: {t.unavailable[o.outcome]}")
    practices = None if o.level == "area" else t.practices(o.level, o.unit)
    if o.level != "area" and not practices:
        raise ValueError(f"no practices in {o.level} {o.unit!r}")
    pts = rates.series(t, o.outcome, o.cohort, practices)
    values = [p.standardised if p.standardised is not None else 0.0 for p in pts]
    baseline = None
    if o.start_month and o.baseline_before_start:
        baseline = _month_index(t, o.start_month)
    chart = spc.xmr(values, baseline=baseline if baseline and baseline >= 12 else None)
    units, area_rate = rates.funnel(t, o.outcome, o.cohort, o.funnel_level)
    phi, outside_adjusted = rates.overdispersion(units)
    out = {
        "schema": "carepath.outcomes/v1",
        "as_of": t.as_of.isoformat(), "source": t.source, "people": t.people, "cohorts": t.cohorts(),
        "months": [t.months[0].strftime("%Y-%m"), t.months[-1].strftime("%Y-%m")],
        "cohort": o.cohort, "cohort_name": COHORT_NAMES[o.cohort],
        "outcome": o.outcome, "outcome_name": OUTCOME_NAMES[o.outcome],
        "unit": "per 1,000 people per year",
        "standard": "the area's population in the same cohort, person-years by age band (0-17, 18-44, 45-64, "
                    "65-74, 75-84, 85+) and sex over all months reported (direct standardisation)",
        "level": o.level, "unit_name": o.unit or "area",
        "series": [asdict(p) for p in pts],
        "spc": {"mean": chart.mean, "mean_moving_range": chart.mean_moving_range, "upper": chart.upper,
                "lower": chart.lower, "baseline_points": chart.baseline, "rules": chart.rules,
                "variation": chart.variation,
                "method": "XmR (NHS England Making Data Count): limits mean +/- 2.66 x mean moving range; "
                          "special cause: a point outside the limits, 7 in a row on one side of the mean, "
                          "6 in a row rising or falling"},
        "funnel": {"level": o.funnel_level, "months": 12, "area_rate": area_rate,
                   "method": "indirectly standardised ratio (observed / expected at the area's age-sex rates), "
                             "Poisson limits (square-root approximation) at 95% and 99.8%",
                   "overdispersion_phi": phi, "outside_95_widened_by_sqrt_phi": outside_adjusted,
                   "units": [{**asdict(u), "rate": u.rate} for u in units]},
    }
    if o.pilot and o.start_month:
        d = did_mod.did(t, o.outcome, o.cohort, set(o.pilot), o.start_month, resamples=o.resamples)
        out["comparison"] = did_dict(d)
        if o.outcome == "emergency_admission":
            s = did_mod.savings(d, o.cost)
            out["savings_scenario"] = {**asdict(s), "note": (
                "A scenario, not a measured saving: admissions avoided as estimated above (pilot admissions "
                "after the start at the other practices' trend, less those observed) times an assumed average "
                f"cost of £{o.cost:,.0f} an admission. Cash is released only if beds or staff are actually "
                "taken out; the range follows the estimate's interval.")}
    return out


def did_dict(d: did_mod.DiD) -> dict:
    def grp(g: did_mod.Group) -> dict:
        return {**asdict(g), "rate_before": g.rate_before, "rate_after": g.rate_after, "rate_ratio": g.rate_ratio,
                "rate_ratio_ci95": g.rate_ratio_ci()}

    out = {"start_month": d.start_month, "pilot_practices": d.pilot_practices, "other_practices": d.rest_practices,
           "pilot": grp(d.pilot), "rest": grp(d.rest), "ratio_of_rate_ratios": d.ratio,
           "relative_change": d.relative_change, "ci95_bootstrap": d.change_ci("bootstrap"),
           "ci95_poisson": d.change_ci("poisson"), "resamples": d.resamples,
           "method": ("difference-in-differences as a ratio of rate ratios (the interaction of a Poisson rate "
                      "model); 95% interval by cluster bootstrap over practices, resampled within pilot and "
                      "rest (lead: the practice is the unit that joins the pilot and practices vary beyond "
                      "chance), and the Poisson Wald interval for comparison (too narrow when they do)"),
           "warnings": d.warnings, "caveats": CAVEATS}
    if d.placebo is not None:
        out["placebo"] = {"start_month": d.placebo.start_month, "relative_change": d.placebo.relative_change,
                          "ci95_bootstrap": d.placebo.change_ci("bootstrap"),
                          "note": "pretend start half-way through the before period, before-period data only; "
                                  "an interval that excludes 0 means the groups were already diverging"}
    return out


def default_start(t: OutcomeTable) -> str:
    return t.months[len(t.months) // 2].strftime("%Y-%m")


def as_of_default() -> dt.date:
    return dt.date.today()
