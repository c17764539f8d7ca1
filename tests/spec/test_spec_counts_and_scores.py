"""Distinct counts, value sets by fact kind, arithmetic, and scores (`sum:`), on every engine.

    count(distinct code of X)          different codes (the coding by which each event is in its value set)
    count(distinct <column> of X)      different values of a codelist column (e.g. eFI deficits)
    valuesets: {med: {kind: medication}}        every fact of a kind, whatever its code
    a + b, a - b, a * b, a / b         numbers; missing in -> missing out; x / 0 is missing
    define: {score: {sum: [{points: 2, when: c}, c, count(x)]}}
"""
from __future__ import annotations

import pytest
from spec_support import fact, holds, record

from engine.language.errors import ProtocolError

DEFICITS = """code,term,deficit,source
d1,Falls 1,falls,spec
d2,Falls 2,falls,spec
d3,Two deficits,ckd,spec
d3,Two deficits,diabetes,spec
d4,No deficit,,spec
"""


@pytest.fixture
def deficits_csv(tmp_path):
    (tmp_path / "deficits.csv").write_text(DEFICITS, encoding="utf-8")
    return "deficits.csv"


def test_distinct_codes_of_every_fact_of_a_kind(spec, engine_name):
    p = spec(valuesets={"med": {"kind": "medication"}}, rules={
        "two": "count(distinct code of med within 12 months) = 2",
        "three_ever": "count(distinct code of med) = 3",
        "issues_4": "count(med) = 4",
        "ten": "count(distinct code of med within 12 months) >= 10",
    })
    rec = record(fact("m1", "2025-03-01", kind="medication"), fact("m1", "2025-05-01", kind="medication"),
                 fact("m2", "2025-04-01", kind="medication"),
                 fact("m3", "2024-01-01", kind="medication"),       # outside 12 months
                 fact("m4", "2025-04-01", kind="observation"))      # not a medication
    assert holds(p, rec, engine=engine_name) == {"two", "three_ever", "issues_4"}


def test_the_same_code_in_two_systems_counts_twice(spec, engine_name):
    p = spec(valuesets={"med": {"kind": "medication"}}, rules={"two": "count(distinct code of med) = 2"})
    rec = record(fact("m1", "2025-03-01", kind="medication", system="dmd"),
                 fact("m1", "2025-03-02", kind="medication", system="snomed"))
    assert holds(p, rec, engine=engine_name) == {"two"}


def test_kind_narrows_a_codelist(spec, engine_name):
    p = spec(valuesets={"dx": {"codes": ["c1"], "kind": "condition"}, "any_c1": ["c1"]},
             rules={"dx_1": "count(dx) = 1", "any_2": "count(any_c1) = 2"})
    rec = record(fact("c1", "2025-01-01", kind="condition"), fact("c1", "2025-02-01", kind="observation"))
    assert holds(p, rec, engine=engine_name) == {"dx_1", "any_2"}


def test_distinct_values_of_a_codelist_column(spec, engine_name, deficits_csv):
    p = spec(valuesets={"efi": {"codelist": deficits_csv}}, define={"efi_score": "count(distinct deficit of efi) / 36"},
             rules={"three": "count(distinct deficit of efi) = 3", "codes_4": "count(distinct code of efi) = 4",
                    "score": "efi_score > 0.08", "score_exact": "efi_score = 0.0833", "low": "efi_score <= 0.08"})
    # d1 and d2 are both 'falls'; d3 is two deficits; d4 has none; d1 twice counts once
    rec = record(fact("d1", "2024-01-01"), fact("d2", "2024-02-01"), fact("d3", "2024-03-01"), fact("d4", "2024-04-01"),
                 fact("d1", "2025-01-01"))
    assert holds(p, rec, engine=engine_name) == {"three", "codes_4", "score"}
    assert holds(p, record(fact("d4", "2024-04-01")), engine=engine_name) == {"low"}


def test_a_fact_counts_by_its_first_coding_in_the_value_set(spec, engine_name, deficits_csv):
    p = spec(valuesets={"efi": {"codelist": deficits_csv}},
             rules={"falls_only": "count(distinct deficit of efi) = 1", "two": "count(distinct deficit of efi) = 2"})
    from engine.records.model import Fact
    f = Fact(id="x", kind="condition", start="2024-01-01", source_system="spec",
             codes=[{"system": "snomed", "code": "zz"}, {"system": "snomed", "code": "d1"},
                    {"system": "snomed", "code": "d3"}])
    assert holds(p, record(f), engine=engine_name) == {"falls_only"}


