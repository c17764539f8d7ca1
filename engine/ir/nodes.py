"""The protocol intermediate form: typed, immutable expression nodes.

Every engine runs this one form: the per-patient deriver (engine/engines/derive.py) computes the
values the durable-rules ruleset compares, and the batch engine compiles the same nodes. Nodes are
frozen dataclasses so identical sub-expressions are shared and computed once per patient.

Types: SET (events from a value set, possibly filtered), EVENT (one event or none), NUMBER,
DATE, STRING, BOOL.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Union
from engine.ir.unit_display import with_unit
from engine.ir.words import identifier_is_words, identifier_words

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
    label: str | None = field(default=None, compare=False)  # what it is in words (its cluster's), for why-lines
    type = SET


@dataclass(frozen=True)
class Window:
    """Keep events whose date falls in a window.

    kind: 'ago'      (reference - d, reference]           look-back from the reference date
          'after'    [anchor, anchor + d]                  e.g. education within 12 months after diagnosis
          'before'   [anchor - d, anchor]                  (an anchor that is a list of events: any of their dates)
          'after_end' (end, end date + d]                  after the END of any anchor event (to the minute), up
                                                           to d after its end date: readmission after discharge
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
    op: str  # comparison operator, 'in' with a tuple of literals, 'in-valueset', or 'exists' (the field is recorded)
    value: object
    negate: bool = False  # keep the events for which the test does NOT hold (a missing field included)
    label: str | None = field(default=None, compare=False)  # 'in-valueset': the value set in words (its cluster's)

    @property
    def type(self) -> str:
        return self.source.type


@dataclass(frozen=True)
class Span:
    """The interval a timing relation refers to.

    kind: 'period'  [period start, period end], whole days
          'range'   [start, end], whole days, start / end are DATE nodes (e.g. period_start - 1 year);
                    an end that is None is open (`[, period_end]`, `on or before X`)
          'events'  the time span [start, end] of each event of a list (an event without an end is
                    still going on); compared with the time of day. open_start: from the beginning of
                    time to each event's end (`on or before E`); open_end: from each event's start on
                    (`on or after E`)
    """

    kind: str
    start: "Node | None" = None
    end: "Node | None" = None
    events: "Node | None" = None
    open_start: bool = False
    open_end: bool = False


@dataclass(frozen=True)
class Timing:
    """Keep events by how their time relates to an interval (negate: keep the others).

    relation: 'starts'    the event starts in the interval                    (`during`)
              'ends'      its end (its start when it has none) is in it       (`ends during`)
              'entirely'  it starts and ends in it                            (`entirely during`)
              'overlaps'  [start, end or still going] meets it                (`overlaps`)
    """

    source: "SetOrEvent"
    relation: str
    span: Span
    negate: bool = False

    @property
    def type(self) -> str:
        return self.source.type


@dataclass(frozen=True)
class EventUnion:
    """The events of several lists together (an event in more than one counts once)."""

    items: tuple
    type = SET


@dataclass(frozen=True)
class Pick:
    """One event from a set: latest / earliest by date, min / max by value (ties: latest date);
    `nth` the index-th event (from 1) in time order (start, then id): an episode of a measure."""

    source: "SetOrEvent"
    how: str
    index: int = 0

    type = EVENT


@dataclass(frozen=True)
class EpisodeRef:
    """`episode`: the episode a measure counted per episode is looking at (one of its `episodes:`
    events). Replaced by the n-th episode event when the measure's steps are compiled."""

    type = EVENT
    unit = None
    analyte = None


@dataclass(frozen=True)
class Func:
    """A scalar function of numbers: exp, ln, power(x, y), least(...), greatest(...), abs.
    Missing if any argument is (least / greatest too: a missing value is never silently skipped);
    ln of x <= 0 and a power that is not a real number are missing."""

    name: str
    args: tuple
    unit: str | None = None
    type = NUMBER
    nullable = True


# ---- scalars ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Count:
    source: "SetOrEvent"
    type = NUMBER
    unit = None
    nullable = False


@dataclass(frozen=True)
class CountDistinct:
    """How many different `key` values the events carry: key 'code' (the coding by which each event is in
    its value set) or a property column of the value set's codelist (e.g. an eFI deficit). Events whose
    code has no value for the column add nothing."""

    source: "SetOrEvent"
    key: str
    type = NUMBER
    unit = None
    nullable = False


