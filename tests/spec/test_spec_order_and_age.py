"""before / after between events, age at the reference date and at the period's ends, sex."""
from __future__ import annotations

import pytest
from spec_support import fact, holds, record

VS = {"a": ["a1"], "b": ["b1"]}
ORDER = {"before": "latest(a) before latest(b)", "after": "latest(a) after latest(b)",
         "not_before": "not (latest(a) before latest(b))", "not_after": "not latest(a) after latest(b)"}


@pytest.mark.parametrize("a,b,expected", [
    ("2025-01-01", "2025-02-01", {"before", "not_after"}),
    ("2025-02-01", "2025-01-01", {"after", "not_before"}),
    ("2025-01-01", "2025-01-01", {"not_before", "not_after"}),             # same day: neither
    ("2025-01-01T08:00", "2025-01-01T20:00", {"not_before", "not_after"}),  # order is by date, not time
])
def test_before_after_between_events(spec, engine_name, a, b, expected):
    p = spec(valuesets=VS, rules=ORDER)
    assert holds(p, record(fact("a1", a), fact("b1", b)), "2025-06-15", engine_name) == expected


@pytest.mark.parametrize("present", ["a1", "b1", None])
def test_before_after_with_a_missing_side_is_false(spec, engine_name, present):
    p = spec(valuesets=VS, rules=ORDER)
    rec = record(fact(present, "2025-01-01")) if present else record()
    assert holds(p, rec, "2025-06-15", engine_name) == {"not_before", "not_after"}


def test_before_after_with_dates_and_events(spec, engine_name):
    p = spec(valuesets=VS, rules={"after_lit": "latest(a) after 2025-01-01", "before_lit": "latest(a) before 2025-01-01",
                                  "date_attr": "latest(a).date after earliest(a).date",
                                  "earliest_before": "earliest(a) before latest(a)"})
    rec = record(fact("a1", "2024-12-01"), fact("a1", "2025-01-02"))
    assert holds(p, rec, "2025-06-15", engine_name) == {"after_lit", "date_attr", "earliest_before"}
    one = record(fact("a1", "2025-01-01"))
    assert holds(p, one, "2025-06-15", engine_name) == set()


def test_after_uses_events_visible_at_the_reference_date(spec, engine_name):
    # b recorded after the reference date does not exist yet
    p = spec(valuesets=VS, rules={"b_after_a": "latest(b) after latest(a)"})
    rec = record(fact("a1", "2025-01-01"), fact("b1", "2025-07-01"))
    assert holds(p, rec, "2025-06-15", engine_name) == set()
    assert holds(p, rec, "2025-07-01", engine_name) == {"b_after_a"}


# ---- age ---------------------------------------------------------------------------------------------------------------
AGES = {"ge65": "age >= 65", "eq64": "age = 64", "lt65": "age < 65"}


@pytest.mark.parametrize("ref,expected", [
    ("2025-06-15", {"ge65"}),          # 65th birthday today
    ("2025-06-14", {"eq64", "lt65"}),  # the day before
    ("2025-06-16", {"ge65"}),
])
def test_age_is_whole_years_at_the_reference_date(spec, engine_name, ref, expected):
    p = spec(valuesets=VS, rules=AGES)
    assert holds(p, record(birth="1960-06-15"), ref, engine_name) == expected


def test_age_of_someone_born_on_a_leap_day(spec, engine_name):
    p = spec(valuesets=VS, rules={"adult": "age >= 17"})
    rec = record(birth="2008-02-29")
    assert holds(p, rec, "2025-02-28", engine_name) == set()
    assert holds(p, rec, "2025-03-01", engine_name) == {"adult"}
    assert holds(p, rec, "2024-02-29", engine_name) == set()  # 16 on the 2024 leap day


def test_age_at_period_start_and_end(spec, engine_name):
    # as of 2025-06-15 the 12-month period is 2024-06-16 .. 2025-06-15; born 1960-06-10:
    # 64 at the period start, 65 at its end (= the reference date)
    p = spec(valuesets=VS, rules={"start_64": "age_at_period_start = 64", "end_65": "age_at_period_end = 65",
                                  "age_65": "age = 65", "start_65": "age_at_period_start >= 65"})
    assert holds(p, record(birth="1960-06-10"), "2025-06-15", engine_name) == {"start_64", "end_65", "age_65"}


def test_age_at_period_start_birthday_on_the_first_day(spec, engine_name):
    p = spec(valuesets=VS, rules={"start_65": "age_at_period_start = 65", "start_64": "age_at_period_start = 64"})
    assert holds(p, record(birth="1959-06-16"), "2025-06-15", engine_name) == {"start_65"}
    assert holds(p, record(birth="1959-06-17"), "2025-06-15", engine_name) == {"start_64"}


def test_age_with_explicit_period_start(spec, engine_name):
    p = spec(valuesets=VS, rules={"start_18": "age_at_period_start >= 18"})
    rec = record(birth="2007-01-01")
    assert holds(p, rec, "2025-06-15", engine_name) == set()  # period starts 2024-06-16, aged 17
    assert holds(p, rec, "2025-06-15", engine_name, period_start="2025-01-01") == {"start_18"}


def test_age_in_years_unit_is_accepted(spec, engine_name):
    p = spec(valuesets=VS, rules={"ge": "age >= 65 a"})
    assert holds(p, record(birth="1960-06-15"), "2025-06-15", engine_name) == {"ge"}


def test_sex(spec, engine_name):
    p = spec(valuesets=VS, rules={"f": 'sex = "female"', "not_m": "sex != 'male'"})
    assert holds(p, record(sex="female"), "2025-06-15", engine_name) == {"f", "not_m"}
    assert holds(p, record(sex="male"), "2025-06-15", engine_name) == set()
    assert holds(p, record(), "2025-06-15", engine_name) == {"not_m"}  # unknown is a value, not missing
