"""Missing-data semantics and `where` filters."""
from __future__ import annotations

import pytest
from spec_support import fact, holds, record

VS = {"x": {"codes": ["x1", "x2"], "unit": "mmol/L"}, "y": {"codes": ["y1"], "unit": "mmol/L"},
      "x2_only": ["x2"], "coded_result": ["r1"]}

MISSING = {
    "gt": "latest(x).value > 5 mmol/L",
    "le": "latest(x).value <= 5 mmol/L",
    "not_gt": "not (latest(x).value > 5 mmol/L)",
    "not_le": "not latest(x).value <= 5 mmol/L",
    "ne": "latest(x).value != 5 mmol/L",
    "eq": "latest(x).value = 5 mmol/L",
    "event_missing": "latest(x) is missing",
    "set_missing": "x is missing",
    "value_missing": "latest(x).value is missing",
    "count0": "count(x) = 0",
    "exists": "latest(x) exists",
    "date_after": "latest(x).date > 2000-01-01",
    "not_date_after": "not (latest(x).date > 2000-01-01)",
}


def test_nothing_recorded(spec, engine_name):
    p = spec(valuesets=VS, rules=MISSING)
    # a comparison on a missing value is false, whichever way round; `not` of it is true
    assert holds(p, record(), engine=engine_name) == {"not_gt", "not_le", "event_missing", "set_missing",
                                                      "value_missing", "count0", "not_date_after"}


def test_recorded_without_a_value(spec, engine_name):
    p = spec(valuesets=VS, rules=MISSING)
    got = holds(p, record(fact("x1", "2025-01-01")), engine=engine_name)
    assert got == {"not_gt", "not_le", "value_missing", "exists", "date_after"}


def test_recorded_with_a_value(spec, engine_name):
    p = spec(valuesets=VS, rules=MISSING)
    got = holds(p, record(fact("x1", "2025-01-01", 4, "mmol/L")), engine=engine_name)
    assert got == {"le", "not_gt", "ne", "exists", "date_after"}


def test_value_with_an_inconvertible_unit_is_missing(spec, engine_name):
    p = spec(valuesets=VS, rules=MISSING)
    got = holds(p, record(fact("x1", "2025-01-01", 4, "kg")), engine=engine_name)
    assert got == {"not_gt", "not_le", "value_missing", "exists", "date_after"}


def test_end_is_missing_for_an_event_still_going_on(spec, engine_name):
    p = spec(valuesets=VS, rules={"open": "latest(x).end is missing", "ended": "latest(x).end <= 2025-03-01",
                                  "date_missing": "latest(x).date is missing"})
    assert holds(p, record(fact("x1", "2025-01-01", kind="condition")), engine=engine_name) == {"open"}
    assert holds(p, record(fact("x1", "2025-01-01", end="2025-02-01", kind="condition")), engine=engine_name) == {"ended"}
    assert holds(p, record(), engine=engine_name) == {"open", "date_missing"}


def test_comparing_two_values_when_one_is_missing(spec, engine_name):
    p = spec(valuesets=VS, rules={"gt": "latest(x).value > latest(y).value", "not_gt": "not (latest(x).value > latest(y).value)",
                                  "le": "latest(x).value <= latest(y).value"})
    assert holds(p, record(fact("x1", "2025-01-01", 6, "mmol/L")), engine=engine_name) == {"not_gt"}
    both = record(fact("x1", "2025-01-01", 6, "mmol/L"), fact("y1", "2025-01-01", 5, "mmol/L"))
    assert holds(p, both, engine=engine_name) == {"gt"}


def test_missing_inside_and_or(spec, engine_name):
    p = spec(valuesets=VS, rules={"or": "latest(x).value > 5 mmol/L or age >= 0", "and": "latest(x).value > 5 mmol/L and age >= 0",
                                  "not_and": "not (latest(x).value > 5 mmol/L and age >= 0)",
                                  "not_or": "not (latest(x).value > 5 mmol/L or age < 0)"})
    assert holds(p, record(), engine=engine_name) == {"or", "not_and", "not_or"}


def test_missing_value_in_a_definition_used_twice(spec, engine_name):
    p = spec(valuesets=VS, define={"last_x": "latest(x) within 12 months"},
             rules={"high": "last_x.value > 5 mmol/L", "not_high": "not (last_x.value > 5 mmol/L)", "none": "last_x is missing"})
    assert holds(p, record(fact("x1", "2020-01-01", 9, "mmol/L")), engine=engine_name) == {"not_high", "none"}
    assert holds(p, record(fact("x1", "2025-01-01", 9, "mmol/L")), engine=engine_name) == {"high"}


