"""durable-rules 2.0.28 cannot create a rule with more than 15 and/or nodes in its condition (error 113,
ERR_EXPRESSION_LIMIT_EXCEEDED, raised only when the first fact arrives). Lowering keeps every rule within
that limit by computing an over-large part as one yes/no field (engine/ir/lowering.py, rule 6):
the same answers on every engine, whatever the shape of the condition."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from spec_support import fact, holds, record

from engine.ir.lowering import MAX_LOGICAL, All, AnyOf, Cmp, logical_nodes, lower_all

ROOT = Path(__file__).resolve().parents[2]
VS = {f"x{i}": {"codes": [f"c{i}"], "unit": "mmol/L"} for i in range(20)}


def sixteen_alternatives() -> str:
    # 16 alternatives of 2 comparisons each: 17 and/or nodes when written out
    return " or ".join(f"(latest(x{i}).value > 5 mmol/L and latest(x{i + 1}).value > 5 mmol/L)" for i in range(16))


def test_raw_durable_rules_refuses_sixteen_and_or_nodes():
    script = textwrap.dedent("""
        from durable.lang import ruleset, when_all, m, assert_fact
        import operator
        from functools import reduce
        alts = [(getattr(m, f"a{i}") > 1) & (getattr(m, f"b{i}") > 1) for i in range(15)]
        with ruleset('limit'):
            @when_all(reduce(operator.or_, alts))
            def r(c): pass
        try:
            assert_fact('limit', {'a0': 2, 'b0': 2, 'sid': 's', 'id': 'f'})
            print('created')
        except Exception as e:
            print('refused:', e)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    assert "error code: 113" in out


def test_lowering_keeps_every_rule_within_the_limit(spec):
    p = spec(valuesets=VS, rules={"many": sixteen_alternatives()})
    tree = lower_all(p.conditions).conditions["rule:many"]
    assert logical_nodes(tree) <= MAX_LOGICAL


def test_a_large_condition_gives_the_same_answer_on_every_engine(spec, engine_name):
    p = spec(valuesets=VS, rules={"many": sixteen_alternatives(), "not_many": "not (" + sixteen_alternatives() + ")"})
    hit = record(fact("c7", "2025-01-01", 6, "mmol/L"), fact("c8", "2025-01-01", 7, "mmol/L"))
    miss = record(fact("c7", "2025-01-01", 6, "mmol/L"), fact("c9", "2025-01-01", 7, "mmol/L"))
    assert holds(p, hit, engine=engine_name) == {"many"}
    assert holds(p, miss, engine=engine_name) == {"not_many"}
    assert holds(p, record(), engine=engine_name) == {"not_many"}


def test_logical_nodes_counts_as_durable_rules_sees_them():
    a, b = Cmp("a", ">", 1), Cmp("b", ">", 1)
    assert logical_nodes(a) == 0
    assert logical_nodes(All((a, b))) == 1
    assert logical_nodes(AnyOf((All((a, b)), All((a, b)), a))) == 3
