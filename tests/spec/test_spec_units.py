"""Units: constants and data are converted into the value set's declared unit; mismatches are load-time errors."""
from __future__ import annotations

import pytest
from spec_support import fact, holds, load_spec, protocol_text, record, run, write_protocol

from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol

MMOL = {"hba1c": {"codes": ["h"], "unit": "mmol/mol", "analyte": "hba1c"}}
PCT = {"hba1c": {"codes": ["h"], "unit": "%", "analyte": "hba1c"}}


def test_constant_in_percent_against_a_set_in_mmol_per_mol(spec, engine_name):
    # 7.5 % = (7.5 - 2.15) x 10.929 = 58.47 mmol/mol
    p = spec(valuesets=MMOL, rules={"ge": "latest(hba1c).value >= 7.5 %", "lt": "latest(hba1c).value < 7.5 %"})
    assert holds(p, record(fact("h", "2025-01-01", 58.5, "mmol/mol")), engine=engine_name) == {"ge"}
    assert holds(p, record(fact("h", "2025-01-01", 58.4, "mmol/mol")), engine=engine_name) == {"lt"}


def test_constant_in_mmol_per_mol_against_a_set_in_percent(spec, engine_name):
    # 58 mmol/mol = 58 / 10.929 + 2.15 = 7.457 %
    p = spec(valuesets=PCT, rules={"ge": "latest(hba1c).value >= 58 mmol/mol"})
    assert holds(p, record(fact("h", "2025-01-01", 7.46, "%")), engine=engine_name) == {"ge"}
    assert holds(p, record(fact("h", "2025-01-01", 7.45, "%")), engine=engine_name) == set()


def test_data_in_percent_against_a_set_in_mmol_per_mol(spec, engine_name):
    # 8.0 % = 63.93 mmol/mol
    p = spec(valuesets=MMOL, rules={"gt63": "latest(hba1c).value > 63 mmol/mol", "gt64": "latest(hba1c).value > 64 mmol/mol"})
    assert holds(p, record(fact("h", "2025-01-01", 8.0, "%")), engine=engine_name) == {"gt63"}


def test_data_in_mmol_per_mol_against_a_set_in_percent(spec, engine_name):
    # 64 mmol/mol = 8.006 %
    p = spec(valuesets=PCT, rules={"gt8": "latest(hba1c).value > 8 %", "gt8_1": "latest(hba1c).value > 8.1 %"})
    assert holds(p, record(fact("h", "2025-01-01", 64, "mmol/mol")), engine=engine_name) == {"gt8"}


def test_mixed_units_in_one_record_compare_after_conversion(spec, engine_name):
    # 7.0 % (53.0 mmol/mol) in January, 50 mmol/mol in March: max is the January one
    p = spec(valuesets=MMOL, rules={"max_jan": "max(hba1c).date = 2025-01-01", "latest_50": "latest(hba1c).value = 50 mmol/mol"})
    rec = record(fact("h", "2025-01-01", 7.0, "%"), fact("h", "2025-03-01", 50, "mmol/mol"))
    assert holds(p, rec, engine=engine_name) == {"max_jan", "latest_50"}


def test_lowest_of_the_day_is_chosen_after_conversion(spec, engine_name):
    # same day: 5.0 % (= 31.1 mmol/mol) and 19 mmol/mol; raw numbers would pick 5.0, converted values pick 19
    p = spec(valuesets=MMOL, rules={"picked_19": "latest(hba1c).value = 19 mmol/mol"})
    rec = record(fact("h", "2025-03-01T08:00", 5.0, "%"), fact("h", "2025-03-01T09:00", 19, "mmol/mol"))
    assert holds(p, rec, engine=engine_name) == {"picked_19"}


