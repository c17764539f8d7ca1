"""Monthly outcome rates per 1,000 people per year, crude and directly age-sex standardised, by area,
locality, MDT and practice; and the between-practice comparison (indirectly standardised ratios, funnel
limits).

The standard population is the **area's own population in the same cohort**: its person-years by age
band (0-17, 18-44, 45-64, 65-74, 75-84, 85+) and sex over every month reported. A unit's standardised rate
is the sum over strata of (stratum weight x the unit's stratum rate): what its rate would be with the
area cohort's age-sex mix. Strata where a unit has no person-time in a month are left out and the other
weights rescaled (said on the page as a caveat: small units' standardised rates rest on fewer strata).

The between-practice comparison uses indirect standardisation (observed / expected, expected = the
unit's person-years in each stratum x the area's stratum rate over the same months), the usual basis
for funnel plots (Spiegelhalter, Stat Med 2005;24:1185): control limits around 1 at 95 % and 99.8 %
from the Poisson distribution, by the square-root approximation ((sqrt(E) +/- z/2)^2 / E).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from engine.app.outcomes.table import OutcomeTable

Z95, Z998 = 1.959964, 3.090232
PER = 1000.0


@dataclass
class MonthPoint:
    month: str  # YYYY-MM
    events: float
    person_years: float
    crude: float | None  # per 1,000 people per year
    standardised: float | None


def _select(t: OutcomeTable, cohort: str, practices: set[str] | None):
    for (prac, b, sex, c), cell in t.cells.items():
        if c == cohort and (practices is None or prac in practices):
            yield (b, sex), cell


def standard(t: OutcomeTable, cohort: str) -> dict[tuple, float]:
    """Weights of the standard population (the area's cohort, all months): (band, sex) -> share."""
    py: dict[tuple, float] = {}
    for s, cell in _select(t, cohort, None):
        py[s] = py.get(s, 0.0) + sum(cell.person_years)
    total = sum(py.values())
    return {s: v / total for s, v in py.items()} if total else {}


def series(t: OutcomeTable, outcome: str, cohort: str, practices: set[str] | None = None,
           weights: dict | None = None) -> list[MonthPoint]:
    weights = weights if weights is not None else standard(t, cohort)
    n = len(t.months)
    ev = [0.0] * n
    py = [0.0] * n
    strata: dict[tuple, tuple[list, list]] = {}
    for s, cell in _select(t, cohort, practices):
        e, y = strata.setdefault(s, ([0.0] * n, [0.0] * n))
        for i in range(n):
            e[i] += cell.counts[outcome][i]
            y[i] += cell.person_years[i]
    for e, y in strata.values():
        for i in range(n):
            ev[i] += e[i]
            py[i] += y[i]
    out = []
    for i, m in enumerate(t.months):
        num = den = 0.0
        for s, (e, y) in strata.items():
            w = weights.get(s, 0.0)
            if y[i] > 0 and w > 0:
                num += w * e[i] / y[i]
                den += w
        out.append(MonthPoint(m.strftime("%Y-%m"), ev[i], py[i], PER * ev[i] / py[i] if py[i] else None,
                              PER * num / den if den else None))
    return out


def area_stratum_rates(t: OutcomeTable, outcome: str, cohort: str, months: range) -> dict[tuple, float]:
    e: dict[tuple, float] = {}
    y: dict[tuple, float] = {}
    for s, cell in _select(t, cohort, None):
        e[s] = e.get(s, 0.0) + sum(cell.counts[outcome][i] for i in months)
        y[s] = y.get(s, 0.0) + sum(cell.person_years[i] for i in months)
    return {s: e[s] / y[s] for s in e if y[s] > 0}


@dataclass
class FunnelUnit:
    label: str
    observed: float
    expected: float
    person_years: float
    ratio: float | None  # observed / expected (1 = the area's rate for the same age-sex mix)
    limits95: tuple[float, float] | None
    limits998: tuple[float, float] | None
    comparison: str  # above / within / below (95 % limits) / no-data

    @property
    def rate(self) -> float | None:  # indirectly standardised rate per 1,000 a year
        return None if self.ratio is None else self.ratio * self.area_rate

    area_rate: float = 0.0


def poisson_limits(expected: float, z: float) -> tuple[float, float] | None:
    """Limits for observed / expected around 1 (square-root approximation to the Poisson)."""
    if expected <= 0:
        return None
    r = math.sqrt(expected)
    return max(0.0, r - z / 2) ** 2 / expected, (r + z / 2) ** 2 / expected


def funnel(t: OutcomeTable, outcome: str, cohort: str, level: str, months: range | None = None) -> tuple[list[FunnelUnit], float]:
    """Units of a level against the area over `months` (default: the last 12): (units, area rate per 1,000 a year)."""
    months = months if months is not None else range(max(0, len(t.months) - 12), len(t.months))
    rates = area_stratum_rates(t, outcome, cohort, months)
    area_e = area_y = 0.0
    units = []
    for name in t.unit_names(level):
        pracs = t.practices(level, name)
        o = e = y = 0.0
        for s, cell in _select(t, cohort, pracs):
            py = sum(cell.person_years[i] for i in months)
            o += sum(cell.counts[outcome][i] for i in months)
            e += py * rates.get(s, 0.0)
            y += py
        area_e += o
        area_y += y
        lim95, lim998 = poisson_limits(e, Z95), poisson_limits(e, Z998)
        ratio = o / e if e > 0 else None
        cmp = "no-data" if ratio is None else "above" if ratio > lim95[1] else "below" if ratio < lim95[0] else "within"
        units.append(FunnelUnit(name, o, e, y, ratio, lim95, lim998, cmp))
    area_rate = PER * area_e / area_y if area_y else 0.0
    for u in units:
        u.area_rate = area_rate
    return units, area_rate


def overdispersion(units: list[FunnelUnit]) -> tuple[float | None, int]:
    """Spiegelhalter's multiplicative over-dispersion factor for a funnel (Stat Med 2005;24:1185, and
    Qual Saf Health Care 2005;14:347): phi = mean of the squared z-scores z = (O - E) / sqrt(E), with z
    winsorised at the 10th and 90th centiles so that outliers do not set it; and how many units lie outside
    95 % limits widened by sqrt(phi) when phi > 1 (the units that differ beyond the area's usual spread)."""
    zs = sorted((u.observed - u.expected) / math.sqrt(u.expected) for u in units if u.expected > 0)
    if len(zs) < 10:
        return None, sum(u.comparison in ("above", "below") for u in units)
    lo, hi = zs[int(0.1 * (len(zs) - 1))], zs[int(math.ceil(0.9 * (len(zs) - 1)))]
    phi = sum(min(hi, max(lo, z)) ** 2 for z in zs) / len(zs)
    k = math.sqrt(max(1.0, phi))
    outside = sum(1 for u in units if u.expected > 0 and abs(u.observed - u.expected) / math.sqrt(u.expected) > Z95 * k)
    return phi, outside
