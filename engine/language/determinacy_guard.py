"""When a condition that needs a missing codelist is decided anyway: a part of an `and` that needs no
missing codelist is false.

`engine/language/determinacy.py` takes every condition that uses a missing declared cluster out of what
the engines evaluate ("cannot determine"). For a condition `A and B` where only B needs the missing
cluster, a patient for whom A is false is *decided*: the condition is false whatever B is. Without this,
`last_fall exists and not assessed_since_fall` (FALLSREF_COD not supplied) would be "cannot determine"
for every patient, fallen or not. Only `and` (through definitions and nested `and`s) is used; `or` and
`not` of an undetermined part stay undetermined. The determined parts are evaluated by the reference
deriver, the evaluator's source of why-lines for every engine.
"""
from __future__ import annotations

from engine.ir import nodes as ir
from engine.language.determinacy import _Uses


def decided_false(proto, key: str, d) -> bool:
    """True when the undetermined condition `key` is false for this patient anyway: one of its `and` parts
    that needs no missing codelist is false. `d`: the patient's Deriver."""
    node = getattr(proto, "undetermined_conditions", {}).get(key)
    if node is None or d is None:
        return False
    missing = {c.valueset: c.cluster for c in proto.missing_clusters}
    uses = _Uses(missing)
    return any(d.eval(part) is False for part in _determined_conjuncts(node, uses))


def _determined_conjuncts(node, uses) -> list:
    n = ir.unwrap(node)
    if not isinstance(n, ir.And):
        return [node] if not uses(node) else []
    out = []
    for item in n.items:
        out += _determined_conjuncts(item, uses)
    return out
