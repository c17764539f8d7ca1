"""Time windows: `within N ...` look-back, `within N after/before X`, `during/overlaps period`, as-of visibility."""
from __future__ import annotations

import pytest
from spec_support import fact, fired, holds, record

VS = {"x": ["x1"], "y": ["y1"]}


# ---- look-back from the reference date: (reference - N, reference] ----------------------------------------------
@pytest.mark.parametrize("when,inside", [
    ("2024-06-15", False),          # exactly 12 months ago: excluded ("in the preceding 12 months")
    ("2024-06-15T23:59", False),    # the time of day does not matter, only the date
    ("2024-06-16", True),           # the day after: included
    ("2025-06-15", True),           # the reference date itself: included
    ("2025-06-15T23:59", True),
    ("2025-06-16", False),          # after the reference date: not yet happened
])
def test_within_12_months_bounds(spec, engine_name, when, inside):
    p = spec(valuesets=VS, rules={"w": "latest(x) within 12 months", "c": "count(x within 12 months) = 1"})
    got = holds(p, record(fact("x1", when)), "2025-06-15", engine_name)
    assert got == ({"w", "c"} if inside else set())


@pytest.mark.parametrize("window,outside,inside", [
    ("30 days", "2025-05-16", "2025-05-17"),
    ("1 day", "2025-06-14", "2025-06-15"),
    ("0 days", "2025-06-15", None),          # an empty window: nothing is within 0 days
    ("2 weeks", "2025-06-01", "2025-06-02"),
    ("1 week", "2025-06-08", "2025-06-09"),
    ("3 months", "2025-03-15", "2025-03-16"),
    ("1 year", "2024-06-15", "2024-06-16"),
    ("2 years", "2023-06-15", "2023-06-16"),
])
def test_within_each_unit(spec, engine_name, window, outside, inside):
    p = spec(valuesets=VS, rules={"w": f"x within {window}"})
    assert holds(p, record(fact("x1", outside)), "2025-06-15", engine_name) == set()
    if inside:
        assert holds(p, record(fact("x1", inside)), "2025-06-15", engine_name) == {"w"}


def test_singular_and_plural_units_mean_the_same(spec, engine_name):
    p = spec(valuesets=VS, rules={"a": "x within 1 month", "b": "x within 1 months", "c": "x within 1 years",
                                  "d": "x within 7 day"})
    assert holds(p, record(fact("x1", "2025-06-10")), "2025-06-15", engine_name) == {"a", "b", "c", "d"}


def test_month_arithmetic_clamps_to_month_end(spec, engine_name):
    # 2025-03-31 minus 1 month = 2025-02-28: the 28th is outside, 1 March inside
    p = spec(valuesets=VS, rules={"w": "x within 1 month"})
    assert holds(p, record(fact("x1", "2025-02-28")), "2025-03-31", engine_name) == set()
    assert holds(p, record(fact("x1", "2025-03-01")), "2025-03-31", engine_name) == {"w"}


@pytest.mark.parametrize("window", ["12 months", "1 year"])
def test_leap_day_reference(spec, engine_name, window):
    # 2024-02-29 minus 12 months = 2023-02-28 (clamped): the 28th is excluded, 1 March included
    p = spec(valuesets=VS, rules={"w": f"latest(x) within {window}"})
    assert holds(p, record(fact("x1", "2023-02-28")), "2024-02-29", engine_name) == set()
    assert holds(p, record(fact("x1", "2023-03-01")), "2024-02-29", engine_name) == {"w"}


def test_leap_day_event_one_year_on(spec, engine_name):
    # an event on 2024-02-29 is exactly 12 months before 2025-02-28? No: 2025-02-28 - 12 months = 2024-02-28,
    # so the leap day is inside the window; it falls out on 2025-03-01 (- 12 months = 2024-03-01 > 02-29).
    p = spec(valuesets=VS, rules={"w": "x within 12 months"})
    assert holds(p, record(fact("x1", "2024-02-29")), "2025-02-28", engine_name) == {"w"}
    assert holds(p, record(fact("x1", "2024-02-29")), "2025-03-01", engine_name) == set()


