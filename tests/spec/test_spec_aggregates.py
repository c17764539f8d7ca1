"""latest / earliest / count / exists / min / max over a value set's events."""
from __future__ import annotations

import pytest
from spec_support import fact, holds, record

VS = {"a": {"codes": ["a1", "a2"], "unit": "mmol/L"}, "b": ["b1"]}


@pytest.fixture
def three_readings():
    # as of 2025-06-15: 5 (Jan), 3 (Feb), 7 (Mar); nothing from value set b
    return record(fact("a1", "2025-01-10", 5, "mmol/L"), fact("a2", "2025-03-01", 7, "mmol/L"),
                  fact("a1", "2025-02-01", 3, "mmol/L"), fact("zz", "2025-04-01", 100, "mmol/L"))


def test_latest_and_earliest_pick_by_date(spec, engine_name, three_readings):
    p = spec(valuesets=VS, rules={
        "latest_is_7": "latest(a).value = 7 mmol/L",
        "latest_is_5": "latest(a).value = 5 mmol/L",
        "earliest_is_5": "earliest(a).value = 5 mmol/L",
        "earliest_is_3": "earliest(a).value = 3 mmol/L",
        "latest_date": "latest(a).date = 2025-03-01",
        "earliest_date": "earliest(a).date = 2025-01-10",
    })
    assert holds(p, three_readings, engine=engine_name) == {"latest_is_7", "earliest_is_5", "latest_date", "earliest_date"}


def test_min_and_max_pick_by_value(spec, engine_name, three_readings):
    p = spec(valuesets=VS, rules={
        "min_3": "min(a).value = 3 mmol/L", "max_7": "max(a).value = 7 mmol/L",
        "min_5": "min(a).value = 5 mmol/L", "max_5": "max(a).value = 5 mmol/L",
        "min_date": "min(a).date = 2025-02-01",
    })
    assert holds(p, three_readings, engine=engine_name) == {"min_3", "max_7", "min_date"}


def test_count_and_exists(spec, engine_name, three_readings):
    p = spec(valuesets=VS, rules={
        "count_3": "count(a) = 3", "count_ge_4": "count(a) >= 4", "count_b_0": "count(b) = 0",
        "exists_a": "exists(a)", "exists_b": "exists(b)", "latest_b_exists": "latest(b) exists",
        "a_exists": "a exists",
        # the window is (2025-02-15, 2025-06-15]: only the March reading
        "count_window": "count(a within 4 months) = 1",
    })
    assert holds(p, three_readings, engine=engine_name) == {"count_3", "count_b_0", "exists_a", "a_exists", "count_window"}


def test_count_of_nothing_is_zero_not_missing(spec, engine_name):
    p = spec(valuesets=VS, rules={"zero": "count(a) = 0", "lt1": "count(a) < 1", "gt0": "count(a) > 0",
                                  "not_gt0": "not count(a) > 0"})
    assert holds(p, record(), engine=engine_name) == {"zero", "lt1", "not_gt0"}


def test_latest_on_a_day_with_several_values_picks_the_lowest(spec, engine_name):
    # three readings on the latest day, the lowest neither first nor last in time
    rec = record(fact("a1", "2025-03-01T08:00", 9, "mmol/L"), fact("a1", "2025-03-01T11:00", 6, "mmol/L"),
                 fact("a2", "2025-03-01T16:30", 7, "mmol/L"), fact("a1", "2025-02-01", 2, "mmol/L"))
    p = spec(valuesets=VS, rules={"six": "latest(a).value = 6 mmol/L", "seven": "latest(a).value = 7 mmol/L",
                                  "nine": "latest(a).value = 9 mmol/L"})
    assert holds(p, rec, engine=engine_name) == {"six"}


def test_earliest_on_a_day_with_several_values_picks_the_lowest(spec, engine_name):
    rec = record(fact("a1", "2025-01-01T08:00", 9, "mmol/L"), fact("a1", "2025-01-01T17:00", 4, "mmol/L"),
                 fact("a1", "2025-02-01", 1, "mmol/L"))
    p = spec(valuesets=VS, rules={"four": "earliest(a).value = 4 mmol/L", "nine": "earliest(a).value = 9 mmol/L"})
    assert holds(p, rec, engine=engine_name) == {"four"}


def test_latest_prefers_a_valued_event_on_the_same_day(spec, engine_name):
    rec = record(fact("a1", "2025-03-01T08:00", 6, "mmol/L"), fact("a1", "2025-03-01T18:00"))
    p = spec(valuesets=VS, rules={"six": "latest(a).value = 6 mmol/L", "missing": "latest(a).value is missing"})
    assert holds(p, rec, engine=engine_name) == {"six"}


def test_latest_event_without_value_hides_older_values(spec, engine_name):
    # latest is by date: a later event with no value makes latest(a).value missing (it does not fall back)
    rec = record(fact("a1", "2025-01-01", 6, "mmol/L"), fact("a1", "2025-03-01"))
    p = spec(valuesets=VS, rules={"any_value": "latest(a).value > 0 mmol/L", "exists": "latest(a) exists",
                                  "max_6": "max(a).value = 6 mmol/L"})
    assert holds(p, rec, engine=engine_name) == {"exists", "max_6"}


def test_min_max_ignore_events_without_a_value(spec, engine_name):
    rec = record(fact("a1", "2025-03-01"), fact("a1", "2025-04-01"))
    p = spec(valuesets=VS, rules={"min": "min(a) exists", "max": "max(a) exists", "latest": "latest(a) exists"})
    assert holds(p, rec, engine=engine_name) == {"latest"}


def test_max_and_min_ties_go_to_the_latest_date(spec, engine_name):
    rec = record(fact("a1", "2025-01-01", 7, "mmol/L"), fact("a1", "2025-03-01", 7, "mmol/L"),
                 fact("a1", "2025-02-01", 2, "mmol/L"), fact("a1", "2025-04-01", 2, "mmol/L"))
    p = spec(valuesets=VS, rules={"max_march": "max(a).date = 2025-03-01", "max_jan": "max(a).date = 2025-01-01",
                                  "min_april": "min(a).date = 2025-04-01", "min_feb": "min(a).date = 2025-02-01"})
    assert holds(p, rec, engine=engine_name) == {"max_march", "min_april"}


def test_any_coding_of_a_fact_can_match(spec, engine_name):
    from engine.records.model import Fact
    multi = Fact(id="m1", kind="observation", start="2025-01-01", value=5, unit="mmol/L",
                 codes=[{"system": "loinc", "code": "x"}, {"system": "snomed", "code": "a2"}])
    p = spec(valuesets=VS, rules={"a": "latest(a).value = 5 mmol/L"})
    assert holds(p, record(multi), engine=engine_name) == {"a"}


def test_code_system_must_match(spec, engine_name):
    # value-set codes are SNOMED CT by default; the same code in another system is a different concept
    p = spec(valuesets=VS, rules={"a": "exists(a)"})
    assert holds(p, record(fact("a1", "2025-01-01", system="loinc")), engine=engine_name) == set()
    q = spec(valuesets={"a": {"codes": ["a1"], "system": "loinc"}}, rules={"a": "exists(a)"})
    assert holds(q, record(fact("a1", "2025-01-01", system="loinc")), engine=engine_name) == {"a"}
    r = spec(valuesets={"a": {"codes": ["loinc|a1", "snomed|a2"]}}, rules={"a": "exists(a)"})
    assert holds(r, record(fact("a1", "2025-01-01", system="loinc")), engine=engine_name) == {"a"}
