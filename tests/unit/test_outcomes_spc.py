"""XmR charts and the special-cause rules of NHS England's "Making Data Count" (Getting started, 2019;
Strengthening your decisions, 2019): limits at the mean +/- 2.66 x the mean moving range; a point outside
the limits; a run of 7 on one side of the mean; a trend of 6 rising or falling. Each series is made by
hand so its answer can be worked out on paper."""
import pytest

from engine.app.outcomes.spc import xmr


def test_limits_from_the_mean_moving_range():
    c = xmr([10, 12, 11, 13, 9])
    # mean 55 / 5 = 11; moving ranges 2, 1, 2, 4 -> mean 2.25; limits 11 +/- 2.66 x 2.25 = 11 +/- 5.985
    assert c.mean == pytest.approx(11)
    assert c.mean_moving_range == pytest.approx(2.25)
    assert (c.lower, c.upper) == (pytest.approx(5.015), pytest.approx(16.985))
    assert c.rules == {"outside": [], "shift": [], "trend": []}
    assert c.variation == "common cause"


def test_a_lower_limit_below_zero_is_shown_as_zero():
    c = xmr([1, 5, 1, 5])  # mean 3, mean moving range 4: 3 - 10.64 < 0
    assert c.lower == 0.0 and c.upper == pytest.approx(3 + 2.66 * 4)


def test_a_point_outside_the_limits():
    # limits frozen on the first 8 points: mean 5.5, moving ranges all 1 -> 5.5 +/- 2.66 = (2.84, 8.16)
    c = xmr([5, 6, 5, 6, 5, 6, 5, 6, 20, 5, 1], baseline=8)
    assert (c.lower, c.upper) == (pytest.approx(2.84), pytest.approx(8.16))
    assert c.rules["outside"] == [8, 10]  # 20 above the upper limit, 1 below the lower
    assert c.special(8) == ["outside"] and c.special(9) == []


def test_a_run_of_seven_on_one_side_of_the_mean():
    base = [6, 4, 6, 4, 6, 4]  # mean 5, moving ranges 2: limits 5 +/- 5.32 (lower shown as 0); ends below
    c = xmr(base + [6, 7, 6, 7, 6, 7, 6], baseline=6)
    assert c.rules["shift"] == [6, 7, 8, 9, 10, 11, 12]
    assert c.rules["outside"] == [] and c.rules["trend"] == []
    assert c.variation == "special cause (higher, including the latest point)"
    # six in a row is not enough
    assert xmr(base + [6, 7, 6, 7, 6, 7, 4], baseline=6).rules["shift"] == []
    # a point exactly on the mean breaks the run (3 + 3, not 7)
    assert xmr(base + [6, 6, 6, 5, 6, 6, 6], baseline=6).rules["shift"] == []
    # and below the mean counts the same way (after a baseline ending above it)
    assert xmr(base[::-1] + [4, 3, 4, 3, 4, 3, 4], baseline=6).rules["shift"] == [6, 7, 8, 9, 10, 11, 12]


def test_a_trend_of_six_rising_or_falling():
    # mean 54 / 13 = 4.15; moving ranges sum 15 / 12 = 1.25 -> limits 0.83 .. 7.48, nothing outside;
    # 1, 2, 3, 4, 5, 6 (points 5 to 10) rise five times running
    c = xmr([5, 4, 6, 5, 4, 1, 2, 3, 4, 5, 6, 5, 4])
    assert c.rules == {"outside": [], "shift": [], "trend": [5, 6, 7, 8, 9, 10]}
    # falling counts too
    assert xmr([2, 1, 2, 9, 8, 7, 6, 5, 4, 5, 4, 5]).rules["trend"] == [3, 4, 5, 6, 7, 8]
    # five points rising (four rises) is not a trend
    assert xmr([5, 4, 6, 5, 4, 1, 2, 3, 4, 5, 4, 5, 4]).rules["trend"] == []
    # an equal value breaks it: 1, 2, 3, 3, 4, 5, 6
    assert xmr([4, 5, 4, 1, 2, 3, 3, 4, 5, 6, 4, 5]).rules["trend"] == []


def test_needs_two_points():
    with pytest.raises(ValueError):
        xmr([3.0])
