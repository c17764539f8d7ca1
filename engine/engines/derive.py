"""Derive: compute a protocol's temporal abstractions for one patient, as of a reference date.

This is step 1 of per-patient evaluation. It interprets intermediate-form nodes over the patient's
facts and remembers which facts each value came from (the evidence behind every why-line).

Semantics (each is a spec test in tests/spec):
- As-of: only facts that started on or before the reference date exist. Facts with status
  entered-in-error are never seen.
- `within N months` looks back from the reference date: after (reference - N), up to and including
  the reference date. An event exactly N months ago is outside (QOF "in the preceding 12 months").
  Month arithmetic clamps to month end (2024-02-29 - 12 months = 2023-02-28).
- `within N after X` is [X, X + N]; `within N before X` is [X - N, X]; `during period` means the
  start date is in [period start, period end]; `overlaps period` means [start, end or open] meets it.
- latest / earliest pick the most recent / first day; several events that day -> the lowest value
  (the eCQM and QOF lowest-reading convention), then the latest time. min / max pick by value
  (events without a value are ignored), ties -> the latest.
- A value is converted into its value set's declared unit; a value that cannot be converted is
  treated as missing (the event still happened) and reported as a data problem.
- Missing data: an absent event has no value or date. Any comparison involving something missing
  is false; `not` of it is true; `exists` and `is missing` test presence explicitly; count is 0.
- Age is whole years at the reference date (or at the period start / end for age_at_period_*).
- Timing against an interval (`period`, a closed range of days `[a, b]`, or a list of events):
  `X during I` keeps events that start in I; `X ends during I` those whose end (their start when
  they have no end, the eCQM "latest" point) is in I; `X entirely during I` those that start and
  end in I; `X overlaps I` those whose [start, end] meets I, an event without an end still going
  on. `X not during I` (and `not ends during` ...) keeps exactly the other events. Against
  `period` / `[a, b]` whole days count (a range with a missing end holds nothing); against a list
  of events each event's own [start, end] counts, to the minute, an event without an end still
  going on (e.g. readings taken during an inpatient stay).
- Dates move by calendar durations: `period_start - 1 year`, `period_start + 6 months - 1 day`
  (month arithmetic clamps to month end); a moved missing date is missing.
- `A union B` is the events of both lists, each fact once, in date order.
- `where F = v` / `where F in (...)` / `where F in valueset` keep events whose field matches (a
  missing field never matches); `where not F = v` / `where F not in ...` keep exactly the others,
  so events without the field stay (e.g. `where not do_not_perform = true`: an order that does
  not say "do not perform" counts). Yes/no fields compare with `true` / `false`.
- `E.result` is the event's recorded result of any kind (number, coded value, text); `E.result is
  missing` holds when E is absent or recorded without any result. For any value that may be
  missing, `is missing` means absent event or no such value on it.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from dateutil.relativedelta import relativedelta

from engine.ir import nodes as ir
from engine.language.model import Protocol
from engine.language.units import UnitError, converter
from engine.language.valuesets import ValueSetIndex
from engine.ir.lowering import compare
from engine.records.model import Fact, PatientRecord

IGNORED_STATUSES = {"entered-in-error"}


@dataclass(frozen=True)
class Context:
    reference_date: dt.date
    period_start: dt.date
    period_end: dt.date

    @classmethod
    def as_of(cls, reference_date: dt.date, period: ir.Duration, period_start: dt.date | None = None) -> "Context":
        start = period_start or (reference_date - shift(period) + dt.timedelta(days=1))
        return cls(reference_date, start, reference_date)


def shift(d: ir.Duration) -> relativedelta:
    got = _SHIFTS.get(d)
    if got is None:
        if len(_SHIFTS) >= 4096:
            _SHIFTS.clear()
        got = _SHIFTS[d] = relativedelta(**{d.unit: d.amount})  # (never changed in place: arithmetic makes new ones)
    return got


_SHIFTS: dict[ir.Duration, relativedelta] = {}  # a relativedelta per duration, made once (issue 17, P2)
_MOVED: dict[tuple, Any] = {}


def moved(day, d: ir.Duration, how: str = "+"):
    """`day + shift(d)` ("+"), `day - shift(d)` ("-") or `day + sign * shift(d)` ("+1" / "-1": a DateShift),
    each worked out once per (day, duration): relativedelta arithmetic is ~20 Python calls, and a
    patient's windows move the same few dates again and again."""
    key = (day, how, d)
    got = _MOVED.get(key)
    if got is None:
        if how == "+":
            got = day + shift(d)
        elif how == "-":
            got = day - shift(d)
        else:
            got = day + int(how) * shift(d)
        if len(_MOVED) >= 65536:
            _MOVED.clear()
        _MOVED[key] = got
    return got


