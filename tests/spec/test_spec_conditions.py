"""Boolean structure: events as conditions, and/or/not, nested all/any/not forms in YAML, definitions."""
from __future__ import annotations

import itertools

import pytest
from spec_support import fact, holds, protocol_text, record, write_protocol

from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol

VS = {"a": ["a1"], "b": ["b1"], "c": ["c1"]}


def rec_with(a: bool, b: bool, c: bool):
    facts = [fact(code, "2025-01-01") for code, on in (("a1", a), ("b1", b), ("c1", c)) if on]
    return record(*facts)


ALL_CASES = list(itertools.product([False, True], repeat=3))


def test_events_and_lists_of_events_used_as_conditions_mean_exists(spec, engine_name):
    p = spec(valuesets=VS, rules={"set": "a", "event": "latest(a)", "window": "a within 12 months",
                                  "not_set": "not a", "filtered": "a where status = 'final'"})
    assert holds(p, record(fact("a1", "2025-01-01", status="final")), engine=engine_name) == {"set", "event", "window", "filtered"}
    assert holds(p, record(fact("a1", "2023-01-01")), engine=engine_name) == {"set", "event"}
    assert holds(p, record(), engine=engine_name) == {"not_set"}


@pytest.mark.parametrize("a,b,c", ALL_CASES)
def test_and_or_not_precedence(spec, engine_name, a, b, c):
    # not binds tighter than and, and tighter than or
    p = spec(valuesets=VS, rules={"r1": "a or b and c", "r2": "not a and b", "r3": "not (a and b) or c",
                                  "r4": "(a or b) and not c", "r5": "not not a"})
    expected = {name for name, v in {"r1": a or (b and c), "r2": (not a) and b, "r3": (not (a and b)) or c,
                                     "r4": (a or b) and not c, "r5": a}.items() if v}
    assert holds(p, rec_with(a, b, c), engine=engine_name) == expected


@pytest.mark.parametrize("a,b,c", ALL_CASES)
def test_nested_all_any_not_forms(spec, engine_name, a, b, c):
    nested = {"all": ["a", {"any": ["b", {"not": "c"}]}]}
    deeper = {"not": {"any": [{"all": ["a", "b"]}, {"not": {"any": ["c"]}}]}}
    p = spec(valuesets=VS, rules={"nested": nested, "deeper": deeper, "one": {"all": ["a"]}})
    expected = {name for name, v in {"nested": a and (b or not c), "deeper": not ((a and b) or not c), "one": a}.items() if v}
    assert holds(p, rec_with(a, b, c), engine=engine_name) == expected


@pytest.mark.parametrize("a,b,c", ALL_CASES)
def test_population_all_and_any_together(spec, engine_name, a, b, c):
    from spec_support import fired
    p = spec(valuesets=VS, population={"all": ["a"], "any": ["b", "c"]}, rules={"r": "a"})
    assert ("population" in fired(p, rec_with(a, b, c), engine=engine_name)) == (a and (b or c))


@pytest.mark.parametrize("a,b,c", ALL_CASES)
def test_definitions_nest_and_may_be_forms(spec, engine_name, a, b, c):
    p = spec(valuesets=VS, define={"ab": {"any": ["a", "b"]}, "abc": "ab and not c", "later": "uses_later",
                                   "uses_later": "latest(c)"},
             rules={"abc": "abc", "not_ab": "not ab", "later": "later"})
    expected = {name for name, v in {"abc": (a or b) and not c, "not_ab": not (a or b), "later": c}.items() if v}
    assert holds(p, rec_with(a, b, c), engine=engine_name) == expected


def test_or_with_both_sides_true_is_one_result(spec, engine_name):
    # durable-rules fires an `or` once per true branch; the result is still one key and one task
    from spec_support import run
    p = spec(valuesets=VS, population="a or b", rules={"either": "a or b or c"})
    ev, res = run(p, rec_with(True, True, True), engine=engine_name)
    assert [t.title for t in res.tasks] == ["Review either"]
    assert [f.code for f in res.flags] == ["either"]


