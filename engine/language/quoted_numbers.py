"""A rule's words must say what its condition does.

When a clinical lead changes a threshold (HbA1c `>= 58 mmol/mol` -> `>= 53 mmol/mol`), the rule's title,
task, flag text and "because" still say 58 and every worklist item and why-line would then contradict the
rule. This check finds numbers quoted with a unit in a rule's (or goal's) words that its condition does
not use, where the condition does use another number in that unit: the mark of a threshold that changed
under its text. Words quoting guidance ("NG28: 48 mmol/mol") in `because` are checked the same way, as a
warning only: a reviewer decides.
"""
from __future__ import annotations

import dataclasses
import re

from engine.ir import nodes as ir
from engine.language.errors import Problem

# Units as written in words -> as written in conditions (UCUM), for the units thresholds are written in.
UNITS = {"mmol/mol": "mmol/mol", "%": "%", "mmhg": "mm[Hg]", "mm[hg]": "mm[Hg]", "mmol/l": "mmol/L", "mg/mmol": "mg/mmol",
         "kg/m2": "kg/m2", "kg/m²": "kg/m2", "kg": "kg", "ml/min/1.73m2": "mL/min/{1.73_m2}", "ml/min/1.73m²": "mL/min/{1.73_m2}",
         "ml/min": "mL/min/{1.73_m2}", "bpm": "/min", "/min": "/min"}
QUOTE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(mmol/mol|mmhg|mm\[hg\]|mmol/l|mg/mmol|kg/m2|kg/m²|kg|ml/min/1\.73m2|"
                   r"ml/min/1\.73m²|ml/min|bpm|/min|%)(?![\w/])", re.IGNORECASE)


def _constants(node, seen: set[int] | None = None) -> set[tuple[float, str]]:
    """(value, unit) of every number with a unit in a condition, through its definitions."""
    seen = set() if seen is None else seen
    out: set[tuple[float, str]] = set()
    if node is None or id(node) in seen:
        return out
    seen.add(id(node))
    if isinstance(node, ir.Const):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool) and node.unit:
            out.add((float(node.value), node.unit))
        return out
    if isinstance(node, (list, tuple)):
        for x in node:
            out |= _constants(x, seen)
        return out
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            out |= _constants(getattr(node, f.name), seen)
    return out


def quoted(text: str | None) -> set[tuple[float, str]]:
    return {(float(n), UNITS[u.lower()]) for n, u in QUOTE.findall(text or "")}


def _same_unit(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def quoted_number_problems(proto) -> list[Problem]:
    out: list[Problem] = []
    parts = [(f"rule:{r.id}", "rule", r.id, r.location,
              [("title", r.title), ("task", r.task.title if r.task else None), ("flag text", r.flag.text if r.flag else None),
               ("escalation", r.escalation.title if r.escalation else None), ("because", r.because)])
             for r in proto.rules]
    parts += [(f"goal:{g.id}:met", "goal", g.id, g.location, [("title", g.title), ("because", g.because)])
              for g in proto.goals]
    for key, what, rid, location, texts in parts:
        used = _constants(proto.all_conditions.get(key))
        if not used:
            continue
        for field_name, text in texts:
            for value, unit in sorted(quoted(text)):
                same_unit = {v for v, u in used if _same_unit(u, unit)}
                if same_unit and value not in same_unit:
                    uses = ", ".join(f"{v:g} {unit}" for v in sorted(same_unit))
                    out.append(Problem(location, f"{what} {rid!r}: its {field_name} says {value:g} {unit} but its condition "
                                                 f"uses {uses}; reword the {field_name} or check the condition",
                                       severity="warning"))
    return out
