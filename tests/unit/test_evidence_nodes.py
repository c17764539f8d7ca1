"""Why-line evidence, cheaper and the same (issue 17 item 1): `Deriver.evidence` reads a list of the
evidence-bearing nodes worked out once per condition instead of walking the condition's whole subtree
on every call (it was ~40 % of a re-evaluation). Checked against the walk it replaced, for every
condition of every protocol in force, on the demo patients at two dates."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from engine.engines.derive import Context, Deriver, Ev
from engine.evaluation.evaluator import fired_conditions
from engine.ir import nodes as ir
from tests.unit.cached import shipped_library
from engine.synthetic.demo import demo_records

ROOT = Path(__file__).resolve().parents[2]


def walked_evidence(d: Deriver, node: ir.Node) -> list:
    """The evidence as computed before: a walk of the whole subtree on every call."""
    d.eval(node)
    found = {}
    for n in ir.walk(node):
        v = d.out.values.get(n)
        if isinstance(ir.unwrap(n), ir.Pick) and isinstance(v, Ev):
            found[(v.fact.source_system, v.fact.id)] = v.fact
        elif isinstance(ir.unwrap(n), (ir.Count, ir.CountDistinct)):
            src = d.out.values.get(ir.unwrap(n).source)
            for e in (src or [])[:5] if isinstance(src, list) else []:
                found[(e.fact.source_system, e.fact.id)] = e.fact
        elif isinstance(ir.unwrap(n), ir.Exists):
            src = d.out.values.get(ir.unwrap(n).source)
            evs = src if isinstance(src, list) else [src] if isinstance(src, Ev) else []
            for e in evs[-3:]:
                found[(e.fact.source_system, e.fact.id)] = e.fact
    return sorted(found.values(), key=lambda f: f.start)


def test_evidence_is_what_the_full_walk_gave():
    lib = shipped_library()
    compared = with_facts = 0
    for day in (dt.date(2026, 12, 6), dt.date(2027, 6, 1)):
        for record in demo_records(day):
            for proto in lib.in_force(day):
                _, d = fired_conditions(record, proto, Context.as_of(day, proto.period), "python")
                for node in proto.conditions.values():
                    want = walked_evidence(d, node)
                    got = d.evidence(node)
                    assert [(f.source_system, f.id) for f in got] == [(f.source_system, f.id) for f in want], node
                    compared += 1
                    with_facts += bool(want)
    assert compared > 1000 and with_facts > 100  # the comparison saw real evidence, not empty lists