def test_constant_conditions(spec, engine_name):
    p = spec(valuesets=VS, rules={"t": "true", "f": "false", "t_or": "false or a", "f_and": "true and not a",
                                  "lit": "2025-01-01 < 2025-02-01"})
    assert holds(p, record(), engine=engine_name) == {"t", "f_and", "lit"}
    assert holds(p, rec_with(True, False, False), engine=engine_name) == {"t", "t_or", "lit"}


# ---- load errors for conditions ------------------------------------------------------------------------------------
def _err(tmp_path, **parts) -> ProtocolError:
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, protocol_text(**parts)))
    return e.value


@pytest.mark.parametrize("when,words", [
    ("count(a)", "cannot be used as a condition"),
    ("age", "cannot be used as a condition"),
    ("latest(a) > 'x'", "cannot compare"),
    ("latest(aa) exists", "unknown name"),
    ("latest(a) exists and", "ends too early"),
    ("a before b", "compare single events"),
    ('sex > "female"', "only be compared with = or !="),
    ("latest(a).valeu > 5", "events have no 'valeu'"),
    ("a where colour = 'red'", "events have no field"),
    ("count(a) > 2025-13-01", "not a real date"),
    ("a within 1.5 months", "whole, non-negative"),
])
def test_bad_conditions_are_load_errors(tmp_path, when, words):
    err = _err(tmp_path, valuesets=VS, rules={"bad": when})
    assert any(words in p.message for p in err.problems), [str(p) for p in err.problems]


def test_unknown_name_error_points_at_the_name_and_suggests(tmp_path):
    path = write_protocol(tmp_path, protocol_text(valuesets={"diabetes": ["d"]}, rules={"bad": "latest(diabtes) exists"}))
    with pytest.raises(ProtocolError) as e:
        load_protocol(path)
    (p,) = e.value.problems
    line = path.read_text().splitlines()[p.location.line - 1]
    assert line[p.location.column - 1:].startswith("diabtes")
    assert p.suggestion == "diabetes"


def test_bad_form_key(tmp_path):
    err = _err(tmp_path, valuesets=VS, rules={"bad": {"every": ["a"]}})
    assert err.problems[0].suggestion is None or err.problems[0].suggestion in ("all", "any", "not")
    assert "all: / any: / not:" in err.problems[0].message


def test_definitions_in_a_loop(tmp_path):
    err = _err(tmp_path, valuesets=VS, define={"x": "y and a", "y": "x"}, rules={"r": "x"})
    assert any("loop" in p.message for p in err.problems)


# ---- the rule engine's limit on alternatives ---------------------------------------------------------------------------
MANY = {f"x{i}": {"codes": [f"c{i}"], "unit": "mmol/L"} for i in range(10)}


def none_abnormal(n: int) -> str:
    # each `not (value > 5)` is "missing or <= 5": two alternatives, so n of them make 2**n
    return " and ".join(f"not (latest(x{i}).value > 5 mmol/L)" for i in range(n))


def test_a_condition_at_the_limit_runs_on_every_engine(spec, engine_name):
    p = spec(valuesets=MANY, rules={"ok": none_abnormal(9)})  # 512 alternatives
    assert holds(p, record(fact("c3", "2025-01-01", 5, "mmol/L")), engine=engine_name) == {"ok"}
    assert holds(p, record(fact("c3", "2025-01-01", 6, "mmol/L")), engine=engine_name) == set()


def test_a_condition_over_the_limit_is_a_load_error_with_its_line(tmp_path):
    path = write_protocol(tmp_path, protocol_text(valuesets=MANY, rules={"too_many": none_abnormal(10)}))
    with pytest.raises(ProtocolError) as e:
        load_protocol(path)
    (problem,) = e.value.problems
    assert "1024 alternatives" in problem.message
    assert path.read_text().splitlines()[problem.location.line - 1].lstrip().startswith("when:")