@dataclass(frozen=True)
class SumOf:
    """`sum(value of x)`: the events' values added up (in their value set's unit); `sum(days of x)`: their lengths
    in whole days, end date minus start date (a stay admitted and discharged the same day is 0). Nothing to add
    is 0; an event without the value (or without an end) makes the total missing, never a smaller total."""

    source: "SetOrEvent"
    key: str  # value | days
    unit: str | None = None
    type = NUMBER
    nullable = True


@dataclass(frozen=True)
class Arith:
    """left op right on numbers (op: + - * /); missing if either side is, and x / 0 is missing."""

    op: str
    left: "Node"
    right: "Node"
    unit: str | None = None
    type = NUMBER

    @property
    def nullable(self) -> bool:
        return self.op == "/" or any(getattr(unwrap(x), "nullable", False) for x in (self.left, self.right))


@dataclass(frozen=True)
class Points:
    """`points` when the condition holds, else 0 (an item of a sum: score lines)."""

    points: float
    when: "Node"
    type = NUMBER
    unit = None
    nullable = False


@dataclass(frozen=True)
class Sum:
    """The total of number items (a score); missing if any item is."""

    items: tuple
    unit: str | None = None
    type = NUMBER

    @property
    def nullable(self) -> bool:
        return any(getattr(unwrap(x), "nullable", False) for x in self.items)


@dataclass(frozen=True)
class Attr:
    """value / date / end / result of an event; missing when the event is.

    `result` is the event's recorded result of any kind as text (a number, a coded value as
    system|code, free text, yes/no); it is missing when nothing was recorded, e.g. a lab test
    with a data-absent reason.
    """

    event: "Node"
    name: str
    unit: str | None = None
    analyte: str | None = None
    nullable = True

    @property
    def type(self) -> str:
        return NUMBER if self.name == "value" else STRING if self.name == "result" else DATE


@dataclass(frozen=True)
class DateShift:
    """A date moved by a calendar duration (month arithmetic clamps to month end)."""

    date: "Node"
    duration: Duration
    sign: int  # +1 or -1
    type = DATE
    unit = None

    @property
    def nullable(self) -> bool:
        return bool(getattr(unwrap(self.date), "nullable", False))


@dataclass(frozen=True)
class Patient:
    """A patient attribute: age (whole years at the reference date), sex, birth_date, death_date
    (missing while alive, or when the death is after the reference date)."""

    name: str

    @property
    def type(self) -> str:
        return NUMBER if self.name.startswith("age") else DATE if self.name.endswith("_date") else STRING

    @property
    def nullable(self) -> bool:
        return self.name == "death_date"

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
class Present:
    """A value that may be missing (an event's value, date, result ...) is recorded."""

    item: "Node"
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
    """A protocol definition, transparent to evaluation; kept so why-lines can use its name, or its `label:`
    when the protocol gives one (words, not the identifier)."""

    name: str
    node: "Node" = field(compare=True)
    label: str | None = field(default=None, compare=False)

    @property
    def type(self) -> str:
        return self.node.type

    def __getattr__(self, item):  # unit / analyte / nullable of the wrapped node
        if item in ("unit", "analyte", "nullable"):
            return getattr(self.node, item, None)
        raise AttributeError(item)


SetOrEvent = Union[ValueSetRef, Window, Where, Timing, EventUnion, Pick, Named, EpisodeRef]
Node = Union[ValueSetRef, Window, Where, Timing, EventUnion, Pick, Count, CountDistinct, SumOf, Arith, Points, Sum, Attr,
             DateShift, Patient, ContextDate, Const, Exists, Present, Compare, And, Or, Not, Named, EpisodeRef, Func]


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
    if isinstance(n, (Where, Pick, Count, CountDistinct, SumOf)):
        return [n.source]
    if isinstance(n, Func):
        return list(n.args)
    if isinstance(n, Arith):
        return [n.left, n.right]
    if isinstance(n, Points):
        return [n.when]
    if isinstance(n, Sum):
        return list(n.items)
    if isinstance(n, Timing):
        sp = n.span
        return [n.source] + [x for x in (sp.start, sp.end, sp.events) if x is not None]
    if isinstance(n, EventUnion):
        return list(n.items)
    if isinstance(n, DateShift):
        return [n.date]
    if isinstance(n, Present):
        return [n.item]
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


