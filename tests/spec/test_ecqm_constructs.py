"""Language constructs the eCQMs (CMS122, CMS165) need, written once and run on every engine.

- timing against an interval: `X during I`, `X ends during I`, `X entirely during I`, `X overlaps I`
  and `not` before each; I = `period`, a closed range of days `[a, b]`, or a list of events;
- date arithmetic: `period_start - 1 year`, `period_start + 6 months - 1 day`;
- `A union B`;
- complement filters: `where not F = v`, `where F not in (...)`, `where F not in valueset`;
- `E.result` and `is missing` on values an event may lack.

The measurement period in these tests is the calendar year 2026 (as of 2026-12-31, period start
2026-01-01), as in the eCQM kits.
"""
from __future__ import annotations

import pytest
from spec_support import fact, holds, protocol_text, record, write_protocol

from engine.ir.lowering import All, AnyOf, Cmp, lower_all
from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol

END, START = "2026-12-31", "2026-01-01"
VS = {"x": {"codes": ["x1"], "unit": "mmol/L"}, "y": ["y1"], "z": ["z1"], "yes": ["373066001"],
      "hba1c": {"codes": ["h1"], "unit": "%", "analyte": "hba1c"}, "gmi": {"codes": ["g1"], "unit": "%"},
      "bp": {"codes": ["b1"], "unit": "mm[Hg]"}}


def check(p, rec, engine):
    return holds(p, rec, END, engine, START)


# ---- timing against the measurement period ---------------------------------------------------------
PERIOD_RULES = {"starts": "x during period", "ends": "x ends during period", "entirely": "x entirely during period",
                "overlaps": "x overlaps period", "not_starts": "x not during period",
                "not_ends": "x not ends during period", "not_entirely": "x not entirely during period",
                "not_overlaps": "x not overlaps period"}


@pytest.mark.parametrize("start,end,inside", [
    # a point event (no end): its start is also its end
    ("2026-01-01T00:00", None, {"starts", "ends", "entirely", "overlaps"}),
    ("2026-12-31T23:59", None, {"starts", "ends", "entirely", "overlaps"}),
    # before the period with no end: still going on, so it overlaps; its "end" (= its start) is not in it
    ("2025-12-31T23:59", None, {"overlaps"}),
    # starts before the period, ends inside it (an eCQM "latest() during"): ends during, overlaps
    ("2025-12-31T00:00", "2026-01-01T00:00", {"ends", "overlaps"}),
    # starts inside, ends after (not yet visible to the as-of rule? it started, so it is seen)
    ("2026-12-31T00:00", "2027-01-01T00:00", {"starts", "overlaps"}),
    # wholly inside
    ("2026-01-02T00:00", "2026-01-03T00:00", {"starts", "ends", "entirely", "overlaps"}),
    # wholly before: ended the day before the period
    ("2025-12-30T00:00", "2025-12-31T23:59", set()),
    # spanning the whole period
    ("2025-06-01", "2027-06-01", {"overlaps"}),
])
def test_timing_against_the_period(spec, engine_name, start, end, inside):
    p = spec(valuesets=VS, rules=PERIOD_RULES)
    got = check(p, record(fact("x1", start, end=end, kind="condition")), engine_name)
    negated = {f"not_{k}" for k in ("starts", "ends", "entirely", "overlaps") if k not in inside}
    assert got == inside | negated


def test_not_timing_keeps_exactly_the_other_events(spec, engine_name):
    p = spec(valuesets=VS, rules={"two_outside": "count(x not during period) = 2", "one_inside": "count(x during period) = 1",
                                  "one_not_overlapping": "count(x not overlaps period) = 1", "none": "count(x not during period) = 0"})
    rec = record(fact("x1", "2025-05-01", end="2025-06-01"), fact("x1", "2026-05-01"), fact("x1", "2024-05-01"))
    assert check(p, rec, engine_name) == {"two_outside", "one_inside", "one_not_overlapping"}
    assert check(p, record(), engine_name) == {"none"}


# ---- ranges of days and date arithmetic ------------------------------------------------------------
@pytest.mark.parametrize("when,in_year_before,in_first_half", [
    ("2024-12-31", False, False),
    ("2025-01-01", True, False),        # period start - 1 year: inclusive
    ("2026-06-30T23:59", True, True),   # period start + 6 months - 1 day: inclusive
    ("2026-07-01T00:00", True, False),
    ("2026-12-31", True, False),        # period end: inclusive
])
def test_range_of_days_built_from_the_period(spec, engine_name, when, in_year_before, in_first_half):
    p = spec(valuesets=VS, rules={"year_before": "x during [period_start - 1 year, period_end]",
                                  "first_half": "x during [period_start, period_start + 6 months - 1 day]"})
    expected = {k for k, on in (("year_before", in_year_before), ("first_half", in_first_half)) if on}
    assert check(p, record(fact("x1", when, kind="condition")), engine_name) == expected


