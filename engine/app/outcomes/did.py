"""Pilot practices against the rest, before and after a start date: difference-in-differences.

    did(table, outcome, cohort, pilot_practices, start_month)  -> DiD

The estimate is the ratio of rate ratios, (pilot after / pilot before) / (rest after / rest before), from
the events and person-years of the four groups; its logarithm is the interaction term of a Poisson rate
model log(rate) = group + period + group x period, and the relative change is that ratio minus 1.

Two 95 % intervals are given:

* **cluster bootstrap over practices** (the one we lead with): practices are resampled with replacement
  within the pilot and within the rest (2,000 resamples, seeded, percentile interval). The practice is
  the unit that joins the pilot, and practices differ from one another beyond chance — in case mix,
  coding, local services — so events are not independent across the person-time of a practice; the
  bootstrap carries that between-practice variation into the interval. It needs a reasonable number of
  pilot practices (we warn below 10).
* **Poisson (Wald)**: exp(log ratio +/- 1.96 sqrt(sum of 1 / events)). It assumes every event is an
  independent Poisson event, so it is too narrow when practices vary or events cluster within people
  (readmissions); shown for comparison.

A placebo test checks the parallel-trends assumption the estimate rests on: the same estimate with a
pretend start half-way through the before period, using before-period data only; an interval excluding
no change there says the groups were already diverging.
"""
from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field

from engine.app.outcomes.rates import PER
from engine.app.outcomes.table import OutcomeTable

Z95 = 1.959964


@dataclass
class Group:
    events_before: float
    py_before: float
    events_after: float
    py_after: float

    @property
    def rate_before(self) -> float | None:
        return PER * self.events_before / self.py_before if self.py_before else None

    @property
    def rate_after(self) -> float | None:
        return PER * self.events_after / self.py_after if self.py_after else None

    @property
    def rate_ratio(self) -> float | None:
        if not (self.events_before and self.py_after and self.py_before):
            return None
        return (self.events_after / self.py_after) / (self.events_before / self.py_before)

    def rate_ratio_ci(self) -> tuple[float, float] | None:
        rr = self.rate_ratio
        if not rr or not self.events_after:
            return None
        se = math.sqrt(1 / self.events_before + 1 / self.events_after)
        return rr * math.exp(-Z95 * se), rr * math.exp(Z95 * se)


@dataclass
class DiD:
    outcome: str
    cohort: str
    start_month: str
    pilot: Group
    rest: Group
    pilot_practices: int
    rest_practices: int
    ratio: float | None  # ratio of rate ratios
    ci_bootstrap: tuple[float, float] | None
    ci_poisson: tuple[float, float] | None
    placebo: "DiD | None" = None
    resamples: int = 0
    after_years: float = 0.0  # calendar length of the after period
    warnings: list[str] = field(default_factory=list)

    @property
    def relative_change(self) -> float | None:
        return None if self.ratio is None else self.ratio - 1

    def change_ci(self, which: str = "bootstrap") -> tuple[float, float] | None:
        ci = self.ci_bootstrap if which == "bootstrap" else self.ci_poisson
        return None if ci is None else (ci[0] - 1, ci[1] - 1)


def _per_practice(t: OutcomeTable, outcome: str, cohort: str, before: range, after: range) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for (prac, _b, _s, c), cell in t.cells.items():
        if c != cohort:
            continue
        acc = out.setdefault(prac, [0.0, 0.0, 0.0, 0.0])
        ev, py = cell.counts[outcome], cell.person_years
        acc[0] += sum(ev[i] for i in before)
        acc[1] += sum(py[i] for i in before)
        acc[2] += sum(ev[i] for i in after)
        acc[3] += sum(py[i] for i in after)
    return out


def _ratio(p: list[float], r: list[float]) -> float | None:
    try:
        return ((p[2] / p[3]) / (p[0] / p[1])) / ((r[2] / r[3]) / (r[0] / r[1]))
    except ZeroDivisionError:
        return None


def _sum(rows) -> list[float]:
    acc = [0.0, 0.0, 0.0, 0.0]
    for r in rows:
        for i in range(4):
            acc[i] += r[i]
    return acc


