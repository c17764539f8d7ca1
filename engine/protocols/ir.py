"""The protocol intermediate form: typed, immutable expression nodes.

Every engine runs this one form: the per-patient deriver (engine/evaluate/derive.py) computes the
values the durable-rules ruleset compares, and the batch engine compiles the same nodes. Nodes are
frozen dataclasses so identical sub-expressions are shared and computed once per patient.

Types: SET (events from a value set, possibly filtered), EVENT (one event or none), NUMBER,
DATE, STRING, BOOL.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Union

SET, EVENT, NUMBER, DATE, STRING, BOOL = "set", "event", "number", "date", "string", "bool"

NEGATE = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


@dataclass(frozen=True)
class Duration:
    amount: int
    unit: str  # days | weeks | months | years

    def __str__(self) -> str:
        unit = self.unit if self.amount != 1 else self.unit.rstrip("s")
        return f"{self.amount} {unit}"


# ---- event sets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValueSetRef:
    name: str
    unit: str | None = None
    analyte: str | None = None
    type = SET


@dataclass(frozen=True)
class Window:
    """Keep events whose date falls in a window.

    kind: 'ago'      (reference - d, reference]           look-back from the reference date
          'after'    [anchor, anchor + d]                  e.g. education within 12 months after diagnosis
          'before'   [anchor - d, anchor]
          'period'   [period start, period end]            start date during the measurement period
          'overlaps' interval [start, end or open] meets the period
    """

    source: "SetOrEvent"
    kind: str
    duration: Duration | None = None
    anchor: "Node | None" = None

    @property
    def type(self) -> str:
        return self.source.type


@dataclass(frozen=True)
class Where:
    """Keep events whose field compares true (value, status, setting, or a source attribute)."""

    source: "SetOrEvent"
    field: str
    op: str  # comparison operator, or 'in' with a tuple of literals, or 'in-valueset'
    value: object

    @property
    def type(self) -> str:
        return self.source.type


@dataclass(frozen=True)
class Pick:
    """One event from a set: latest / earliest by date, min / max by value (ties: latest date)."""

    source: "SetOrEvent"
    how: str

    type = EVENT


# ---- scalars ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Count:
    source: "SetOrEvent"
    type = NUMBER
    unit = None
    nullable = False


@dataclass(frozen=True)
class Attr:
    """value / date / end of an event; missing when the event is."""

    event: "Node"
    name: str
    unit: str | None = None
    analyte: str | None = None
    nullable = True

    @property
    def type(self) -> str:
        return NUMBER if self.name == "value" else DATE


@dataclass(frozen=True)
class Patient:
    """A patient attribute: age (whole years at the reference date), sex."""

    name: str
    nullable = False

    @property
    def type(self) -> str:
        return NUMBER if self.name.startswith("age") else STRING

    @property
    def unit(self) -> str | None:
        return "a" if self.name.startswith("age") else None


@dataclass(frozen=True)
class ContextDate:
    """reference_date / period_start / period_end of the evaluation."""

    name: str
    type = DATE
    nullable = False
    unit = None


@dataclass(frozen=True)
class Const:
    value: Union[float, str, bool, dt.date]
    type: str
    unit: str | None = None
    nullable = False


# ---- booleans -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exists:
    source: "Node"
    type = BOOL


@dataclass(frozen=True)
class Compare:
    op: str
    left: "Node"
    right: "Node"
    type = BOOL


@dataclass(frozen=True)
class And:
    items: tuple
    type = BOOL


@dataclass(frozen=True)
class Or:
    items: tuple
    type = BOOL


@dataclass(frozen=True)
class Not:
    item: "Node"
    type = BOOL


@dataclass(frozen=True)
class Named:
    """A protocol definition, transparent to evaluation; kept so why-lines can use its name."""

    name: str
    node: "Node" = field(compare=True)

    @property
    def type(self) -> str:
        return self.node.type

    def __getattr__(self, item):  # unit / analyte / nullable of the wrapped node
        if item in ("unit", "analyte", "nullable"):
            return getattr(self.node, item, None)
        raise AttributeError(item)


SetOrEvent = Union[ValueSetRef, Window, Where, Pick, Named]
Node = Union[ValueSetRef, Window, Where, Pick, Count, Attr, Patient, ContextDate, Const, Exists, Compare, And, Or, Not, Named]


def unwrap(node: Node) -> Node:
    while isinstance(node, Named):
        node = node.node
    return node


def children(node: Node) -> list[Node]:
    n = node
    if isinstance(n, Named):
        return [n.node]
    if isinstance(n, (Window,)):
        return [n.source] + ([n.anchor] if n.anchor is not None else [])
    if isinstance(n, (Where, Pick, Count)):
        return [n.source]
    if isinstance(n, Attr):
        return [n.event]
    if isinstance(n, Exists):
        return [n.source]
    if isinstance(n, Compare):
        return [n.left, n.right]
    if isinstance(n, (And, Or)):
        return list(n.items)
    if isinstance(n, Not):
        return [n.item]
    return []


def walk(node: Node):
    yield node
    for c in children(node):
        yield from walk(c)


def valuesets_used(node: Node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, ValueSetRef)} | {
        n.value for n in walk(node) if isinstance(n, Where) and n.op == "in-valueset"
    }


def describe(node: Node) -> str:
    """Plain words for a node, used in why-lines."""
    n = node
    if isinstance(n, Named):
        return n.name.replace("_", " ")
    if isinstance(n, ValueSetRef):
        return n.name.replace("_", " ")
    if isinstance(n, Window):
        src = describe(n.source)
        if n.kind == "ago":
            return f"{src} in the last {n.duration}"
        if n.kind == "period":
            return f"{src} during the period"
        if n.kind == "overlaps":
            return f"{src} overlapping the period"
        return f"{src} within {n.duration} {n.kind} {describe(n.anchor)}"
    if isinstance(n, Where):
        if n.op == "in-valueset":
            return f"{describe(n.source)} with {n.field} in {n.value}"
        if n.op == "in":
            return f"{describe(n.source)} with {n.field} in {', '.join(map(str, n.value))}"
        return f"{describe(n.source)} with {n.field} {n.op} {n.value}"
    if isinstance(n, Pick):
        return f"{'lowest' if n.how == 'min' else 'highest' if n.how == 'max' else n.how} {describe(n.source)}"
    if isinstance(n, Count):
        return f"number of {describe(n.source)}"
    if isinstance(n, Attr):
        return f"{describe(n.event)} {'value' if n.name == 'value' else 'date' if n.name == 'date' else 'end date'}"
    if isinstance(n, Patient):
        return {"age": "age", "sex": "sex"}.get(n.name, n.name.replace("_", " "))
    if isinstance(n, ContextDate):
        return n.name.replace("_", " ")
    if isinstance(n, Const):
        return format_const(n)
    if isinstance(n, Exists):
        return f"{describe(n.source)} recorded"
    if isinstance(n, Compare):
        return f"{describe(n.left)} {n.op} {describe(n.right)}"
    if isinstance(n, Not):
        return f"not ({describe(n.item)})"
    if isinstance(n, And):
        return " and ".join(describe(i) for i in n.items)
    if isinstance(n, Or):
        return " or ".join(describe(i) for i in n.items)
    return str(n)


def format_const(c: Const) -> str:
    if c.type == NUMBER:
        v = c.value
        text = f"{v:g}" if isinstance(v, float) else str(v)
        return f"{text} {c.unit}" if c.unit and c.unit not in ("1", "a") else text
    return str(c.value)
