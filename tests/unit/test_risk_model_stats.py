"""The statistics of the risk-model check (engine/app/outcomes/risk_model_stats.py) on hand-made data with
known answers: no test here depends on the synthetic generator."""
from __future__ import annotations

import math
import random

import pytest

from engine.app.outcomes.risk_model_stats import auc, deciles, delong, poisson_ci, poisson_fit


def test_auc_perfect_reversed_ties_and_a_small_example():
    outcomes = [False, False, False, True, True]
    assert auc([1, 2, 3, 4, 5], outcomes) == 1.0
    assert auc([5, 4, 3, 2, 1], outcomes) == 0.0
    assert auc([7, 7, 7, 7, 7], outcomes) == 0.5
    # cases 2 and 4, controls 1 and 3: 2 beats 1, loses to 3; 4 beats both -> 3 of 4 pairs
    assert auc([1, 2, 3, 4], [False, True, False, True]) == 0.75
    # ties count one half: cases (2, 2) against controls (1, 2) -> (1 + 0.5) * 2 / 4
    assert auc([2, 2, 1, 2], [True, True, False, False]) == 0.75
    assert auc([1, 2], [True, True]) is None  # no one without the outcome


def _delong_by_hand(scores, outcomes):
    """DeLong's variance written out pair by pair (O(m n)), to check the sorted implementation."""
    cases = [s for s, o in zip(scores, outcomes) if o]
    controls = [s for s, o in zip(scores, outcomes) if not o]
    psi = lambda x, y: 1.0 if x > y else 0.5 if x == y else 0.0  # noqa: E731
    v10 = [sum(psi(x, y) for y in controls) / len(controls) for x in cases]
    v01 = [sum(psi(x, y) for x in cases) / len(cases) for y in controls]
    a = sum(v10) / len(v10)
    var = lambda v: sum((t - sum(v) / len(v)) ** 2 for t in v) / (len(v) - 1)  # noqa: E731
    return a, math.sqrt(var(v10) / len(cases) + var(v01) / len(controls))


def test_delong_matches_the_pairwise_definition():
    rng = random.Random(4)
    outcomes = [rng.random() < 0.3 for _ in range(120)]
    scores = [rng.randint(0, 6) + (2 if o else 0) for o in outcomes]  # discrete, with many ties
    res, _ = delong({"s": scores}, outcomes)
    a, se = _delong_by_hand(scores, outcomes)
    assert res["s"].auc == pytest.approx(a) and res["s"].se == pytest.approx(se)
    assert res["s"].lower == pytest.approx(a - 1.959964 * se) and res["s"].upper == pytest.approx(a + 1.959964 * se)
    assert res["s"].cases == sum(outcomes) and res["s"].controls == len(outcomes) - sum(outcomes)


def test_delong_paired_difference():
    rng = random.Random(9)
    outcomes = [rng.random() < 0.4 for _ in range(200)]
    good = [rng.gauss(1.0 if o else 0.0, 1.0) for o in outcomes]
    res, pairs = delong({"good": good, "same": list(good), "reversed": [-x for x in good]}, outcomes)
    same = pairs[("good", "same")]
    assert same["difference"] == 0 and same["ci95"] == [0, 0] and same["p"] == 1.0
    rev = pairs[("good", "reversed")]
    assert rev["difference"] == pytest.approx(res["good"].auc - (1 - res["good"].auc), abs=1e-4)
    assert rev["ci95"][0] > 0 and rev["p"] < 0.001
    assert res["reversed"].auc == pytest.approx(1 - res["good"].auc)


def test_poisson_fit_recovers_a_known_model():
    # counts exactly equal to their expectation under log mu = log(e) - 2 + 0.3 s: the MLE is that model
    scores = [s for s in range(10) for _ in range(3)]
    exposure = [1.0, 0.5, 0.25] * 10
    counts = [e * math.exp(-2 + 0.3 * s) for s, e in zip(scores, exposure)]
    fit = poisson_fit(scores, counts, exposure)
    assert fit.converged
    assert fit.intercept == pytest.approx(-2, abs=1e-6) and fit.slope == pytest.approx(0.3, abs=1e-6)
    assert fit.expected(4, 0.5) == pytest.approx(0.5 * math.exp(-2 + 1.2))


def test_poisson_fit_in_sample_totals_and_a_flat_score():
    rng = random.Random(2)
    scores = [rng.randint(0, 8) for _ in range(500)]
    counts = [int(rng.random() < 0.05 * (1 + s)) for s in scores]
    exposure = [1.0] * 500
    fit = poisson_fit(scores, counts, exposure)
    assert sum(fit.expected(s, e) for s, e in zip(scores, exposure)) == pytest.approx(sum(counts), rel=1e-6)
    assert fit.slope > 0
    flat = poisson_fit([3] * 10, [0, 1, 0, 2, 0, 0, 1, 0, 0, 1], [1.0] * 10)
    assert flat.slope == 0 and math.exp(flat.intercept) == pytest.approx(0.5)


def test_poisson_ci_known_values():
    # Garwood exact 95 % limits (e.g. PHE technical guide; Ulm 1990)
    assert poisson_ci(0) == pytest.approx((0.0, 3.689), abs=1e-3)
    assert poisson_ci(1) == pytest.approx((0.0253, 5.5716), abs=1e-3)
    assert poisson_ci(10) == pytest.approx((4.7954, 18.3904), abs=1e-3)
    lo, hi = poisson_ci(2000)  # Byar's approximation
    assert lo == pytest.approx(1913.3, abs=1.0) and hi == pytest.approx(2089.6, abs=1.0)


def test_deciles_sizes_sums_and_order():
    scores = list(range(100))
    observed = [1 if s >= 90 else 0 for s in scores]
    expected = [0.1] * 100
    groups = deciles(scores, observed, expected)
    assert [g["people"] for g in groups] == [10] * 10
    assert [g["observed"] for g in groups] == [0] * 9 + [10]
    assert groups[9]["score_min"] == 90 and groups[9]["score_max"] == 99
    assert groups[0]["expected"] == pytest.approx(1.0) and groups[9]["ratio"] == pytest.approx(10.0)
    # 25 people: sizes differ by at most one and cover everyone once; sums are kept
    rng = random.Random(1)
    s25 = [rng.randint(0, 3) for _ in range(25)]
    o25 = [rng.randint(0, 2) for _ in range(25)]
    g25 = deciles(s25, o25, [0.5] * 25, order_key=list(range(25)))
    assert sum(g["people"] for g in g25) == 25 and {g["people"] for g in g25} == {2, 3}
    assert sum(g["observed"] for g in g25) == sum(o25)
    assert all(a["score_max"] <= b["score_min"] for a, b in zip(g25, g25[1:]))  # ordered by score