def age_on(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


@dataclass
class Ev:
    """An event as the deriver sees it: the fact plus its value in the value set's unit."""

    fact: Fact
    value: float | None

    @property
    def day(self) -> dt.date:
        return self.fact.day


@dataclass
class Derived:
    values: dict[ir.Node, Any] = field(default_factory=dict)
    evidence: dict[ir.Node, list[Fact]] = field(default_factory=dict)
    data_problems: list[str] = field(default_factory=list)
    # measure values (`value:`, key measure:<id>:value) as the engine that decided computed them: the
    # per-patient engines read them from the summary fact, the SQL engines from their query's columns
    engine_values: dict[str, Any] = field(default_factory=dict)


PICK, COUNT, EXISTS = 0, 1, 2
_UNSET = object()
_EVIDENCE_NODES: dict = {}  # condition node -> its evidence-bearing nodes (the IR is immutable)
_EVIDENCE_NODES_MAX = 100_000


def _evidence_nodes(node: ir.Node) -> tuple:
    """The nodes `Deriver.evidence` reads for `node`, in walk order (duplicates kept), worked out once per
    node instead of walking the whole subtree on every call (issue 17: evidence was ~40 % of a re-evaluation):
    (PICK, the Pick node as written), (COUNT / EXISTS, the source whose value holds the events)."""
    got = _EVIDENCE_NODES.get(node)
    if got is not None:
        return got
    out = []
    for n in ir.walk(node):
        u = ir.unwrap(n)
        if isinstance(u, ir.Pick):
            out.append((PICK, n))
        elif isinstance(u, (ir.Count, ir.CountDistinct)):
            out.append((COUNT, u.source))
        elif isinstance(u, ir.Exists):
            out.append((EXISTS, u.source))
    if len(_EVIDENCE_NODES) >= _EVIDENCE_NODES_MAX:
        _EVIDENCE_NODES.clear()  # library reloads leave old nodes behind: start again rather than grow
    got = _EVIDENCE_NODES[node] = tuple(out)
    return got


_VALUESET_INDEXES: dict[int, tuple[Protocol, tuple, ValueSetIndex]] = {}


def valueset_index(protocol: Protocol) -> ValueSetIndex:
    """The protocol's value sets as one index (ValueSetIndex), made once per protocol object (and again if its
    value sets were changed since)."""
    items = tuple(protocol.valuesets.items())
    got = _VALUESET_INDEXES.get(id(protocol))
    if got is not None and got[0] is protocol and got[1] == items:
        return got[2]
    if len(_VALUESET_INDEXES) >= 256:  # libraries reloaded many times: keep only the recent ones
        _VALUESET_INDEXES.clear()
    index = ValueSetIndex(protocol.valuesets)
    _VALUESET_INDEXES[id(protocol)] = (protocol, items, index)
    return index


class Deriver:
    def __init__(self, protocol: Protocol, record: PatientRecord, ctx: Context):
        self.protocol, self.record, self.ctx = protocol, record, ctx
        self.out = Derived()
        self._facts = [f for f in record.facts
                       if f.day <= ctx.reference_date and (f.status or "").lower() not in IGNORED_STATUSES]
        self._by_valueset: dict[str, list[Fact]] | None = None  # value set name -> its facts (`_in_valueset`)

    # ---- public ----
    def eval(self, node: ir.Node) -> Any:
        values = self.out.values
        value = values.get(node, _UNSET)  # (one lookup: a node's hash is a Python call)
        if value is _UNSET:
            value = values[node] = self._eval(node)
        return value

    def evidence(self, node: ir.Node) -> list[Fact]:
        """The facts a node's value rests on."""
        self.eval(node)
        found: dict[tuple, Fact] = {}
        values = self.out.values
        for kind, n in _evidence_nodes(node):
            if kind == PICK:
                v = values.get(n)
                if isinstance(v, Ev):
                    found[(v.fact.source_system, v.fact.id)] = v.fact
            elif kind == COUNT:
                src = values.get(n)
                for e in (src or [])[:5] if isinstance(src, list) else []:
                    found[(e.fact.source_system, e.fact.id)] = e.fact
            else:
                src = values.get(n)
                evs = src if isinstance(src, list) else [src] if isinstance(src, Ev) else []
                for e in evs[-3:]:
                    found[(e.fact.source_system, e.fact.id)] = e.fact
        return sorted(found.values(), key=lambda f: f.start)

    # ---- interpretation ----
    def _eval(self, node: ir.Node) -> Any:
        """One node's value: the handler of its type (`_HANDLERS`; the first of `_ORDER` the node is an
        instance of, found once per type instead of a chain of isinstance tests on every call)."""
        handler = _HANDLERS.get(type(node))
        if handler is None:
            handler = _handler_for(type(node))
        return handler(self, node)

    def _e_named(self, n: ir.Named):
        return self.eval(n.node)

    def _e_date_shift(self, n: ir.DateShift):
        base = self.eval(n.date)
        return None if base is None else moved(base, n.duration, f"{n.sign:+d}")

    def _e_present(self, n: ir.Present):
        return self.eval(n.item) is not None

    def _e_count(self, n: ir.Count):
        return len(self._as_list(self.eval(n.source)))

    def _e_count_distinct(self, n: ir.CountDistinct):
        return len(self._distinct_keys(n))

    def _e_arith(self, n: ir.Arith):
        return arith(n.op, self.eval(n.left), self.eval(n.right))

    def _e_func(self, n: ir.Func):
        return func(n.name, [self.eval(a) for a in n.args])

    def _e_episode(self, n: ir.EpisodeRef):
        raise TypeError("'episode' outside a measure counted per episode")

    def _e_points(self, n: ir.Points):
        return n.points if self.eval(n.when) else 0.0

    def _e_sum(self, n: ir.Sum):
        values = [self.eval(i) for i in n.items]
        if any(v is None for v in values):
            return None
        total = 0.0
        for v in values:
            total += float(v)
        return total

    def _e_attr(self, n: ir.Attr):
        ev = self.eval(n.event)
        if ev is None:
            return None
        if n.name == "value":
            return ev.value
        if n.name == "date":
            return ev.day
        if n.name == "result":
            return result_text(ev)
        return ev.fact.end_day

    def _e_patient(self, n: ir.Patient):
        p = self.record.patient
        if n.name == "age":
            return age_on(p.birth_date, self.ctx.reference_date)
        if n.name == "age_at_period_start":
            return age_on(p.birth_date, self.ctx.period_start)
        if n.name == "age_at_period_end":
            return age_on(p.birth_date, self.ctx.period_end)
        if n.name == "sex":
            return p.sex.value
        if n.name == "birth_date":
            return p.birth_date
        if n.name == "death_date":  # as of the reference date: a later death has not happened yet
            return p.death_date if p.death_date is not None and p.death_date <= self.ctx.reference_date else None
        raise TypeError(f"cannot evaluate {n!r}")

    def _e_context_date(self, n: ir.ContextDate):
        return getattr(self.ctx, n.name)

    def _e_const(self, n: ir.Const):
        return n.value

    def _e_exists(self, n: ir.Exists):
        return bool(self._as_list(self.eval(n.source)))

    def _e_compare(self, n: ir.Compare):
        return compare(n.op, self.eval(n.left), self.eval(n.right))

    def _e_and(self, n: ir.And):
        return all(self.eval(i) for i in n.items)

    def _e_or(self, n: ir.Or):
        return any(self.eval(i) for i in n.items)

    def _e_not(self, n: ir.Not):
        return not self.eval(n.item)

    @staticmethod
    def _as_list(v) -> list[Ev]:
        if v is None:
            return []
        return v if isinstance(v, list) else [v]

    def _distinct_keys(self, n: ir.CountDistinct) -> set[str]:
        """The key values of the events: each event's from the first of its base value sets (in the order
        written) it is in, by the first of its codings in that value set."""
        bases = [self.protocol.valuesets[v] for v in ir.base_valuesets(n.source)]
        keys: set[str] = set()
        for e in self._as_list(self.eval(n.source)):
            for vs in bases:
                c = vs.matches_fact(e.fact)
                if c is not None:
                    keys.update(vs.key_values(c, n.key))
                    break
        return keys

    def _in_valueset(self, name: str) -> list[Fact]:
        """The facts in the value set, in record order: `[f for f in self._facts if vs.matches_fact(f)]`, worked
        out for every value set of the protocol in one pass over the facts (valueset_index)."""
        by = self._by_valueset
        if by is None:
            by = self._by_valueset = {}
            index = valueset_index(self.protocol)
            for f in self._facts:
                for vs_name in index.names(f):
                    by.setdefault(vs_name, []).append(f)
        return by.get(name, [])

    def _valueset_events(self, n: ir.ValueSetRef) -> list[Ev]:
        vs = self.protocol.valuesets[n.name]
        out = []
        conv_cache: dict[str | None, Any] = {}
        for f in self._in_valueset(n.name):
            value = f.value
            if value is not None and vs.unit is not None and f.unit is not None:
                if f.unit not in conv_cache:
                    try:
                        conv_cache[f.unit] = converter(f.unit, vs.unit, vs.analyte)
                    except UnitError as e:
                        conv_cache[f.unit] = e
                conv = conv_cache[f.unit]
                if isinstance(conv, UnitError):
                    self.out.data_problems.append(
                        f"{n.name.replace('_', ' ')} on {f.day.isoformat()} ({f.source_system} {f.id}): {conv}; value ignored")
                    value = None
                else:
                    value = round(conv(value), 6)  # constants are rounded the same way (expr.align_units)
            out.append(Ev(f, value))
        out.sort(key=lambda e: (e.fact.start, e.fact.id))
        return out

    def _sum_of(self, n: ir.SumOf):
        """sum(value of x) / sum(days of x): nothing is 0; one event without the value or end makes it missing."""
        total = 0.0
        for e in self._as_list(self.eval(n.source)):
            if n.key == "days":
                if e.fact.end is None:
                    self.out.data_problems.append(
                        f"{ir.describe(n.source)}: the {e.fact.kind.value} on {e.day.isoformat()} ({e.fact.source_system} "
                        f"{e.fact.id}) has no end date, so the days cannot be added up (missing, not 0)")
                    return None
                total += (e.fact.end_day - e.day).days
            else:
                if e.value is None:
                    return None
                total += float(e.value)
        return total

    def _window(self, n: ir.Window):
        src = self.eval(n.source)
        events = self._as_list(src)
        if n.kind == "ago":
            lo = moved(self.ctx.reference_date, n.duration, "-")
            keep = [e for e in events if lo < e.day <= self.ctx.reference_date]
        elif n.kind in ("after", "before") and n.anchor.type == ir.SET:  # any of a list of events' dates
            days = [a.day for a in self._as_list(self.eval(n.anchor))]
            d = n.duration
            if n.kind == "after":
                keep = [e for e in events if any(a <= e.day <= moved(a, d, "+") for a in days)]
            else:
                keep = [e for e in events if any(moved(a, d, "-") <= e.day <= a for a in days)]
        elif n.kind in ("after", "before"):
            anchor = self.eval(n.anchor)
            if anchor is None:
                keep = []
            elif n.kind == "after":
                hi = moved(anchor, n.duration, "+")
                keep = [e for e in events if anchor <= e.day <= hi]
            else:
                lo = moved(anchor, n.duration, "-")
                keep = [e for e in events if lo <= e.day <= anchor]
        elif n.kind == "after_end":  # after the end of any anchor event (to the minute), up to d after its end date
            ends = [a.fact for a in self._as_list(self.eval(n.anchor)) if a.fact.end is not None]
            d = n.duration
            keep = [e for e in events if any(e.fact.start > a.end and e.day <= moved(a.end_day, d, "+") for a in ends)]
        elif n.kind == "period":
            keep = [e for e in events if self.ctx.period_start <= e.day <= self.ctx.period_end]
        elif n.kind == "overlaps":
            keep = [e for e in events if e.day <= self.ctx.period_end
                    and (e.fact.end is None or e.fact.end_day >= self.ctx.period_start)]
        else:
            raise ValueError(n.kind)
        if isinstance(src, list):
            return keep
        return keep[0] if keep else None

    def _where(self, n: ir.Where):
        src = self.eval(n.source)
        keep = [e for e in self._as_list(src) if self._field_matches(e, n) != n.negate]
        if isinstance(src, list):
            return keep
        return keep[0] if keep else None

    def _timing(self, n: ir.Timing):
        src = self.eval(n.source)
        test = self._span_test(n.relation, n.span)
        keep = [e for e in self._as_list(src) if test(e) != n.negate]
        if isinstance(src, list):
            return keep
        return keep[0] if keep else None

    def _span_test(self, relation: str, span: ir.Span):
        """A predicate on events: does the event stand in `relation` to the interval?"""
        if span.kind == "events":
            spans = [(c.fact.start, c.fact.end) for c in self._as_list(self.eval(span.events))]
            if span.open_start:  # on or before E: up to each event's end (one still going on: any time)
                spans = [(dt.datetime.min.replace(tzinfo=s.tzinfo), e) for s, e in spans]
            elif span.open_end:  # on or after E: from each event's start on
                spans = [(s, None) for s, e in spans]

            def inside(t: dt.datetime) -> bool:
                return any(s <= t and (e is None or t <= e) for s, e in spans)

            if relation == "starts":
                return lambda ev: inside(ev.fact.start)
            if relation == "ends":
                return lambda ev: inside(ev.fact.end or ev.fact.start)
            if relation == "entirely":
                return lambda ev: any(s <= ev.fact.start and (e is None or (ev.fact.end or ev.fact.start) <= e)
                                      for s, e in spans)
            return lambda ev: any((e is None or ev.fact.start <= e) and (ev.fact.end is None or s <= ev.fact.end)
                                  for s, e in spans)
        if span.kind == "period":
            lo, hi = self.ctx.period_start, self.ctx.period_end
        else:
            lo = self.eval(span.start) if span.start is not None else dt.date.min
            hi = self.eval(span.end) if span.end is not None else dt.date.max
            if lo is None or hi is None:
                return lambda ev: False

        def day_in(d: dt.date) -> bool:
            return lo <= d <= hi

        if relation == "starts":
            return lambda ev: day_in(ev.day)
        if relation == "ends":
            return lambda ev: day_in(ev.fact.end_day or ev.day)
        if relation == "entirely":
            return lambda ev: day_in(ev.day) and day_in(ev.fact.end_day or ev.day)
        return lambda ev: ev.day <= hi and (ev.fact.end is None or ev.fact.end_day >= lo)

    def _union(self, n: ir.EventUnion) -> list[Ev]:
        seen: dict[tuple[str, str], Ev] = {}
        for item in n.items:
            for e in self._as_list(self.eval(item)):
                seen.setdefault((e.fact.source_system, e.fact.id), e)
        return sorted(seen.values(), key=lambda e: (e.fact.start, e.fact.id))

    def _field_matches(self, e: Ev, n: ir.Where) -> bool:
        f = e.fact
        if n.op == "exists":
            if n.field == "value":
                return e.value is not None
            if n.field == "result":
                return result_text(e) is not None
            if n.field == "start":  # the source gave a start (not taken from its end)
                return not f.attrs.get("start_unknown")
            if n.field == "end":
                return f.end is not None
            if n.field in ("value_code", "code"):
                return bool(f.value_codes if n.field == "value_code" else f.codes)
            raw = {"status": f.status, "setting": f.care_setting.value, "kind": f.kind.value,
                   "source": f.source_system}.get(n.field, f.attrs.get(n.field))
            return field_present(raw)
        if n.field == "value":
            return compare(n.op, e.value, n.value)
        if n.field in ("value_code", "code"):
            codings = f.value_codes if n.field == "value_code" else f.codes
            if n.op == "in-valueset":
                return self.protocol.valuesets[n.value].matches(codings) is not None
            values = [c.code for c in codings]
        else:
            raw = {"status": f.status, "setting": f.care_setting.value, "kind": f.kind.value,
                   "source": f.source_system}.get(n.field, f.attrs.get(n.field))
            if n.op == "in-valueset":
                from engine.records.model import Coding
                items = raw if isinstance(raw, list) else [raw] if raw else []
                codings = [Coding(**c) if isinstance(c, dict) else Coding(code=str(c)) for c in items]
                return bool(codings) and self.protocol.valuesets[n.value].matches(codings) is not None
            values = raw if isinstance(raw, list) else [raw]
            values = [v.get("code") if isinstance(v, dict) else v for v in values]
            values = [str(v).lower() if isinstance(v, bool) else v for v in values]
        if n.op == "in":
            return any(v in n.value for v in values)
        return any(compare(n.op, v, n.value) for v in values)

    def _pick(self, n: ir.Pick) -> Ev | None:
        events = self._as_list(self.eval(n.source))
        if not events:
            return None
        lowest_first = lambda e: math.inf if e.value is None else e.value  # noqa: E731
        if n.how == "latest":
            day = max(e.day for e in events)
            same = [e for e in events if e.day == day]
            return min(same, key=lambda e: (lowest_first(e), -e.fact.start.timestamp(), e.fact.id))
        if n.how == "earliest":
            day = min(e.day for e in events)
            same = [e for e in events if e.day == day]
            return min(same, key=lambda e: (lowest_first(e), e.fact.start, e.fact.id))
        if n.how == "nth":  # the index-th event (from 1) in time order
            ordered = sorted(events, key=lambda e: (e.fact.start, e.fact.id))
            return ordered[n.index - 1] if len(ordered) >= n.index else None
        valued = [e for e in events if e.value is not None]
        if not valued:
            return None
        if n.how == "min":
            return min(valued, key=lambda e: (e.value, -e.fact.start.timestamp(), e.fact.id))
        return max(valued, key=lambda e: (e.value, e.fact.start, e.fact.id))


# The node types Deriver._eval interprets, in the order it tests them, with their handlers.
_ORDER = ((ir.Named, Deriver._e_named), (ir.ValueSetRef, Deriver._valueset_events), (ir.Window, Deriver._window),
          (ir.Where, Deriver._where), (ir.Timing, Deriver._timing), (ir.EventUnion, Deriver._union),
          (ir.DateShift, Deriver._e_date_shift), (ir.Present, Deriver._e_present), (ir.Pick, Deriver._pick),
          (ir.Count, Deriver._e_count), (ir.CountDistinct, Deriver._e_count_distinct), (ir.SumOf, Deriver._sum_of),
          (ir.Arith, Deriver._e_arith), (ir.Func, Deriver._e_func), (ir.EpisodeRef, Deriver._e_episode),
          (ir.Points, Deriver._e_points), (ir.Sum, Deriver._e_sum), (ir.Attr, Deriver._e_attr),
          (ir.Patient, Deriver._e_patient), (ir.ContextDate, Deriver._e_context_date), (ir.Const, Deriver._e_const),
          (ir.Exists, Deriver._e_exists), (ir.Compare, Deriver._e_compare), (ir.And, Deriver._e_and),
          (ir.Or, Deriver._e_or), (ir.Not, Deriver._e_not))
_HANDLERS: dict[type, Any] = {}


def _cannot_evaluate(self: Deriver, n: ir.Node):
    raise TypeError(f"cannot evaluate {n!r}")


def _handler_for(cls: type):
    handler = next((h for t, h in _ORDER if issubclass(cls, t)), _cannot_evaluate)
    _HANDLERS[cls] = handler
    return handler


def result_text(ev: Ev) -> str | None:
    """An event's recorded result of any kind as text; None when nothing was recorded."""
    f = ev.fact
    if ev.value is not None or f.value is not None:
        v = ev.value if ev.value is not None else f.value
        return f"{v:g}"
    if f.value_codes:
        c = f.value_codes[0]
        return f"{c.system}|{c.code}" if c.system else c.code
    for key in ("value_string", "value_text"):
        if f.attrs.get(key):
            return str(f.attrs[key])
    if isinstance(f.attrs.get("value_boolean"), bool):
        return "true" if f.attrs["value_boolean"] else "false"
    return None


def field_present(raw) -> bool:
    """A source attribute counts as recorded unless absent, None, '' or an empty list."""
    if raw is None or raw == "" or raw == []:
        return False
    return True


def func(name: str, args: list) -> float | None:
    """exp / ln / power / least / greatest / abs; missing in (any argument) -> missing out, and
    ln of x <= 0, a power that is not a finite real number, missing too."""
    if any(a is None for a in args):
        return None
    xs = [float(a) for a in args]
    try:
        if name == "exp":
            v = math.exp(xs[0])
        elif name == "ln":
            v = math.log(xs[0]) if xs[0] > 0 else None
        elif name == "power":
            if xs[0] < 0 and not xs[1].is_integer():
                return None
            if xs[0] == 0 and xs[1] < 0:
                return None
            v = math.pow(xs[0], xs[1])
        elif name == "least":
            v = min(xs)
        elif name == "greatest":
            v = max(xs)
        elif name == "abs":
            v = abs(xs[0])
        else:
            raise ValueError(name)
    except OverflowError:
        return None
    if v is None or math.isnan(v) or math.isinf(v):
        return None
    return v


def arith(op: str, a, b) -> float | None:
    """Arithmetic with the missing-data rule: anything missing gives missing; x / 0 is missing."""
    if a is None or b is None:
        return None
    a, b = float(a), float(b)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else a / b
    raise ValueError(op)