def test_union_events_take_values_from_the_first_value_set_they_are_in(spec, engine_name, tmp_path):
    (tmp_path / "a.csv").write_text("code,group\nx1,alpha\nx2,beta\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("code,group\nx1,gamma\ny1,delta\n", encoding="utf-8")
    p = spec(valuesets={"a": {"codelist": "a.csv"}, "b": {"codelist": "b.csv"}},
             rules={"ab": "count(distinct group of a union b) = 2", "ba": "count(distinct group of b union a) = 2",
                    "ab3": "count(distinct group of a union b) = 3"})
    # x1 is in both: alpha from a (a union b), gamma from b (b union a); y1 delta either way
    rec = record(fact("x1", "2025-01-01"), fact("y1", "2025-01-02"))
    assert holds(p, rec, engine=engine_name) == {"ab", "ba"}


def test_count_distinct_of_nothing_is_zero(spec, engine_name, deficits_csv):
    p = spec(valuesets={"efi": {"codelist": deficits_csv}, "med": {"kind": "medication"}},
             rules={"zero": "count(distinct deficit of efi) = 0", "meds0": "count(distinct code of med) = 0",
                    "not_pos": "not count(distinct code of med) > 0"})
    assert holds(p, record(), engine=engine_name) == {"zero", "meds0", "not_pos"}


def test_arithmetic_and_missing_values(spec, engine_name):
    vs = {"h": {"codes": ["h1"], "unit": "mmol/mol", "analyte": "hba1c"}, "a": ["a1"], "b": ["b1"]}
    p = spec(valuesets=vs, rules={
        "ratio": "count(a) / count(b) = 1.5",
        "sum": "count(a) + count(b) = 5",
        "product": "count(a) * 2 - 1 = 5",
        "drop": "latest(h).value - earliest(h).value >= 10 mmol/mol",
        "age": "age + 1 = 66",
    })
    rec = record(fact("a1", "2025-01-01"), fact("a1", "2025-01-02"), fact("a1", "2025-01-03"),
                 fact("b1", "2025-01-01"), fact("b1", "2025-01-02"),
                 fact("h1", "2024-01-01", 50, "mmol/mol"), fact("h1", "2025-01-01", 64, "mmol/mol"), birth="1960-01-01")
    got = holds(p, rec, engine=engine_name)
    assert {"ratio", "sum", "product", "drop", "age"} <= got


def test_division_by_zero_and_missing_operands_are_missing(spec, engine_name):
    vs = {"a": ["a1"], "b": ["b1"], "h": {"codes": ["h1"], "unit": "mmol/mol"}}
    p = spec(valuesets=vs, define={"ratio": "count(a) / count(b)", "rise": "latest(h).value - earliest(h).value"},
             rules={"gt": "ratio > 0", "le": "ratio <= 0", "not_gt": "not ratio > 0", "missing": "ratio is missing",
                    "rise_missing": "rise is missing", "rise_ge": "rise >= 0 mmol/mol", "rise_lt": "rise < 0 mmol/mol"})
    assert holds(p, record(fact("a1", "2025-01-01")), engine=engine_name) == {"not_gt", "missing", "rise_missing"}
    got = holds(p, record(fact("a1", "2025-01-01"), fact("b1", "2025-01-01"), fact("h1", "2025-01-01", 50, "mmol/mol")),
                engine=engine_name)
    assert got == {"gt", "rise_ge"}


def test_a_score_adds_its_lines(spec, engine_name):
    vs = {"ltc": ["l1", "l2", "l3"], "adm": ["e1"], "home": ["c1"], "h": {"codes": ["h1"], "unit": "mmol/mol"}}
    score = {"sum": [{"points": 3, "when": "latest(home) exists"},
                     "count(adm within 12 months)",           # a number: one point per admission
                     "count(distinct code of ltc) >= 2",      # a condition alone: 1 point
                     {"points": -1, "when": "age < 70"}]}
    p = spec(valuesets=vs, define={"score": score},
             rules={"s5": "score = 5", "s_ge_4": "score >= 4", "s0": "score = 0", "s_neg": "score < 0"})
    rec = record(fact("c1", "2020-01-01"), fact("e1", "2025-01-01"), fact("e1", "2025-02-01"), fact("e1", "2023-01-01"),
                 fact("l1", "2020-01-01"), birth="1940-01-01")
    assert holds(p, rec, engine=engine_name) == {"s5", "s_ge_4"}          # 3 + 2 + 0 + 0
    rec2 = record(fact("l1", "2020-01-01"), fact("l2", "2020-01-01"), birth="1990-01-01")
    assert holds(p, rec2, engine=engine_name) == {"s0"}                  # 0 + 0 + 1 - 1
    assert holds(p, record(birth="1990-01-01"), engine=engine_name) == {"s_neg"}


def test_a_score_with_a_missing_number_is_missing(spec, engine_name):
    vs = {"h": {"codes": ["h1"], "unit": "mmol/mol"}, "a": ["a1"]}
    p = spec(valuesets=vs, define={"score": {"sum": ["latest(h).value", {"points": 1, "when": "latest(a) exists"}]}},
             rules={"any": "score >= 0 mmol/mol", "none": "score is missing", "not_big": "not score > 100 mmol/mol"})
    assert holds(p, record(fact("a1", "2025-01-01")), engine=engine_name) == {"none", "not_big"}
    assert holds(p, record(fact("h1", "2025-01-01", 50, "mmol/mol")), engine=engine_name) == {"any", "not_big"}


def test_why_lines_show_a_score_and_the_number_of_different_things(spec, deficits_csv):
    from spec_support import run
    p = spec(valuesets={"efi": {"codelist": deficits_csv}, "a": ["a1"]},
             define={"deficits": "count(distinct deficit of efi)",
                     "score": {"sum": [{"points": 2, "when": "deficits >= 2"}, "latest(a) exists"]}},
             rules={"high": "score >= 2"})
    _, res = run(p, record(fact("d3", "2024-01-01")))
    why = next(f.provenance.why for f in res.flags if f.code == "high")
    assert "score 2 (at least 2): +2 for deficits 2 (at least 2)" in why


@pytest.mark.parametrize("expr, message", [
    ("count(distinct deficit of a) > 1", "no column 'deficit'"),
    ("count(distinct defecit of efi) > 1", "did you mean 'deficit'"),
    ("latest(distinct code of a) exists", "'distinct' goes with count"),
    ("latest(a).date + 1 > 2", "works on numbers, not a date"),
    ("latest(h).value * latest(s).value > 1", "cannot multiply a value in mmol/mol by one in mm[Hg]"),
    ("count(a) / latest(s).value > 1", "cannot divide by a value in mm[Hg]"),
    ("latest(h).value + 5 > 1 mmol/mol", "the number needs a unit"),
    ("latest(h).value - latest(s).value > 1 mmol/mol", "cannot compare mmol/mol with mm[Hg]"),
    ("a where code in med", "every fact of a kind"),
    ("latest(h).value - 1 % > 50 mmol/mol", "a difference in % cannot be converted into mmol/mol"),
])
def test_load_errors(spec, deficits_csv, expr, message):
    vs = {"a": ["a1"], "efi": {"codelist": deficits_csv}, "h": {"codes": ["h1"], "unit": "mmol/mol", "analyte": "hba1c"},
          "s": {"codes": ["s1"], "unit": "mmHg"}, "med": {"kind": "medication"}}
    with pytest.raises(ProtocolError) as e:
        spec(valuesets=vs, rules={"r": expr})
    assert message in str(e.value)


@pytest.mark.parametrize("score, message", [
    ({"sum": []}, "non-empty list of score lines"),
    ({"sum": [{"points": "two", "when": "latest(a) exists"}]}, "points should be a number"),
    ({"sum": [{"points": 2}]}, "is missing 'when'"),
    ({"sum": ["a"]}, "a score line is a number or a condition"),
    ({"sum": [{"points": 1, "when": "latest(a) exists", "wehn": "x"}]}, "did you mean 'when'"),
])
def test_score_load_errors(spec, score, message):
    with pytest.raises(ProtocolError) as e:
        spec(valuesets={"a": ["a1"]}, define={"score": score}, rules={"r": "score > 1"})
    assert message in str(e.value)


def test_unknown_fact_kind_is_an_error(spec):
    with pytest.raises(ProtocolError) as e:
        spec(valuesets={"med": {"kind": "medicaton"}}, rules={"r": "count(med) > 1"})
    assert "unknown fact kind 'medicaton'" in str(e.value) and "did you mean 'medication'" in str(e.value)