# ---- where ------------------------------------------------------------------------------------------------------------
def test_where_value(spec, engine_name):
    rec = record(fact("x1", "2025-01-01", 4, "mmol/L"), fact("x1", "2025-02-01", 6, "mmol/L"), fact("x1", "2025-03-01"),
                 fact("x1", "2025-04-01", 5, "mmol/L"))
    p = spec(valuesets=VS, rules={
        "gt5_one": "count(x where value > 5 mmol/L) = 1",
        "ge5_two": "count(x where value >= 5 mmol/L) = 2",
        "le5_two": "count(x where value <= 5 mmol/L) = 2",   # the event without a value is in neither
        "ne5_two": "count(x where value != 5 mmol/L) = 2",
        "latest_gt5_feb": "latest(x where value > 5 mmol/L).date = 2025-02-01",
    })
    assert holds(p, rec, engine=engine_name) == {"gt5_one", "ge5_two", "le5_two", "ne5_two", "latest_gt5_feb"}


def test_where_status(spec, engine_name):
    rec = record(fact("x1", "2025-01-01", status="final"), fact("x1", "2025-02-01", status="amended"),
                 fact("x1", "2025-03-01", status="cancelled"), fact("x1", "2025-04-01"))
    p = spec(valuesets=VS, rules={
        "final_one": 'count(x where status = "final") = 1',
        "not_final_two": 'count(x where status != "final") = 2',   # no status: never matches a status test
        "in_two": "count(x where status in ('final', 'amended')) = 2",
        "latest_final": 'latest(x where status = "final").date = 2025-01-01',
        "latest_is_final": 'latest(x) where status = "final"',      # the latest event, kept only if final
    })
    assert holds(p, rec, engine=engine_name) == {"final_one", "not_final_two", "in_two", "latest_final"}


def test_where_setting_kind_and_source_attributes(spec, engine_name):
    rec = record(fact("x1", "2025-01-01", setting="acute", kind="encounter", ward="A"),
                 fact("x1", "2025-02-01", setting="community", kind="procedure"))
    p = spec(valuesets=VS, rules={
        "acute": 'count(x where setting = "acute") = 1',
        "community_or_mh": "count(x where setting in (\"community\", \"mental-health\")) = 1",
        "procedure": 'latest(x where kind = "procedure").date = 2025-02-01',
        "source": 'count(x where source = "spec") = 2',
    })
    assert holds(p, rec, engine=engine_name) == {"acute", "community_or_mh", "procedure", "source"}


def test_where_code_in_valueset(spec, engine_name):
    rec = record(fact("x1", "2025-01-01"), fact("x2", "2025-02-01"), fact("x2", "2025-03-01"))
    p = spec(valuesets=VS, rules={"x2_two": "count(x where code in x2_only) = 2",
                                  "x1_listed": "count(x where code in ('x1')) = 1",
                                  "latest_x2": "latest(x where code in x2_only).date = 2025-03-01"})
    assert holds(p, rec, engine=engine_name) == {"x2_two", "x1_listed", "latest_x2"}


def test_where_value_code_in_valueset(spec, engine_name):
    rec = record(fact("x1", "2025-01-01", value_codes=["r1"]), fact("x1", "2025-02-01", value_codes=["r9"]), fact("x1", "2025-03-01"))
    p = spec(valuesets=VS, rules={"coded": "count(x where value_code in coded_result) = 1",
                                  "listed": "count(x where value_code in ('r9', 'r7')) = 1"})
    assert holds(p, rec, engine=engine_name) == {"coded", "listed"}


def test_filters_chain(spec, engine_name):
    rec = record(fact("x1", "2025-01-01", 6, "mmol/L", status="final"), fact("x1", "2025-02-01", 6, "mmol/L", status="preliminary"),
                 fact("x1", "2024-01-01", 6, "mmol/L", status="final"))
    p = spec(valuesets=VS, rules={"one": 'count(x where value > 5 mmol/L where status = "final" within 12 months) = 1'})
    assert holds(p, rec, engine=engine_name) == {"one"}


# ---- entered in error ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["entered-in-error", "Entered-In-Error"])
def test_entered_in_error_facts_do_not_exist(spec, engine_name, status):
    rec = record(fact("x1", "2025-01-01", 4, "mmol/L"), fact("x1", "2025-03-01", 9, "mmol/L", status=status))
    p = spec(valuesets=VS, rules={"latest4": "latest(x).value = 4 mmol/L", "count1": "count(x) = 1",
                                  "max4": "max(x).value = 4 mmol/L", "err": f'count(x where status = "{status}") > 0'})
    assert holds(p, rec, engine=engine_name) == {"latest4", "count1", "max4"}


def test_a_diagnosis_entered_in_error_is_not_a_diagnosis(spec, engine_name):
    p = spec(valuesets=VS, population="exists(x)", rules={"r": "exists(x)"})
    rec = record(fact("x1", "2025-01-01", kind="condition", status="entered-in-error"))
    assert holds(p, rec, engine=engine_name) == set()
