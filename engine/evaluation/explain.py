"""Why-lines: turn a condition and the patient's derived values into plain English.

The rule engine says *whether* a condition held; this module says *because of what*: for a
condition that held it names the parts that made it true, for one that failed the parts that
failed, each with the patient's actual value and date.
"""
from __future__ import annotations

import datetime as dt

from engine.ir import nodes as ir
from engine.engines.derive import Deriver, Ev
from engine.ir.lowering import compare
from engine.ir.unit_display import with_unit
from engine.ir.words import identifier_words
from engine.evaluation.outputs import Evidence
from engine.records.model import Fact

MAX_CLAUSES = 4
# A comparison as it stands, in words: "63.9 mmol/mol (at least 58 mmol/mol)", not "(>= 58)".
RELATION_WORDS = {">=": "at least", ">": "above", "<=": "at most", "<": "below", "==": "equal to", "=": "equal to",
                  "!=": "not"}


def _unique(parts: list[str]) -> list[str]:
    """The same reason once: a definition used twice in a condition ("no falls assessment recorded")
    is said once."""
    return list(dict.fromkeys(parts))


def fmt_value(v, unit: str | None = None) -> str:
    if v is None:
        return "missing"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        text = f"{round(v, 1):g}"
    elif isinstance(v, dt.date):
        text = v.isoformat()
    else:
        text = str(v)
    return with_unit(text, unit)


def clauses(node: ir.Node, d: Deriver, truth: bool | None = None) -> list[str]:
    n = node
    value = d.eval(n)
    truth = bool(value) if truth is None else truth
    if isinstance(n, ir.Named) and n.type == ir.BOOL:
        inner = _unique(clauses(n.node, d, truth))
        label = n.label or identifier_words(n.name)
        if isinstance(ir.unwrap(n.node), (ir.And, ir.Or, ir.Not)):
            head = f"{label}: {'yes' if truth else 'no'}"
            return [f"{head} ({'; '.join(inner)})"] if inner else [head]
        return inner or [f"{label}: {'yes' if truth else 'no'}"]
    if isinstance(n, ir.Not):
        return clauses(n.item, d, not truth)
    if isinstance(n, (ir.And, ir.Or)):
        want_all = isinstance(n, ir.And) == truth  # an And that held, or an Or that failed: every part counts
        parts = [i for i in n.items if bool(d.eval(i)) == truth] if not want_all else list(n.items)
        out: list[str] = []
        for p in parts:
            out.extend(clauses(p, d, truth if not want_all else bool(d.eval(p))))
        return _unique(out)[:MAX_CLAUSES]
    if isinstance(n, ir.Const):
        return []
    if isinstance(n, ir.Present):  # `x.value is missing`, `x.result is missing`
        item = ir.unwrap(n.item)
        v = d.eval(n.item)
        if isinstance(item, ir.Attr):
            ev = d.eval(item.event)
            what = ir.describe(item.event)
            if not isinstance(ev, Ev):
                return [f"no {what}"]
            name = "end date" if item.name == "end" else item.name
            return [f"{what} on {ev.day.isoformat()}: {name} {fmt_value(v) if v is not None else 'not recorded'}"]
        return [f"{ir.describe(n.item)} {'recorded' if v is not None else 'not recorded'}"]
    if isinstance(n, ir.Exists):
        src = d.eval(n.source)
        events = src if isinstance(src, list) else [src] if src is not None else []
        base = ir.unwrap(n.source)
        what = ir.describe(base.source if isinstance(base, ir.Pick) and base.how in ("latest", "earliest") else n.source)
        if events:
            last = events[-1]
            return [f"{what} recorded {_event_text(last, n.source)}"]
        return [f"no {what} recorded"]
    if isinstance(n, ir.Compare):
        left, right = ir.unwrap(n.left), ir.unwrap(n.right)
        lv, rv = d.eval(n.left), d.eval(n.right)
        if isinstance(left, ir.Attr) and lv is None:
            return [f"no {ir.describe(left.event)}" if d.eval(left.event) is None
                    else f"{ir.describe(n.left)} not recorded"]
        lu = getattr(n.left, "unit", None)
        ru = getattr(n.right, "unit", None)
        rtext = ir.format_const(right) if isinstance(right, ir.Const) else f"{ir.describe(n.right)} {fmt_value(rv, ru)}"
        when = ""
        if isinstance(left, ir.Attr) and left.name == "value":
            ev = d.eval(left.event)
            if isinstance(ev, Ev):
                when = f" on {ev.day.isoformat()}"
        # the relation as it stands: `(>= 58)` when it holds, `(< 58)` when it does not
        op = n.op if compare(n.op, lv, rv) or rv is None else ir.NEGATE[n.op]
        text = f"{ir.describe(n.left)} {fmt_value(lv, lu)}{when} ({RELATION_WORDS.get(op, op)} {rtext})"
        if isinstance(left, ir.Sum):
            lines = score_lines(left, d)
            if lines:
                text += ": " + ", ".join(lines)
        return [text]
    return [f"{ir.describe(n)}: {fmt_value(value)}"]


def score_lines(s: ir.Sum, d: Deriver) -> list[str]:
    """The lines of a score that gave points: '+3 (care home resident)', '+2 (admissions 2)'."""
    out = []
    for item in s.items:
        v = d.eval(item)
        base = ir.unwrap(item)
        if v is None:
            out.append(f"(missing: {ir.describe(item)})")
            continue
        if not v:
            continue
        sign = "+" if v > 0 else "-"
        if isinstance(base, ir.Points):
            why = "; ".join(clauses(base.when, d, True)[:2]) or ir.describe(base.when)
            out.append(f"{sign}{abs(v):g} for {why}")
        else:
            out.append(f"{sign}{abs(float(v)):g} for {ir.describe(item)}")
    return out


def _event_text(ev: Ev, source: ir.Node) -> str:
    unit = getattr(ir.unwrap(source), "unit", None)
    if unit is None:
        base = ir.unwrap(source)
        while hasattr(base, "source"):
            base = ir.unwrap(base.source)
        unit = getattr(base, "unit", None)
    text = f"on {ev.day.isoformat()}"
    if ev.value is not None:
        text = f"{fmt_value(ev.value, unit)} {text}"
    return text


def sentence(head: str, parts: list[str]) -> str:
    parts = [p for p in parts if p]
    if not parts:
        return head.rstrip(".") + "."
    return f"{head.rstrip('.')}: {'; '.join(parts)}."


def evidence_items(facts: list[Fact], protocol) -> list[Evidence]:
    out = []
    for f in facts:
        coding = f.codes[0]
        term = coding.display
        for vs in protocol.valuesets.values():
            c = vs.matches(f.codes)
            if c is not None:
                coding = c
                term = vs.terms.get((c.system, c.code), c.display or term)
                break
        out.append(Evidence(fact_id=f.id, source_system=f.source_system, care_setting=f.care_setting.value,
                            kind=f.kind.value, date=f.day, code=coding.code, term=term, value=f.value, unit=f.unit))
    return out
