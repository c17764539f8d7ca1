"""XmR (individuals) statistical process control charts, as NHS England's "Making Data Count" sets them out.

    chart = xmr(values, baseline=None)   # mean, moving ranges, process limits, special-cause points

Following NHS England / NHS Improvement, *Making Data Count: Getting started* (2019) and *Strengthening
your decisions* (2019), and Wheeler's XmR chart:

* centre line: the mean of the (baseline) points;
* moving range: |x[i] - x[i-1]|; mean moving range over the baseline;
* process limits: mean +/- 2.66 x mean moving range (2.66 = 3 / d2, d2 = 1.128 for ranges of two);
  a rate cannot be negative, so a lower limit below zero is shown as zero;
* special cause, each rule naming the points it marks:
  - "outside": a single point above the upper or below the lower process limit;
  - "shift": a run of 7 or more consecutive points all above, or all below, the mean (a point exactly
    on the mean breaks the run);
  - "trend": 6 or more consecutive points each higher than the one before (or each lower); an equal
    value breaks the trend.

`baseline` (number of leading points) freezes the limits on a period before a change, as Making Data
Count advises when testing whether a change made a difference; by default every point is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SHIFT_RUN = 7
TREND_RUN = 6
SIGMA_FACTOR = 2.66


@dataclass
class XmR:
    values: list[float]
    mean: float
    mean_moving_range: float
    upper: float
    lower: float
    baseline: int
    rules: dict[str, list[int]] = field(default_factory=dict)  # rule -> indices of the points it marks

    def special(self, i: int) -> list[str]:
        return [r for r, idx in self.rules.items() if i in idx]

    @property
    def variation(self) -> str:
        """Making Data Count's headline: special cause (high / low) or common cause."""
        if not any(self.rules.values()):
            return "common cause"
        last = len(self.values) - 1
        hi = any(self.values[i] > self.mean for r in self.rules.values() for i in r)
        lo = any(self.values[i] < self.mean for r in self.rules.values() for i in r)
        return "special cause (" + ("higher" if hi and not lo else "lower" if lo and not hi else "both") + (
            ", including the latest point)" if self.special(last) else ")")


def _runs(flags: list[int], length: int) -> list[int]:
    """Indices in runs of at least `length` equal non-zero flags."""
    out, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            if flags[start] != 0 and i - start >= length:
                out.extend(range(start, i))
            start = i
    return out


def xmr(values: list[float], baseline: int | None = None) -> XmR:
    if len(values) < 2:
        raise ValueError("an XmR chart needs at least two points")
    n = len(values) if baseline is None else max(2, min(baseline, len(values)))
    base = values[:n]
    mean = sum(base) / n
    mrs = [abs(base[i] - base[i - 1]) for i in range(1, n)]
    mr = sum(mrs) / len(mrs)
    upper, lower = mean + SIGMA_FACTOR * mr, max(0.0, mean - SIGMA_FACTOR * mr)
    rules = {
        "outside": [i for i, v in enumerate(values) if v > upper or v < lower],
        "shift": _runs([(v > mean) - (v < mean) for v in values], SHIFT_RUN),
    }
    # a trend of 6 points = 5 consecutive rises (or falls); mark every point of it
    steps = [(values[i] > values[i - 1]) - (values[i] < values[i - 1]) for i in range(1, len(values))]
    trend = set()
    for i in _runs(steps, TREND_RUN - 1):
        trend.update((i, i + 1))
    rules["trend"] = sorted(trend)
    return XmR(list(values), mean, mr, upper, lower, n, rules)