def test_facts_after_the_reference_date_are_invisible_everywhere(spec, engine_name):
    future = record(fact("x1", "2025-06-16"), fact("y1", "2025-07-01"))
    p = spec(valuesets=VS, rules={"exists": "exists(x)", "count": "count(x) > 0", "latest": "latest(x) exists",
                                  "missing": "latest(x) is missing", "y_missing": "y is missing",
                                  "period": "x during period", "overlaps": "x overlaps period"})
    assert holds(p, future, "2025-06-15", engine_name) == {"missing", "y_missing"}
    # ... and visible once the reference date reaches them
    assert "exists" in holds(p, future, "2025-06-16", engine_name)


def test_window_on_one_event_keeps_or_drops_that_event(spec, engine_name):
    # `earliest(x) within 3 months` is the first x ever, kept only if it is recent;
    # `earliest(x within 3 months)` is the first of the recent ones.
    rec = record(fact("x1", "2024-01-01"), fact("x1", "2025-05-01"))
    p = spec(valuesets=VS, rules={"earliest_then_window": "earliest(x) within 3 months",
                                  "window_then_earliest": "earliest(x within 3 months) exists"})
    assert holds(p, rec, "2025-06-15", engine_name) == {"window_then_earliest"}


# ---- anchored windows: within N after X = [X, X + N]; within N before X = [X - N, X] -------------------------------
@pytest.mark.parametrize("when,inside", [
    ("2024-12-31", False), ("2025-01-01", True), ("2025-01-31", True), ("2025-02-01", False)])
def test_within_after_is_inclusive_at_both_ends(spec, engine_name, when, inside):
    rec = record(fact("y1", "2025-01-01"), fact("x1", when))
    p = spec(valuesets=VS, rules={"w": "x within 30 days after latest(y)"})
    assert holds(p, rec, "2025-06-15", engine_name) == ({"w"} if inside else set())


@pytest.mark.parametrize("when,inside", [
    ("2024-12-01", False), ("2024-12-02", True), ("2025-01-01", True), ("2025-01-02", False)])
def test_within_before_is_inclusive_at_both_ends(spec, engine_name, when, inside):
    rec = record(fact("y1", "2025-01-01"), fact("x1", when))
    p = spec(valuesets=VS, rules={"w": "x within 30 days before latest(y)"})
    assert holds(p, rec, "2025-06-15", engine_name) == ({"w"} if inside else set())


def test_within_after_in_months_clamps(spec, engine_name):
    # 2025-01-31 + 1 month = 2025-02-28
    p = spec(valuesets=VS, rules={"w": "x within 1 month after latest(y)"})
    assert holds(p, record(fact("y1", "2025-01-31"), fact("x1", "2025-02-28")), "2025-06-15", engine_name) == {"w"}
    assert holds(p, record(fact("y1", "2025-01-31"), fact("x1", "2025-03-01")), "2025-06-15", engine_name) == set()


def test_anchored_window_with_missing_anchor_is_empty(spec, engine_name):
    p = spec(valuesets=VS, rules={"after": "x within 30 days after latest(y)", "before": "x within 30 days before latest(y)",
                                  "not_after": "not (x within 30 days after latest(y))"})
    assert holds(p, record(fact("x1", "2025-01-01")), "2025-06-15", engine_name) == {"not_after"}


def test_anchor_may_be_a_date_or_the_period(spec, engine_name):
    p = spec(valuesets=VS, rules={"lit": "x within 10 days after 2025-01-01",
                                  "ref": "x within 7 days before reference_date",
                                  "start": "x within 1 month after period_start"})
    # period (12 months) as of 2025-06-15 starts 2024-06-16
    assert holds(p, record(fact("x1", "2025-01-11")), "2025-06-15", engine_name) == {"lit"}
    assert holds(p, record(fact("x1", "2025-06-08")), "2025-06-15", engine_name) == {"ref"}
    assert holds(p, record(fact("x1", "2024-07-16")), "2025-06-15", engine_name) == {"start"}
    assert holds(p, record(fact("x1", "2024-07-17")), "2025-06-15", engine_name) == set()