def _estimate(per: dict, pilot: set[str], outcome: str, cohort: str, start: str, resamples: int, seed: int) -> DiD:
    prow = [v for k, v in sorted(per.items()) if k in pilot]
    rrow = [v for k, v in sorted(per.items()) if k not in pilot]
    p, r = _sum(prow), _sum(rrow)
    ratio = _ratio(p, r)
    warnings = []
    ci_p = ci_b = None
    if ratio:
        se = math.sqrt(sum(1 / x for x in (p[0], p[2], r[0], r[2])))
        ci_p = (ratio * math.exp(-Z95 * se), ratio * math.exp(Z95 * se))
        rng = random.Random(seed)
        boots = []
        for _ in range(resamples):
            bp = _sum(prow[int(rng.random() * len(prow))] for _ in prow)
            br = _sum(rrow[int(rng.random() * len(rrow))] for _ in rrow)
            b = _ratio(bp, br)
            if b:
                boots.append(math.log(b))
        boots.sort()
        if len(boots) >= 0.9 * resamples and boots:
            ci_b = (math.exp(boots[int(0.025 * (len(boots) - 1))]), math.exp(boots[int(math.ceil(0.975 * (len(boots) - 1)))]))
    if outcome == "bed_days":
        ci_p = None
        warnings.append("bed days are not independent events (a stay is many days): no Poisson interval, only the "
                        "practice bootstrap")
    if len(prow) < 10:
        warnings.append(f"only {len(prow)} pilot practices: the practice bootstrap is unreliable with fewer than 10")
    if ratio is None:
        warnings.append("no events (or no person-time) in one of the four groups: no estimate")
    return DiD(outcome, cohort, start, Group(*p), Group(*r), len(prow), len(rrow), ratio, ci_b, ci_p,
               resamples=resamples, warnings=warnings)


def did(t: OutcomeTable, outcome: str, cohort: str, pilot: set[str], start_month: str, *, resamples: int = 2000,
        seed: int = 1, placebo: bool = True) -> DiD:
    """Pilot practices `pilot` against the other practices, months before `start_month` (YYYY-MM) against
    it and after."""
    labels = [m.strftime("%Y-%m") for m in t.months]
    if start_month not in labels:
        raise ValueError(f"start month {start_month} is not among the months reported ({labels[0]} to {labels[-1]})")
    k = labels.index(start_month)
    if k < 2:
        raise ValueError("the start month leaves too few months before it to compare with")
    per = _per_practice(t, outcome, cohort, range(0, k), range(k, len(labels)))
    out = _estimate(per, pilot, outcome, cohort, start_month, resamples, seed)
    out.after_years = sum(((t.months[i + 1] if i + 1 < len(t.months) else t.hi + dt.timedelta(days=1)) - t.months[i]).days
                          for i in range(k, len(labels))) / 365.25
    if placebo and k >= 4:
        h = k // 2
        pre = _per_practice(t, outcome, cohort, range(0, h), range(h, k))
        out.placebo = _estimate(pre, pilot, outcome, cohort, labels[h], resamples, seed)
    return out


@dataclass
class Savings:
    """A scenario, never a measurement: what the estimated change would be worth at an assumed cost."""
    admissions_avoided: float | None
    per_year: float | None
    cost_per_admission: float
    value_per_year: float | None
    range_per_year: tuple[float, float] | None  # from the interval of the estimate
    label: str = "Scenario (not a measured saving)"


def savings(d: DiD, cost_per_admission: float) -> Savings:
    """Admissions avoided in the pilot after the start = expected at the rest's trend - observed
    (events after / ratio - events after), per year of the after period, times the assumed cost; the range
    comes from the ends of the estimate's interval."""
    if d.ratio is None or not d.after_years:
        return Savings(None, None, cost_per_admission, None, None)
    obs, span = d.pilot.events_after, d.after_years
    avoided = obs / d.ratio - obs
    per_year = avoided / span
    ci = d.ci_bootstrap or d.ci_poisson
    rng = None
    if ci:
        rng = ((obs / ci[1] - obs) / span * cost_per_admission, (obs / ci[0] - obs) / span * cost_per_admission)
    return Savings(avoided, per_year, cost_per_admission, per_year * cost_per_admission, rng)
