"""Lower a protocol's conditions into comparisons of one summary fact's fields with constants.

This is how a protocol becomes a durable-rules ruleset (see engine/engines/durable/rules.py):

1. Every condition (population, activity parts, rules, goals, measure parts) is put in negation
   normal form: `not` is pushed down to the leaves with De Morgan's laws.
2. Each leaf becomes a comparison of a *field* with a *constant*. A field is a value the deriver
   computes per patient (an event's value or date, a count, an age, a yes/no such as "exists").
3. Missing data is explicit: a value that may be missing gets a companion presence field `<f>__p`,
   so `x > 58` becomes `x__p == true and x > 58` and `not (x > 58)` becomes
   `x__p == false or x <= 58`. Every field is always present in the fact, because durable-rules
   2.0.28 hangs on `-m.field` (field absent) inside `|` and on conditions naming `sid`/`id`.
4. A comparison between two changing values (one event after another) becomes a yes/no field
   computed by the deriver, compared with `true`.
5. "Is this value recorded" (`x.value is missing`, `x.result is missing`) is the presence field
   itself: `f__p == false`.
6. durable-rules 2.0.28 cannot create a rule whose condition has more than 15 `and` / `or` nodes
   ("Could not create ruleset, error code: 113", ERR_EXPRESSION_LIMIT_EXCEEDED, raised only when the
   first fact arrives). A part of a condition that would go over that becomes one yes/no field the
   deriver computes (like rule 4), so the rule stays within the limit and means the same.

The lowered form is also evaluated in plain Python (eval_lowered) as the reference the rule
engine is checked against.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from engine.ir import nodes as ir

MAX_BRANCHES = 512  # durable-rules expands `|` into one rule per branch
MAX_LOGICAL = 15  # durable-rules: at most this many and / or nodes in one rule's condition (error 113 beyond)


@dataclass(frozen=True)
class Cmp:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class All:
    items: tuple


@dataclass(frozen=True)
class AnyOf:
    items: tuple


TRUE = All(())
FALSE = AnyOf(())


@dataclass
class FieldSpec:
    name: str
    node: ir.Node
    kind: str  # 'scalar' (with presence flag when nullable) or 'bool'
    nullable: bool = False


@dataclass
class Lowered:
    conditions: dict[str, Any] = field(default_factory=dict)  # key -> All/AnyOf/Cmp tree
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    by_node: dict[tuple, str] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # measure:<id>:value -> the scalar field holding it


class ConditionTooComplex(ValueError):
    pass


def to_engine_value(v: Any) -> Any:
    """Values cross a JSON boundary into durable-rules: dates become day numbers."""
    if isinstance(v, dt.date):
        return v.toordinal()
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float) and v.is_integer():
        return v
    return v


def lower_all(conditions: dict[str, ir.Node]) -> Lowered:
    out = Lowered()
    for key, node in conditions.items():
        tree = _lower(node, False, out)
        if branches(tree) > MAX_BRANCHES:
            raise ConditionTooComplex(f"condition {key} expands to {branches(tree)} alternatives; simplify it")
        out.conditions[key] = tree
    return out


def _field(node: ir.Node, kind: str, out: Lowered) -> FieldSpec:
    base = ir.unwrap(node) if kind == "scalar" else node
    k = (kind, base)
    if k not in out.by_node:
        name = f"f{len(out.by_node)}"
        nullable = kind == "scalar" and bool(getattr(base, "nullable", False))
        out.by_node[k] = name
        out.fields[name] = FieldSpec(name, base, kind, nullable)
    return out.fields[out.by_node[k]]


def _lower(node: ir.Node, neg: bool, out: Lowered):
    n = node
    if isinstance(n, ir.Named):
        return _lower(n.node, neg, out)
    if isinstance(n, ir.Not):
        return _lower(n.item, not neg, out)
    if isinstance(n, (ir.And, ir.Or)):
        parts = tuple(_lower(i, neg, out) for i in n.items)
        conj = isinstance(n, ir.And) != neg
        tree = _simplify(All(parts) if conj else AnyOf(parts))
        if logical_nodes(tree) > MAX_LOGICAL:  # over durable-rules' limit: one yes/no field for this part
            f = _field(n, "bool", out)
            return Cmp(f.name, "==", not neg)
        return tree
    if isinstance(n, ir.Const) and n.type == ir.BOOL:
        return TRUE if bool(n.value) != neg else FALSE
    if isinstance(n, ir.Present):
        if not getattr(ir.unwrap(n.item), "nullable", False):
            return TRUE if not neg else FALSE
        f = _field(n.item, "scalar", out)
        return Cmp(f.name + "__p", "==", not neg)
    if isinstance(n, ir.Compare):
        left, right, op = ir.unwrap(n.left), ir.unwrap(n.right), n.op
        if isinstance(left, ir.Const) and isinstance(right, ir.Const):
            return TRUE if compare(op, left.value, right.value) != neg else FALSE
        if isinstance(left, ir.Const):
            left, right, op = right, left, {">": "<", "<": ">", ">=": "<=", "<=": ">="}.get(op, op)
        if isinstance(right, ir.Const):
            f = _field(left, "scalar", out)
            value = to_engine_value(right.value)
            if not neg:
                cmp = Cmp(f.name, op, value)
                return All((Cmp(f.name + "__p", "==", True), cmp)) if f.nullable else cmp
            cmp = Cmp(f.name, ir.NEGATE[op], value)
            return AnyOf((Cmp(f.name + "__p", "==", False), cmp)) if f.nullable else cmp
    # exists, or a comparison of two changing values: a yes/no field from the deriver
    f = _field(n, "bool", out)
    return Cmp(f.name, "==", not neg)


def _simplify(t):
    if isinstance(t, All):
        items = []
        for i in t.items:
            if i == FALSE:
                return FALSE
            if i == TRUE:
                continue
            items.extend(i.items if isinstance(i, All) and i.items else [i])
        return items[0] if len(items) == 1 else All(tuple(items))
    items = []
    for i in t.items:
        if i == TRUE:
            return TRUE
        if i == FALSE:
            continue
        items.extend(i.items if isinstance(i, AnyOf) and i.items else [i])
    return items[0] if len(items) == 1 else AnyOf(tuple(items))


def logical_nodes(t) -> int:
    """The and / or nodes of a lowered condition as durable-rules sees them (nested ones flatten)."""
    if isinstance(t, Cmp):
        return 0
    return (1 if len(t.items) > 1 else 0) + sum(logical_nodes(i) for i in t.items)


def branches(t) -> int:
    if isinstance(t, Cmp):
        return 1
    if isinstance(t, All):
        total = 1
        for i in t.items:
            total *= branches(i)
        return total
    return max(1, sum(branches(i) for i in t.items))


def eval_lowered(t, fact: dict) -> bool:
    """Plain-Python evaluation of a lowered condition: the reference for the rule engine."""
    if isinstance(t, Cmp):
        v = fact[t.field]
        if t.op == "==":
            return v == t.value
        return compare(t.op, v, t.value)
    if isinstance(t, All):
        return all(eval_lowered(i, fact) for i in t.items)
    return any(eval_lowered(i, fact) for i in t.items)


def summary_fact(lowered: Lowered, deriver) -> dict[str, Any]:
    """The one fact asserted per patient: every field present, missing values made explicit."""
    fact: dict[str, Any] = {}
    for name, spec in lowered.fields.items():
        value = deriver.eval(spec.node)
        if spec.kind == "bool":
            fact[name] = bool(value)
            continue
        if spec.nullable:
            fact[name + "__p"] = value is not None
            fact[name] = to_engine_value(value) if value is not None else _placeholder(spec.node)
        else:
            fact[name] = to_engine_value(value)
    return fact


def _placeholder(node: ir.Node):
    """A harmless stand-in for a missing value (never NaN); guarded by the presence field."""
    return "" if node.type == ir.STRING else 0


def compare(op: str, a, b) -> bool:
    """Comparison with the missing-data rule: anything missing compares false."""
    if a is None or b is None:
        return False
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    raise ValueError(op)


_lowered_cache: dict[str, Lowered] = {}


def lowered_for(protocol) -> Lowered:
    """A protocol version's lowered conditions, computed once per ruleset name (id@version#hash)."""
    name = protocol.ruleset_name
    if name not in _lowered_cache:
        lowered = lower_all(protocol.conditions)
        for key, node in getattr(protocol, "values", {}).items():  # measure values: one number field each
            lowered.values[key] = _field(node, "scalar", lowered).name
        _lowered_cache[name] = lowered
    return _lowered_cache[name]


def values_from_fact(lowered: Lowered, fact: dict[str, Any]) -> dict[str, float | None]:
    """The measure values (`value:`) of one patient from a summary fact, however it was computed: None where
    the value is missing (the presence field is false), never 0 in its place."""
    out: dict[str, float | None] = {}
    for key, name in lowered.values.items():
        present = fact.get(name + "__p", True) if lowered.fields[name].nullable else True
        v = fact.get(name)
        out[key] = float(v) if present and v is not None else None
    return out
