"""The statistics of the risk-model check (engine/app/outcomes/risk_model.py), in plain Python.

- `auc` / `delong`: the c-statistic (area under the ROC curve) of a score for a yes/no outcome, ties counted
  one half (the Mann-Whitney form), with DeLong's variance (DeLong, DeLong & Clarke-Pearson, Biometrics 1988):
  a 95 % interval for one score and for the difference between two scores on the same people (paired).
- `poisson_fit`: a Poisson regression of a count on a score with an exposure offset
  (log E[count] = log(exposure) + a + b * score), fitted by iteratively reweighted least squares: the model
  that turns a score into an *expected* number of admissions for the calibration table.
- `poisson_ci`: an exact (Garwood) 95 % interval for an observed count, Byar's approximation above 1,000.
- `deciles`: people ordered by score and cut into ten groups of (nearly) equal size, with observed and
  expected sums per group.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

Z95 = 1.959964


# ---- discrimination ---------------------------------------------------------------------------------
def _placements(cases: list[float], controls: list[float]) -> tuple[list[float], list[float]]:
    """DeLong's structural components: for each case the share of controls it outranks (ties one half),
    for each control the share of cases that outrank it."""
    sc, sn = sorted(cases), sorted(controls)
    m, n = len(sc), len(sn)
    memo: dict[float, float] = {}

    def above_controls(x: float) -> float:
        if x not in memo:
            lo, hi = bisect.bisect_left(sn, x), bisect.bisect_right(sn, x)
            memo[x] = (lo + 0.5 * (hi - lo)) / n
        return memo[x]

    memo2: dict[float, float] = {}

    def below_cases(y: float) -> float:
        if y not in memo2:
            lo, hi = bisect.bisect_left(sc, y), bisect.bisect_right(sc, y)
            memo2[y] = ((m - hi) + 0.5 * (hi - lo)) / m
        return memo2[y]

    return [above_controls(x) for x in cases], [below_cases(y) for y in controls]


def auc(scores: list[float], outcomes: list[bool]) -> float | None:
    """The c-statistic: the chance that a random person with the outcome scores higher than a random
    person without it (ties one half). None when either group is empty."""
    cases = [s for s, o in zip(scores, outcomes) if o]
    controls = [s for s, o in zip(scores, outcomes) if not o]
    if not cases or not controls:
        return None
    v10, _ = _placements(cases, controls)
    return sum(v10) / len(v10)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _cov(xs: list[float], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mx, my = _mean(xs), _mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (len(xs) - 1)


@dataclass
class AUC:
    auc: float | None
    se: float | None
    lower: float | None
    upper: float | None
    cases: int
    controls: int

    def as_dict(self) -> dict:
        return {"auc": _r(self.auc), "se": _r(self.se), "ci95": [_r(self.lower), _r(self.upper)]
                if self.lower is not None else None, "with_outcome": self.cases, "without_outcome": self.controls,
                "method": "DeLong (1988) variance, normal 95 % interval, clipped to 0-1"}


def _r(x, nd: int = 4):
    return None if x is None else round(x, nd) + 0.0  # + 0.0: never "-0.0"


def delong(scores: dict[str, list[float]], outcomes: list[bool]) -> tuple[dict[str, AUC], dict[tuple[str, str], dict]]:
    """AUC with DeLong's 95 % interval for each named score (same people, same order), and the paired
    difference of every pair of scores (first minus second) with its interval and two-sided p-value."""
    idx_cases = [i for i, o in enumerate(outcomes) if o]
    idx_controls = [i for i, o in enumerate(outcomes) if not o]
    m, n = len(idx_cases), len(idx_controls)
    comps: dict[str, tuple[list[float], list[float]]] = {}
    out: dict[str, AUC] = {}
    for name, s in scores.items():
        if not m or not n:
            out[name] = AUC(None, None, None, None, m, n)
            continue
        v10, v01 = _placements([s[i] for i in idx_cases], [s[i] for i in idx_controls])
        comps[name] = (v10, v01)
        a = _mean(v10)
        var = _cov(v10, v10) / m + _cov(v01, v01) / n
        se = math.sqrt(max(var, 0.0))
        out[name] = AUC(a, se, max(0.0, a - Z95 * se), min(1.0, a + Z95 * se), m, n)
    pairs: dict[tuple[str, str], dict] = {}
    names = list(comps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (a10, a01), (b10, b01) = comps[a], comps[b]
            diff = _mean(a10) - _mean(b10)
            var = (_cov(a10, a10) + _cov(b10, b10) - 2 * _cov(a10, b10)) / m \
                + (_cov(a01, a01) + _cov(b01, b01) - 2 * _cov(a01, b01)) / n
            se = math.sqrt(max(var, 0.0))
            p = math.erfc(abs(diff) / se / math.sqrt(2)) if se > 0 else (1.0 if diff == 0 else 0.0)
            pairs[(a, b)] = {"difference": _r(diff), "ci95": [_r(diff - Z95 * se), _r(diff + Z95 * se)],
                             "p": _r(p, 6), "method": "DeLong (1988), paired"}
    return out, pairs


# ---- a model for the expected count -----------------------------------------------------------------
@dataclass
class PoissonFit:
    intercept: float
    slope: float
    converged: bool

    def expected(self, score: float, exposure: float) -> float:
        return exposure * math.exp(self.intercept + self.slope * score)


def poisson_fit(scores: list[float], counts: list[float], exposure: list[float], iterations: int = 50) -> PoissonFit:
    """Poisson regression, log E[count] = log(exposure) + a + b * score, by IRLS (Newton's method on the
    2 x 2 information matrix). A score that does not vary gives b = 0 and a = log(total / exposure). People with
    the same score are summed first (counts and exposures are sufficient statistics), so the fit costs one
    pass over the people whatever the iterations."""
    grouped: dict[float, list[float]] = {}  # people with the same score share a rate: their sums are sufficient
    for s, c, e in zip(scores, counts, exposure):
        if e > 0:
            g = grouped.setdefault(s, [0.0, 0.0])
            g[0] += c
            g[1] += e
    pts = [(s, c, e) for s, (c, e) in grouped.items()]
    total, expo = sum(c for _, c, _ in pts), sum(e for _, _, e in pts)
    if not pts or expo <= 0:
        return PoissonFit(0.0, 0.0, False)
    a = math.log(total / expo) if total > 0 else math.log(0.5 / expo)
    if len({s for s, _, _ in pts}) < 2 or total == 0:
        return PoissonFit(a, 0.0, True)
    b = 0.0
    mean_s = sum(s * e for s, _, e in pts) / expo  # centre the score: better conditioned steps
    for _ in range(iterations):
        g0 = g1 = h00 = h01 = h11 = 0.0
        for s, c, e in pts:
            x = s - mean_s
            mu = e * math.exp(min(a + b * x, 700.0))
            r = c - mu
            g0 += r
            g1 += r * x
            h00 += mu
            h01 += mu * x
            h11 += mu * x * x
        det = h00 * h11 - h01 * h01
        if det <= 0:
            break
        da = (h11 * g0 - h01 * g1) / det
        db = (h00 * g1 - h01 * g0) / det
        a, b = a + da, b + db
        if abs(da) < 1e-10 and abs(db) < 1e-10:
            return PoissonFit(a - b * mean_s, b, True)
    return PoissonFit(a - b * mean_s, b, False)


# ---- intervals for counts ---------------------------------------------------------------------------
def _poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu), summed in log space."""
    if mu <= 0:
        return 1.0
    total, log_mu = 0.0, math.log(mu)
    for i in range(k + 1):
        total += math.exp(i * log_mu - mu - math.lgamma(i + 1))
    return min(1.0, total)