def substitute(node: Node, old: Node, new: Node, _memo: dict | None = None) -> Node:
    """The node with every occurrence of `old` replaced by `new` (frozen nodes are rebuilt)."""
    import dataclasses
    memo = {} if _memo is None else _memo
    if type(node) is type(old) and node == old:
        return new
    if id(node) in memo:
        return memo[id(node)][1]
    if not dataclasses.is_dataclass(node) or isinstance(node, (Duration, Const)):
        return node
    changes = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if isinstance(v, tuple):
            nv = tuple(substitute(x, old, new, memo) if dataclasses.is_dataclass(x) else x for x in v)
        elif dataclasses.is_dataclass(v):
            nv = substitute(v, old, new, memo)
        else:
            continue
        if nv is not v and nv != v:
            changes[f.name] = nv
    out = dataclasses.replace(node, **changes) if changes else node
    memo[id(node)] = (node, out)  # the node is kept so its id stays unique while memo lives
    return out


def uses_episode(node: Node) -> bool:
    return any(isinstance(n, EpisodeRef) for n in walk(node))


def base_valuesets(node: Node) -> list[str]:
    """The value sets a list of events is drawn from, in the order written (through windows, filters,
    timing, picks and unions)."""
    n = unwrap(node)
    if isinstance(n, ValueSetRef):
        return [n.name]
    if isinstance(n, EpisodeRef):
        return []
    if isinstance(n, EventUnion):
        out: list[str] = []
        for i in n.items:
            out += [v for v in base_valuesets(i) if v not in out]
        return out
    return base_valuesets(n.source)


def valuesets_used(node: Node) -> set[str]:
    return {n.name for n in walk(node) if isinstance(n, ValueSetRef)} | {
        n.value for n in walk(node) if isinstance(n, Where) and n.op == "in-valueset"
    }


def describe(node: Node) -> str:
    """Plain words for a node, used in why-lines."""
    n = node
    if isinstance(n, Named):
        return n.label or derived_words(n) or identifier_words(n.name)
    if isinstance(n, ValueSetRef):
        return n.label or identifier_words(n.name)
    if isinstance(n, Window):
        src = describe(n.source)
        if n.kind == "ago":
            return f"{src} in the last {n.duration}"
        if n.kind == "period":
            return f"{src} during the period"
        if n.kind == "overlaps":
            return f"{src} overlapping the period"
        if n.kind == "after_end":
            return f"{src} within {n.duration} after the end of {describe(n.anchor)}"
        return f"{src} within {n.duration} {n.kind} {describe(n.anchor)}"
    if isinstance(n, Timing):
        words = {"starts": "during", "ends": "ending during", "entirely": "entirely during", "overlaps": "overlapping"}
        return f"{describe(n.source)} {'not ' if n.negate else ''}{words[n.relation]} {describe_span(n.span)}"
    if isinstance(n, EventUnion):
        return " or ".join(describe(i) for i in n.items)
    if isinstance(n, DateShift):
        return f"{describe(n.date)} {'+' if n.sign > 0 else '-'} {n.duration}"
    if isinstance(n, Present):
        return f"{describe(n.item)} recorded"
    if isinstance(n, Where) and n.negate:
        import dataclasses
        inner = describe(dataclasses.replace(n, negate=False)).replace(f"{describe(n.source)} with ", "", 1)
        return f"{describe(n.source)} without {inner}"
    if isinstance(n, Where):
        fld = n.field.replace("_", " ")
        if n.op == "exists":
            return f"{describe(n.source)} with a {fld} recorded"
        if n.op == "in-valueset":
            return f"{describe(n.source)} with {fld} in {n.label or identifier_words(str(n.value))}"
        if n.op == "in":
            return f"{describe(n.source)} with {fld} in {', '.join(map(str, n.value))}"
        return f"{describe(n.source)} with {fld} {n.op} {n.value}"
    if isinstance(n, Pick):
        if n.how == "nth":
            return f"episode {n.index} ({describe(n.source)})"
        return f"{'lowest' if n.how == 'min' else 'highest' if n.how == 'max' else n.how} {describe(n.source)}"
    if isinstance(n, EpisodeRef):
        return "the episode"
    if isinstance(n, Func):
        return f"{n.name}({', '.join(describe(a) for a in n.args)})"
    if isinstance(n, Count):
        return f"number of {_plural_head(n.source)}"
    if isinstance(n, SumOf):
        return f"{'days in' if n.key == 'days' else 'total value of'} {describe(n.source)}"
    if isinstance(n, CountDistinct):
        what = "codes" if n.key == "code" else f"{n.key.replace('_', ' ')}s"
        return f"number of different {what} of {describe(n.source)}"
    if isinstance(n, Arith):
        return f"({describe(n.left)} {n.op} {describe(n.right)})"
    if isinstance(n, Points):
        return f"{format_const(Const(n.points, NUMBER))} if {describe(n.when)}"
    if isinstance(n, Sum):
        return "sum of (" + "; ".join(describe(i) for i in n.items) + ")"
    if isinstance(n, Attr):
        return f"{describe(n.event)} {'end date' if n.name == 'end' else n.name}"
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