def test_anchored_window_relative_to_an_event_of_the_same_set(spec, engine_name):
    # the t2dm "two invitations at least 7 days apart" idiom
    cond = "count(x) >= 2 and not (latest(x) within 6 days after earliest(x))"
    p = spec(valuesets=VS, rules={"apart": cond})
    assert holds(p, record(fact("x1", "2025-01-01"), fact("x1", "2025-01-08")), "2025-06-15", engine_name) == {"apart"}
    assert holds(p, record(fact("x1", "2025-01-01"), fact("x1", "2025-01-07")), "2025-06-15", engine_name) == set()
    assert holds(p, record(fact("x1", "2025-01-01")), "2025-06-15", engine_name) == set()


# ---- measurement period ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("when,inside", [("2024-06-15", False), ("2024-06-16", True), ("2025-06-15", True)])
def test_during_period_default_is_the_12_months_ending_on_the_reference_date(spec, engine_name, when, inside):
    p = spec(valuesets=VS, rules={"d": "x during period"})
    assert holds(p, record(fact("x1", when)), "2025-06-15", engine_name) == ({"d"} if inside else set())


def test_protocol_period_sets_the_default_period_start(spec, engine_name):
    p = spec(valuesets=VS, rules={"d": "x during period"}, period="3 months")
    assert holds(p, record(fact("x1", "2025-03-15")), "2025-06-15", engine_name) == set()
    assert holds(p, record(fact("x1", "2025-03-16")), "2025-06-15", engine_name) == {"d"}


def test_explicit_period_start(spec, engine_name):
    p = spec(valuesets=VS, rules={"d": "x during period", "age_start": "age_at_period_start >= 65"})
    rec = record(fact("x1", "2024-12-31"), birth="1960-01-01")
    assert holds(p, rec, "2025-06-15", engine_name, period_start="2025-01-01") == {"age_start"}
    assert holds(p, rec, "2025-06-15", engine_name, period_start="2024-12-31") == {"d"}


def test_during_period_uses_the_start_date_only(spec, engine_name):
    # started before the period and still going: not "during", but it overlaps
    rec = record(fact("x1", "2023-01-01", kind="condition"))
    p = spec(valuesets=VS, rules={"during": "x during period", "overlaps": "x overlaps period"})
    assert holds(p, rec, "2025-06-15", engine_name) == {"overlaps"}


@pytest.mark.parametrize("start,end,overlaps", [
    ("2023-01-01", None, True),                 # open-ended: still going
    ("2023-01-01", "2024-06-15", False),        # ended the day before the period started
    ("2023-01-01", "2024-06-16", True),         # ended on the first day of the period
    ("2024-07-01", "2024-08-01", True),         # wholly inside
    ("2025-06-15", None, True),                 # starts on the last day
])
def test_overlaps_period(spec, engine_name, start, end, overlaps):
    p = spec(valuesets=VS, rules={"o": "x overlaps period"})
    rec = record(fact("x1", start, end=end, kind="condition"))
    assert holds(p, rec, "2025-06-15", engine_name) == ({"o"} if overlaps else set())


def test_context_dates_compare_with_event_dates(spec, engine_name):
    p = spec(valuesets=VS, rules={"after_start": "latest(x).date >= period_start",
                                  "before_ref": "latest(x) before reference_date"})
    assert holds(p, record(fact("x1", "2024-06-16")), "2025-06-15", engine_name) == {"after_start", "before_ref"}
    assert holds(p, record(fact("x1", "2025-06-15")), "2025-06-15", engine_name) == {"after_start"}
    assert holds(p, record(fact("x1", "2024-06-15")), "2025-06-15", engine_name) == {"before_ref"}


def test_raw_keys_include_population(spec, engine_name):
    p = spec(valuesets=VS, population="exists(x)", rules={"r": "exists(y)"})
    assert fired(p, record(fact("x1", "2025-01-01")), "2025-06-15", engine_name) == {"population"}