def _solve(f, lo: float, hi: float) -> float:
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def poisson_ci(k: int, alpha: float = 0.05) -> tuple[float, float]:
    """95 % interval for a Poisson count k: exact (Garwood) up to 1,000, Byar's approximation above."""
    if k > 1000:
        z = Z95
        lo = k * (1 - 1 / (9 * k) - z / (3 * math.sqrt(k))) ** 3
        hi = (k + 1) * (1 - 1 / (9 * (k + 1)) + z / (3 * math.sqrt(k + 1))) ** 3
        return lo, hi
    top = k + 10 * math.sqrt(k + 1) + 20
    lower = 0.0 if k == 0 else _solve(lambda mu: 1 - _poisson_cdf(k - 1, mu) < alpha / 2, 0.0, top)
    upper = _solve(lambda mu: _poisson_cdf(k, mu) > alpha / 2, 0.0, top)
    return lower, upper


# ---- calibration by decile --------------------------------------------------------------------------
def deciles(scores: list[float], observed: list[float], expected: list[float], order_key: list | None = None,
            groups: int = 10) -> list[dict]:
    """People ordered by score (ties in `order_key` order, so a run of equal scores may span two groups),
    cut into `groups` groups of sizes differing by at most one; per group: people, score range, observed
    and expected sums, the ratio observed / expected with the exact interval of the observed count."""
    n = len(scores)
    keys = order_key if order_key is not None else list(range(n))
    order = sorted(range(n), key=lambda i: (scores[i], keys[i]))
    out = []
    for g in range(groups):
        lo, hi = g * n // groups, (g + 1) * n // groups
        members = order[lo:hi]
        if not members:
            continue
        obs = sum(observed[i] for i in members)
        exp = sum(expected[i] for i in members)
        ci = poisson_ci(int(round(obs)))
        out.append({"group": g + 1, "people": len(members), "score_min": _r(scores[members[0]]),
                    "score_max": _r(scores[members[-1]]), "observed": _r(obs, 3), "expected": _r(exp, 3),
                    "observed_per_person": _r(obs / len(members)), "expected_per_person": _r(exp / len(members)),
                    "ratio": _r(obs / exp, 3) if exp > 0 else None,
                    "ratio_ci95": [_r(ci[0] / exp, 3), _r(ci[1] / exp, 3)] if exp > 0 else None})
    return out
