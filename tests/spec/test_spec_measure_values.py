"""Measures with a number per patient (`value:`, docs/protocol-language.md §8 "Measure values"), on every engine.

    measures:
      - id: admissions
        title: Emergency admissions
        denominator: age >= 75
        value: count(admissions during period)      # a number for each patient in the denominator

The value is computed by the engine that decides (the summary fact for the per-patient engines, the query's
column for the SQL engine); patients outside the denominator, or excluded, have none; a missing number stays
missing (None), never 0.
"""
from __future__ import annotations

import pytest
from spec_support import fact, record, run

from engine.language.errors import ProtocolError

VS = {"adm": ["a1"], "ae": ["e1"], "hba1c": {"codes": ["h"], "unit": "mmol/mol", "analyte": "hba1c"},
      "dead_marker": ["x"]}

COUNT_MEASURE = """
  - id: admissions
    title: Emergency admissions
    denominator: age >= 75
    exclusions: [latest(dead_marker) exists]
    value: count(adm during period)
  - id: last-hba1c
    title: Last HbA1c
    value: latest(hba1c).value
  - id: with-numerator
    title: Admitted at least twice
    numerator: count(adm during period) >= 2
    value: count(adm during period) + count(ae during period)
"""


def _m(res, mid):
    return next(m for m in res.measures if m.measure == mid)


def test_value_is_counted_for_the_denominator(spec, engine_name):
    p = spec(valuesets=VS, measures=COUNT_MEASURE)
    rec = record(fact("a1", "2025-01-10", kind="encounter"), fact("a1", "2025-03-01", kind="encounter"),
                 fact("a1", "2024-05-01", kind="encounter"),            # before the period: not counted
                 fact("e1", "2025-02-01", kind="encounter"),
                 fact("h", "2025-04-01", 61, "mmol/mol"), birth="1940-01-01")
    _, res = run(p, rec, engine=engine_name)
    adm = _m(res, "admissions")
    assert (adm.denominator, adm.value, adm.has_value) == (True, 2.0, True)
    assert "value 2 (number of adm during the period)" in adm.provenance.why
    assert _m(res, "last-hba1c").value == 61.0
    both = _m(res, "with-numerator")
    assert (both.numerator, both.value) == (True, 3.0)
    assert "numerator met; value 3" in both.provenance.why


def test_no_events_is_zero_but_a_missing_number_is_missing(spec, engine_name):
    p = spec(valuesets=VS, measures=COUNT_MEASURE)
    _, res = run(p, record(birth="1940-01-01"), engine=engine_name)
    assert _m(res, "admissions").value == 0.0                 # a count of nothing is 0
    last = _m(res, "last-hba1c")
    assert last.denominator and last.value is None           # no HbA1c: missing, never 0
    assert "value missing" in last.why_steps["value"]
    rec = record(fact("h", "2025-04-01", None), birth="1940-01-01")   # recorded without a result
    _, res = run(p, rec, engine=engine_name)
    assert _m(res, "last-hba1c").value is None


def test_outside_the_denominator_or_excluded_has_no_value(spec, engine_name):
    p = spec(valuesets=VS, measures=COUNT_MEASURE)
    young = record(fact("a1", "2025-01-10", kind="encounter"), birth="1980-01-01")
    _, res = run(p, young, engine=engine_name)
    adm = _m(res, "admissions")
    assert (adm.initial_population, adm.denominator, adm.value) == (True, False, None)
    excluded = record(fact("a1", "2025-01-10", kind="encounter"), fact("x", "2025-01-01"), birth="1940-01-01")
    _, res = run(p, excluded, engine=engine_name)
    adm = _m(res, "admissions")
    assert (adm.denominator, adm.exclusion, adm.value) == (True, True, None)


def test_dead_patients_have_no_value_unless_the_measure_counts_them(spec, engine_name):
    m = COUNT_MEASURE + """
  - id: admissions-incl-deceased
    title: Emergency admissions, deaths included
    counts_deceased: true
    denominator: death_date is missing or death_date >= period_start
    value: count(adm during period)
"""
    p = spec(valuesets=VS, measures=m)
    rec = record(fact("a1", "2025-01-10", kind="encounter"), fact("a1", "2025-02-10", kind="encounter"),
                 birth="1940-01-01", death="2025-03-01")
    _, res = run(p, rec, engine=engine_name)
    assert _m(res, "admissions").value is None and not _m(res, "admissions").denominator
    dead = _m(res, "admissions-incl-deceased")
    assert (dead.denominator, dead.value) == (True, 2.0)
    long_dead = record(fact("a1", "2023-01-10", kind="encounter"), birth="1940-01-01", death="2023-03-01")
    _, res = run(p, long_dead, engine=engine_name)
    assert (_m(res, "admissions-incl-deceased").denominator, _m(res, "admissions-incl-deceased").value) == (False, None)


@pytest.mark.parametrize("value, words", [
    ("adm during period", "not a number"),
    ("latest(adm)", "not a number"),
    ("count(adm) > 2", "a yes/no condition, not a number"),
    ("count(admz)", "unknown name"),
])
def test_a_value_that_is_not_a_number_is_a_load_error_with_its_line(spec, value, words):
    m = f"""
  - id: bad
    title: Bad
    value: '{value}'
"""
    with pytest.raises(ProtocolError) as e:
        spec(valuesets=VS, measures=m)
    text = str(e.value)
    assert words in text and "measure 'bad' value" in text
    assert ".yaml:" in text.split("error")[0]                # file:line:column