def test_overlaps_a_range_for_long_running_events(spec, engine_name):
    # a condition from 2020 still going on overlaps the first half of the period; one resolved in 2025 does not
    p = spec(valuesets=VS, rules={"o": "x overlaps [period_start, period_start + 6 months - 1 day]"})
    assert check(p, record(fact("x1", "2020-03-01", kind="condition")), engine_name) == {"o"}
    assert check(p, record(fact("x1", "2020-03-01", end="2025-12-31", kind="condition")), engine_name) == set()
    assert check(p, record(fact("x1", "2020-03-01", end="2026-01-01", kind="condition")), engine_name) == {"o"}


def test_range_ends_can_come_from_events_and_a_missing_end_holds_nothing(spec, engine_name):
    p = spec(valuesets=VS, rules={"after_y": "x during [latest(y).date, period_end]",
                                  "not_after_y": "x not during [latest(y).date, period_end]"})
    xs = [fact("x1", "2026-03-01"), fact("x1", "2026-09-01")]
    assert check(p, record(*xs, fact("y1", "2026-06-01")), engine_name) == {"after_y", "not_after_y"}
    assert check(p, record(*xs, fact("y1", "2026-10-01")), engine_name) == {"not_after_y"}
    assert check(p, record(*xs), engine_name) == {"not_after_y"}  # no y: the range is missing


def test_date_arithmetic_in_comparisons_and_month_end_clamping(spec, engine_name):
    p = spec(valuesets=VS, rules={"recent": "latest(x).date >= period_start - 1 month",
                                  "within_90_days_of_y": "latest(x).date <= latest(y).date + 90 days"})
    # 2026-03-31 - 1 month = 2026-02-28 (clamped)
    assert holds(p, record(fact("x1", "2026-02-28")), "2026-12-31", engine_name, "2026-03-31") == {"recent"}
    assert holds(p, record(fact("x1", "2026-02-27")), "2026-12-31", engine_name, "2026-03-31") == set()
    rec = record(fact("x1", "2026-04-01"), fact("y1", "2026-01-01"))  # y + 90 days = 2026-04-01
    assert check(p, rec, engine_name) == {"recent", "within_90_days_of_y"}
    assert check(p, record(fact("x1", "2026-04-01")), engine_name) == {"recent"}  # missing y: comparison false


# ---- timing against the spans of other events ------------------------------------------------------
STAY = dict(end="2026-03-04T01:00", kind="encounter")


@pytest.mark.parametrize("when,during_stay", [
    ("2026-03-02T00:00", True),    # the stay's first minute
    ("2026-03-04T01:00", True),    # its last minute
    ("2026-03-01T23:59", False),   # the minute before: same idea as an office reading before admission
    ("2026-03-04T01:01", False),
])
def test_readings_during_another_events_span_to_the_minute(spec, engine_name, when, during_stay):
    p = spec(valuesets=VS, rules={"in_stay": "bp during y", "outside": "bp not during y",
                                  "last_outside_below_140": "latest(bp not during y).value < 140 mmHg"})
    rec = record(fact("y1", "2026-03-02T00:00", **STAY), fact("b1", when, 135, "mm[Hg]"))
    assert check(p, rec, engine_name) == ({"in_stay"} if during_stay else {"outside", "last_outside_below_140"})


def test_the_latest_reading_outside_acute_stays_is_used(spec, engine_name):
    # the most recent reading (120, in an ED visit) is ignored; the one before (150, clinic) counts
    p = spec(valuesets=VS, define={"acute": "y union z", "readings": "bp ends during period not during acute"},
             rules={"controlled": "latest(readings).value < 140 mmHg", "n": "count(readings) = 1"})
    rec = record(fact("b1", "2026-05-01T10:00", 150, "mm[Hg]"), fact("z1", "2026-06-01T09:00", end="2026-06-01T12:00",
                                                                      kind="encounter"),
                 fact("b1", "2026-06-01T10:00", 120, "mm[Hg]"))
    assert check(p, rec, engine_name) == {"n"}