@pytest.mark.parametrize("vs,value,unit,cond", [
    (MMOL, 7.0, "%", "latest(hba1c).value >= 7 %"),           # % data, % threshold, set in mmol/mol
    (MMOL, 6.5, "%", "latest(hba1c).value <= 6.5 %"),
    (MMOL, 9.0, "%", "latest(hba1c).value >= 9 %"),
    (PCT, 53, "mmol/mol", "latest(hba1c).value <= 53 mmol/mol"),  # mmol/mol data and threshold, set in %
    (PCT, 48, "mmol/mol", "latest(hba1c).value >= 48 mmol/mol"),
    (PCT, 58, "mmol/mol", "latest(hba1c).value <= 58 mmol/mol"),
])
def test_a_value_equal_to_the_threshold_in_the_same_unit_meets_it(spec, engine_name, vs, value, unit, cond):
    # the same number in the same unit on both sides must compare equal, whatever unit the set is declared in
    p = spec(valuesets=vs, rules={"r": cond, "eq": cond.replace(">=", "=").replace("<=", "=")})
    assert holds(p, record(fact("h", "2025-01-01", value, unit)), engine=engine_name) == {"r", "eq"}


def test_scale_conversion_within_a_dimension(spec, engine_name):
    vs = {"creat": {"codes": ["c"], "unit": "umol/L"}}
    p = spec(valuesets=vs, rules={"gt110": "latest(creat).value > 110 umol/L", "gt_mmol": "latest(creat).value > 0.11 mmol/L",
                                  "gt130": "latest(creat).value > 130 umol/L"})
    assert holds(p, record(fact("c", "2025-01-01", 0.12, "mmol/L")), engine=engine_name) == {"gt110", "gt_mmol"}
    assert holds(p, record(fact("c", "2025-01-01", 120, "umol/L")), engine=engine_name) == {"gt110", "gt_mmol"}


def test_common_unit_spellings_in_data(spec, engine_name):
    vs = {"sbp": {"codes": ["s"], "unit": "mmHg"}}
    p = spec(valuesets=vs, rules={"high": "latest(sbp).value >= 140 mm[Hg]"})
    for unit in ("mm[Hg]", "mmHg", "mm Hg"):
        assert holds(p, record(fact("s", "2025-01-01", 141, unit)), engine=engine_name) == {"high"}, unit


def test_where_value_converts_its_constant(spec, engine_name):
    p = spec(valuesets=MMOL, rules={"n": "count(hba1c where value >= 7.5 %) = 1"})
    rec = record(fact("h", "2025-01-01", 58.5, "mmol/mol"), fact("h", "2025-02-01", 58.4, "mmol/mol"))
    assert holds(p, rec, engine=engine_name) == {"n"}


def test_inconvertible_data_unit_is_missing_and_reported(spec, engine_name):
    p = spec(valuesets=MMOL, rules={"any": "latest(hba1c).value >= 0 mmol/mol", "none": "not (latest(hba1c).value >= 0 mmol/mol)",
                                    "exists": "latest(hba1c) exists"})
    rec = record(fact("h", "2025-01-01", 120, "mmHg", fid="odd-unit"))
    # the event happened (exists) but its value is treated as missing
    assert holds(p, rec, engine=engine_name) == {"none", "exists"}
    _, res = run(p, rec, engine=engine_name)
    assert len(res.data_problems) == 1
    problem = res.data_problems[0]
    assert "odd-unit" in problem and "2025-01-01" in problem and "mm[Hg]" in problem and "mmol/mol" in problem


def test_percent_without_an_analyte_is_not_converted(spec, engine_name):
    # % -> mmol/mol is only defined for HbA1c: a set without `analyte: hba1c` keeps the value missing
    p = spec(valuesets={"x": {"codes": ["h"], "unit": "mmol/mol"}}, rules={"any": "latest(x).value >= 0 mmol/mol"})
    rec = record(fact("h", "2025-01-01", 7.5, "%"))
    assert holds(p, rec, engine=engine_name) == set()
    _, res = run(p, rec, engine=engine_name)
    assert res.data_problems and "no clinically defined conversion" in res.data_problems[0]


# ---- load-time unit errors, with file:line ---------------------------------------------------------------------------
def _load_error(tmp_path, **parts) -> tuple[str, ProtocolError]:
    path = write_protocol(tmp_path, protocol_text(**parts))
    with pytest.raises(ProtocolError) as e:
        load_protocol(path)
    return str(path), e.value