def test_a_measure_needs_a_numerator_or_a_value(spec):
    with pytest.raises(ProtocolError, match="needs a numerator .* or a value"):
        spec(valuesets=VS, measures="\n  - id: bare\n    title: Bare\n")


def test_value_and_episodes_do_not_go_together(spec):
    m = """
  - id: both
    title: Both
    episodes: adm
    numerator: 'true'
    value: count(adm)
"""
    with pytest.raises(ProtocolError, match="value: or episodes:, not both"):
        spec(valuesets=VS, measures=m)


# ---- bed days: sum(days of x); readmissions: x within N days after end of y ----

STAY_VS = {"adm": ["a1"], "hba1c": {"codes": ["h"], "unit": "mmol/mol", "analyte": "hba1c"}}
STAYS = """
  - id: bed-days
    title: Emergency bed days
    value: sum(days of adm ends during period)
  - id: readmissions
    title: Emergency readmissions within 30 days of discharge
    value: count(adm during period within 30 days after end of adm)
  - id: hba1c-total
    title: Sum of HbA1c values (a test of sum(value of ...))
    value: sum(value of hba1c during period)
"""


def _stay(start, end=None, **kw):
    return fact("a1", start, kind="encounter", end=end, **kw)


def test_bed_days_add_up_lengths_of_stay(spec, engine_name):
    p = spec(valuesets=STAY_VS, measures=STAYS)
    rec = record(_stay("2025-01-10T10:00", "2025-01-14T12:00"),      # 4 days
                 _stay("2025-03-01T08:00", "2025-03-01T20:00"),      # same day: 0 days
                 _stay("2024-05-01T08:00", "2024-05-03T08:00"),      # ended before the period
                 fact("h", "2025-02-01", 50, "mmol/mol"), fact("h", "2025-04-01", 7.0, "%"))
    _, res = run(p, rec, engine=engine_name)
    assert _m(res, "bed-days").value == 4.0
    assert _m(res, "hba1c-total").value == pytest.approx(50 + 53.0, abs=0.01)   # 7.0 % is 53.0 mmol/mol
    _, res = run(p, record(), engine=engine_name)
    assert (_m(res, "bed-days").value, _m(res, "hba1c-total").value) == (0.0, 0.0)   # nothing to add: 0


def test_a_stay_without_an_end_makes_bed_days_missing_not_smaller(spec, engine_name):
    p = spec(valuesets=STAY_VS, measures=STAYS)
    rec = record(_stay("2025-01-10T10:00", "2025-01-14T12:00"), _stay("2025-06-10T10:00"),   # still in hospital
                 fact("h", "2025-02-01", None))                                               # HbA1c without a value
    ev, res = run(p, rec, engine=engine_name)
    bed = _m(res, "bed-days")
    assert bed.denominator and bed.value is None
    assert "value missing" in bed.provenance.why
    assert any("has no end date" in x for x in res.data_problems)
    assert _m(res, "hba1c-total").value is None


def test_readmission_is_an_admission_after_a_discharge_within_30_days(spec, engine_name):
    p = spec(valuesets=STAY_VS, measures=STAYS)
    rec = record(_stay("2025-01-01T10:00", "2025-01-05T12:00"),
                 _stay("2025-01-20T09:00", "2025-01-22T12:00"),      # 15 days after discharge: a readmission
                 _stay("2025-02-21T09:00", "2025-02-23T12:00"),      # 30 days after the 22nd: a readmission
                 _stay("2025-04-01T09:00", "2025-04-01T11:00"),      # 37 days after the last: not
                 _stay("2025-04-01T15:00", "2025-04-02T11:00"))      # the same day, after that discharge: yes
    _, res = run(p, rec, engine=engine_name)
    assert _m(res, "readmissions").value == 3.0
    one = record(_stay("2025-03-01T08:00", "2025-03-01T20:00"))       # a day case is not its own readmission
    _, res = run(p, one, engine=engine_name)
    assert _m(res, "readmissions").value == 0.0
    open_stay = record(_stay("2025-03-01T08:00"), _stay("2025-03-05T08:00", "2025-03-06T08:00"))
    _, res = run(p, open_stay, engine=engine_name)                   # no discharge recorded: nothing after it
    assert _m(res, "readmissions").value == 0.0


@pytest.mark.parametrize("value, words", [
    ("sum(adm)", "sum(value of ...) or sum(days of ...)"),
    ("sum(code of adm)", "adds up values or days, not 'code'"),
    ("count(distinct days of adm)", "no column 'days'"),
    ("count(adm within 30 days after end of age)", "'after end of' needs events"),
])
def test_sum_and_after_end_errors(spec, value, words):
    m = f"""
  - id: bad
    title: Bad
    value: '{value}'
"""
    with pytest.raises(ProtocolError) as e:
        spec(valuesets=STAY_VS, measures=m)
    assert words in str(e.value)