def test_an_event_without_an_end_is_still_going_on(spec, engine_name):
    p = spec(valuesets=VS, rules={"in_open_stay": "bp during y", "overlaps_open_stay": "x overlaps y"})
    rec = record(fact("y1", "2026-03-02T00:00", kind="encounter"), fact("b1", "2026-11-01", 120, "mm[Hg]"),
                 fact("x1", "2026-01-01", end="2026-03-02T00:00", kind="condition"))
    assert check(p, rec, engine_name) == {"in_open_stay", "overlaps_open_stay"}


def test_ends_entirely_and_overlaps_against_events(spec, engine_name):
    p = spec(valuesets=VS, rules={"starts": "x during y", "ends": "x ends during y", "entirely": "x entirely during y",
                                  "overlaps": "x overlaps y"})
    stay = fact("y1", "2026-03-02T00:00", end="2026-03-10T00:00", kind="encounter")
    spans = {("2026-03-01", "2026-03-05"): {"ends", "overlaps"},
             ("2026-03-05", "2026-03-06"): {"starts", "ends", "entirely", "overlaps"},
             ("2026-03-09", "2026-03-12"): {"starts", "overlaps"},
             ("2026-03-11", "2026-03-12"): set()}
    for (s, e), expected in spans.items():
        assert check(p, record(stay, fact("x1", s, end=e, kind="condition")), engine_name) == expected, (s, e)


# ---- union ---------------------------------------------------------------------------------------------
def test_union_counts_each_fact_once_and_picks_across_lists(spec, engine_name):
    both = {"codes": ["x1", "w1"], "unit": "mmol/L"}
    p = spec(valuesets={**VS, "xw": both},
             rules={"three": "count(x union xw) = 3", "latest_is_w": "latest(x union xw).value = 7 mmol/L",
                    "none": "(y union z) is missing"})
    rec = record(fact("x1", "2026-01-01", 5, "mmol/L"), fact("x1", "2026-02-01", 6, "mmol/L"),
                 fact("w1", "2026-03-01", 7, "mmol/L"))
    assert check(p, rec, engine_name) == {"three", "latest_is_w", "none"}


def test_union_of_hba1c_and_gmi_compares_in_their_shared_unit(spec, engine_name):
    p = spec(valuesets=VS, rules={"above_9": "latest(hba1c union gmi).value > 9 %"})
    assert check(p, record(fact("h1", "2026-02-01", 8.9, "%"), fact("g1", "2026-03-01", 9.1, "%")), engine_name) == {"above_9"}
    assert check(p, record(fact("g1", "2026-02-01", 9.1, "%"), fact("h1", "2026-03-01", 8.9, "%")), engine_name) == set()


# ---- complement filters, yes/no fields ----------------------------------------------------------------
def test_where_not_keeps_events_without_the_field(spec, engine_name):
    p = spec(valuesets=VS, rules={"ordered": "y where not do_not_perform = true",
                                  "explicit_false": "y where do_not_perform = false",
                                  "not_ordered": "y where do_not_perform = true"})
    assert check(p, record(fact("y1", "2026-03-01", kind="device")), engine_name) == {"ordered"}
    assert check(p, record(fact("y1", "2026-03-01", kind="device", do_not_perform=False)), engine_name) == {
        "ordered", "explicit_false"}
    assert check(p, record(fact("y1", "2026-03-01", kind="device", do_not_perform=True)), engine_name) == {"not_ordered"}


@pytest.mark.parametrize("verification,verified", [
    (None, True), ("confirmed", True), ("provisional", True), ("refuted", False), ("entered-in-error", False)])
def test_where_field_not_in_list(spec, engine_name, verification, verified):
    p = spec(valuesets=VS, rules={"verified": "y where verification_status not in ('refuted', 'entered-in-error')",
                                  "listed": "y where verification_status in ('refuted', 'entered-in-error')"})
    attrs = {"verification_status": verification} if verification else {}
    got = check(p, record(fact("y1", "2026-03-01", kind="condition", **attrs)), engine_name)
    assert got == ({"verified"} if verified else {"listed"})


def test_where_status_and_value_code_complements(spec, engine_name):
    p = spec(valuesets=VS, rules={"not_cancelled": "y where status not in ('cancelled', 'draft')",
                                  "answer_not_yes": "y where value_code not in yes",
                                  "answer_yes": "y where value_code in yes",
                                  "not_high": "x where not value > 5 mmol/L"})
    assert check(p, record(fact("y1", "2026-03-01", value_codes=["373066001"], status="final")), engine_name) == {
        "not_cancelled", "answer_yes"}
    assert check(p, record(fact("y1", "2026-03-01", status="draft")), engine_name) == {"answer_not_yes"}
    # an event without a value is kept by `where not value > 5` (a comparison on a missing value is false)
    assert check(p, record(fact("x1", "2026-03-01")), engine_name) == {"not_high"}
    assert check(p, record(fact("x1", "2026-03-01", 6, "mmol/L")), engine_name) == set()