def _line_of(path: str, needle: str) -> int:
    for i, line in enumerate(open(path, encoding="utf-8"), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_unit_mismatch_is_a_load_error_with_file_and_line(tmp_path):
    path, err = _load_error(tmp_path, valuesets={"sbp": {"codes": ["s"], "unit": "mmHg"}},
                            rules={"ok": "latest(sbp).value > 140 mmHg", "bad": "latest(sbp).value > 58 mmol/mol"})
    (problem,) = err.problems
    assert problem.location.file == path
    assert problem.location.line == _line_of(path, "58 mmol/mol")
    assert "mmol/mol" in problem.message and "mm[Hg]" in problem.message
    assert f"{path}:{problem.location.line}:" in str(err)


def test_column_points_at_the_comparison(tmp_path):
    path, err = _load_error(tmp_path, valuesets={"sbp": {"codes": ["s"], "unit": "mmHg"}},
                            rules={"bad": "latest(sbp).value > 58 mmol/mol"})
    (problem,) = err.problems
    line = open(path, encoding="utf-8").read().splitlines()[problem.location.line - 1]
    assert line[problem.location.column - 1] == ">"


def test_percent_against_a_set_without_an_analyte_is_a_load_error(tmp_path):
    _, err = _load_error(tmp_path, valuesets={"x": {"codes": ["h"], "unit": "mmol/mol"}},
                         rules={"bad": "latest(x).value > 7 %"})
    assert "no clinically defined conversion" in err.problems[0].message


def test_a_bare_number_against_a_value_with_a_unit_is_a_load_error(tmp_path):
    _, err = _load_error(tmp_path, valuesets=MMOL, rules={"bad": "latest(hba1c).value > 58"})
    assert "needs a unit" in err.problems[0].message
    assert "58 mmol/mol" in err.problems[0].expected


def test_a_unit_against_a_set_without_a_unit_is_a_load_error(tmp_path):
    _, err = _load_error(tmp_path, valuesets={"x": ["h"]}, rules={"bad": "latest(x).value > 58 mmol/mol"})
    assert "no unit declared" in err.problems[0].message


def test_unknown_unit_gets_a_suggestion(tmp_path):
    _, err = _load_error(tmp_path, valuesets=MMOL, rules={"bad": "latest(hba1c).value > 58 mmol/mool"})
    assert "unknown unit" in err.problems[0].message
    assert err.problems[0].suggestion == "mmol/mol"


def test_unknown_unit_on_a_value_set_is_a_load_error(tmp_path):
    _, err = _load_error(tmp_path, valuesets={"x": {"codes": ["h"], "unit": "furlongs"}}, rules={"r": "exists(x)"})
    assert "unknown unit" in err.problems[0].message


def test_every_problem_is_reported_at_once(tmp_path):
    path, err = _load_error(tmp_path, valuesets=MMOL, rules={"a": "latest(hba1c).value > 58", "b": "latest(hbac1) exists",
                                                             "c": "latest(hba1c).value > 58 mmHg"})
    assert len(err.problems) == 3
    assert [p.location.line for p in err.problems] == sorted(p.location.line for p in err.problems)
    assert err.problems[1].suggestion == "hba1c"


def test_comparing_two_values_in_different_units_is_a_load_error(tmp_path):
    _, err = _load_error(tmp_path, valuesets={**MMOL, "sbp": {"codes": ["s"], "unit": "mmHg"}},
                         rules={"bad": "latest(hba1c).value > latest(sbp).value"})
    assert "cannot compare" in err.problems[0].message


def test_spec_protocol_loads(tmp_path):
    # guard for the helpers themselves: a well-formed protocol loads with no warnings
    p = load_spec(tmp_path, valuesets=MMOL, rules={"r": "latest(hba1c).value > 58 mmol/mol"})
    assert p.warnings == [] and "rule:r" in p.conditions