# A definition with no `label:` whose identifier is not words ("last_sbp", "invites_12m", "on_doac": an
# abbreviation, a number glued to a word, a state rather than a thing) reads as what it is ("latest systolic
# blood pressure in the last 12 months") when that is short; an identifier in words ("newly_diagnosed") and a
# long expression (a condition, a chain of definitions) keep the identifier, read as words.
DERIVED_WORDS_MAX = 60


def derived_words(n: "Named") -> str | None:
    """The words of an unlabelled definition of events or a number, from its expression (value sets in their
    clusters' words); None for a yes/no definition (its why-line gives its parts) or when they would be long."""
    if n.label or n.type == BOOL or identifier_is_words(n.name):
        return None
    words = _DERIVED.get(n)
    if words is None:
        text = describe(n.node)
        words = text if len(text) <= DERIVED_WORDS_MAX and not any(c in text for c in "[(<>=") else ""
        _DERIVED[n] = words
    return words or None


_DERIVED: dict = {}


def _plural_head(source: Node) -> str:
    """A list of events counted, its value set in the plural: "number of emergency admissions in the last 12
    months" (a word ending in a capital, a digit or an s stays as it is: HbA1c, eGFR; so does a one-word
    identifier, which may be an abbreviation)."""
    text = describe(source)
    base = unwrap(source)
    while not isinstance(base, ValueSetRef) and hasattr(base, "source") and not isinstance(base, Named):
        base = unwrap(base.source)
    if isinstance(base, ValueSetRef):
        head = describe(base)
        wordy = base.label is not None or " " in head  # a cluster's words, or an identifier of words (not "adm")
        if wordy and text.startswith(head) and head[-1:].islower() and not head.endswith("s"):
            return head + "s" + text[len(head):]
    return text


def describe_span(sp: Span) -> str:
    if sp.kind == "period":
        return "the period"
    if sp.kind == "events" and sp.open_start:
        return f"on or before (the end of) {describe(sp.events)}"
    if sp.kind == "events" and sp.open_end:
        return f"on or after (the start of) {describe(sp.events)}"
    if sp.kind == "range":
        if sp.start is None:
            return f"on or before {describe(sp.end)}"
        if sp.end is None:
            return f"on or after {describe(sp.start)}"
        return f"the days from {describe(sp.start)} to {describe(sp.end)}"
    return describe(sp.events)


def format_const(c: Const) -> str:
    if c.type == NUMBER:
        v = c.value
        text = f"{v:g}" if isinstance(v, float) else str(v)
        return with_unit(text, c.unit)
    return str(c.value)


def _cache_hashes() -> None:
    """Nodes are frozen dataclasses used as dictionary keys (the deriver's values, lowering's fields):
    their generated __hash__ walks the whole subtree on every lookup — quadratic in the depth, and most
    of an eCQM episode measure's evaluation time. A node never changes, so its hash is computed once."""
    import dataclasses

    for cls in list(globals().values()):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
                and cls.__dict__.get("__hash__") is not None):
            continue
        computed = cls.__dict__["__hash__"]

        def cached(self, _computed=computed):
            try:
                return self.__dict__["_hash"]
            except KeyError:
                h = _computed(self)
                object.__setattr__(self, "_hash", h)
                return h

        cls.__hash__ = cached
        cls.__getstate__ = _state_without_hash  # str hashes differ between processes: never ship one


def _state_without_hash(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != "_hash"}


_cache_hashes()