# ---- results: E.result and `is missing` on values --------------------------------------------------
RESULT_RULES = {"above_9": "latest(hba1c).value > 9 %", "no_value": "latest(hba1c).value is missing",
                "no_result": "latest(hba1c).result is missing", "done": "latest(hba1c) exists"}


@pytest.mark.parametrize("kwargs,expected", [
    (dict(value=9.1, unit="%"), {"above_9", "done"}),
    (dict(value=8.9, unit="%"), {"done"}),
    (dict(value_codes=["373066001"]), {"no_value", "done"}),       # a coded result: a result, but no number
    (dict(data_absent_reason="unknown"), {"no_value", "no_result", "done"}),
    (dict(), {"no_value", "no_result", "done"}),
    (None, {"no_value", "no_result"}),                              # nothing recorded at all
])
def test_result_and_value_presence(spec, engine_name, kwargs, expected):
    p = spec(valuesets=VS, rules=RESULT_RULES)
    rec = record() if kwargs is None else record(fact("h1", "2026-03-01", kind="observation", **kwargs))
    assert check(p, rec, engine_name) == expected


def test_result_text_can_be_compared(spec, engine_name):
    p = spec(valuesets=VS, rules={"yes": "latest(y).result = 'http://snomed.info/sct|373066001'",
                                  "number": "latest(x).result = '4.5'"})
    rec = record(fact("y1", "2026-03-01", value_codes=["373066001"]), fact("x1", "2026-03-01", 4.5, "mmol/L"))
    assert check(p, rec, engine_name) == {"yes", "number"}


def test_is_missing_on_dates_and_moved_dates(spec, engine_name):
    p = spec(valuesets=VS, rules={"no_end": "latest(x).end is missing", "no_y_date": "latest(y).date - 1 year is missing"})
    assert check(p, record(fact("x1", "2026-03-01", kind="condition")), engine_name) == {"no_end", "no_y_date"}
    rec = record(fact("x1", "2026-03-01", end="2026-04-01", kind="condition"), fact("y1", "2026-03-01"))
    assert check(p, rec, engine_name) == set()


# ---- the lowering stays inside the durable-rules safe subset --------------------------------------------
def _cmps(t):
    if isinstance(t, Cmp):
        yield t
    elif isinstance(t, (All, AnyOf)):
        for i in t.items:
            yield from _cmps(i)


def test_new_constructs_lower_to_field_constant_comparisons(tmp_path):
    p = load_protocol(write_protocol(tmp_path, protocol_text(valuesets=VS, rules={
        "a": "latest(bp ends during period not during (y union z)).value < 140 mmHg",
        "b": "latest(hba1c).result is missing or latest(hba1c).value is missing",
        "c": "x overlaps [period_start - 1 year, period_end] and y where not do_not_perform = true",
        "d": "latest(x).date >= latest(y).date + 6 months"})))
    lowered = lower_all(p.conditions)
    for key, tree in lowered.conditions.items():
        for c in _cmps(tree):
            assert c.field in lowered.fields or c.field[:-3] in lowered.fields, (key, c)
            assert c.field not in ("sid", "id") and isinstance(c.value, (bool, int, float, str)), (key, c)
    # `is missing` on a value is its presence flag, never a test on an absent field
    b = lowered.conditions["rule:b"]
    assert {c.field.endswith("__p") for c in _cmps(b)} == {True}


# ---- errors ----------------------------------------------------------------------------------------------
def _error(tmp_path, rule: str) -> str:
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, protocol_text(valuesets=VS, rules={"r": rule})))
    return str(e.value)


@pytest.mark.parametrize("rule,message", [
    ("x during age", "an interval is 'period', [start, end] or a list of events"),
    ("x during [age, period_end]", "the ends of a [start, end] range are dates"),
    ("age + 1 year > 5", "only dates can be moved by a duration"),
    ("count(x union age) > 1", "'union' joins lists of events"),
    ("latest(x union bp).value > 5 mmHg", "different units"),  # joining them is allowed, comparing their values is not
    ("latest(x).results is missing", "events have no 'results'"),
    ("x where do_not_perform > true", "true / false can only be compared with = or !="),
])
def test_errors_say_what_was_expected(tmp_path, rule, message):
    assert message in _error(tmp_path, rule)
