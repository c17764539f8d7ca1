"""Which parts of a protocol cannot be determined because a declared codelist is missing.

A value set declared by its official cluster with no codes (`{cluster: FOOTEXAM_COD, refset: ..., publisher:
PCD}`) is *missing* until a site supplies it (`carepath codelists import`). Everything that depends on a
missing value set, directly or through definitions, is *undetermined*: its answer is not "no" but "cannot
determine — codelist FOOTEXAM_COD not supplied". This module works on the IR alone (engine-neutral):

- `split(...)` takes the compiled conditions and returns the ones every engine may evaluate and the
  undetermined ones (removed, so no engine ever evaluates them, let alone as false), with the clusters
  each waits for, per condition key and per protocol element:

      population                     the register (undetermined: the whole protocol, for everyone)
      activity:<id>                  any of its conditions (done_by, done_when, excepted_when, when)
      goal:<id>, rule:<id>, segment:<id>, tier:<id>, measure:<id>   (any step of a measure)
      score, define:<name>

  Condition keys (activity:<id>:recent, measure:<id>:num, ...) are in the same mapping.
- Tiers are ordered (the first tier that holds is the patient's): a tier after an undetermined one cannot
  be decided either (the undetermined one might have held first), so it is undetermined too.
- If the register depends on a missing cluster, every condition is undetermined.

The output layer (engine/evaluation/evaluator.py) reports undetermined elements as `unknown` with the reason;
no task or flag is raised from them and audit measures leave them out of rates (counted apart).
"""
from __future__ import annotations

from engine.ir import nodes as ir
def reason(clusters) -> str:
    """The plain words for why something cannot be determined."""
    names = sorted(set(clusters))
    if len(names) == 1:
        return f"cannot determine — codelist {names[0]} not supplied"
    return f"cannot determine — codelists {', '.join(names)} not supplied"


class _Uses:
    """The missing value sets a node depends on (memoised per node: definitions are shared subtrees)."""

    def __init__(self, missing: dict[str, str]):
        self.missing = missing  # value set name -> cluster name
        self.memo: dict[int, frozenset[str]] = {}
        self._keep: list = []  # nodes memoised by id stay alive while the memo does

    def __call__(self, node) -> frozenset[str]:
        if node is None:
            return frozenset()
        k = id(node)
        got = self.memo.get(k)
        if got is not None:
            return got
        out: set[str] = set()
        if isinstance(node, ir.ValueSetRef) and node.name in self.missing:
            out.add(self.missing[node.name])
        if isinstance(node, ir.Where) and node.op == "in-valueset" and node.value in self.missing:
            out.add(self.missing[node.value])
        for c in ir.children(node):
            out |= self(c)
        res = frozenset(out)
        self.memo[k] = res
        self._keep.append(node)
        return res


def element_of(key: str) -> str:
    """The protocol element a condition key belongs to: activity:<id>:recent -> activity:<id>;
    measure:<id>:num#2 -> measure:<id>; rule:<id>, segment:<id>, tier:<id>, population stay as they are."""
    kind, _, rest = key.partition(":")
    if kind in ("activity", "goal", "measure") and rest:
        return f"{kind}:{rest.split(':', 1)[0]}"
    return key


def split(conditions: dict, definitions: dict, missing: dict[str, str], since=None, score: str | None = None,
          tier_order: list[str] | None = None) -> tuple[dict, dict, dict[str, tuple[str, ...]]]:
    """(conditions engines evaluate, undetermined conditions, undetermined keys -> missing clusters).

    `missing`: value set name -> cluster name, for the declared clusters not supplied. With none missing,
    the conditions come back as they are."""
    if not missing:
        return conditions, {}, {}
    uses = _Uses(missing)
    undetermined: dict[str, set[str]] = {}
    for name, node in definitions.items():
        got = uses(node)
        if got:
            undetermined[f"define:{name}"] = set(got)
    if score is not None and f"define:{score}" in undetermined:
        undetermined["score"] = set(undetermined[f"define:{score}"])
    register = set(uses(conditions.get("population"))) | set(uses(since))
    per_key: dict[str, set[str]] = {}
    for key, node in conditions.items():
        got = set(uses(node))
        if register:
            got |= register
        if got:
            per_key[key] = got
    # tiers: the first that holds is the patient's; after an undetermined tier nothing can be decided
    carried: set[str] = set()
    for tid in tier_order or []:
        key = f"tier:{tid}"
        if key in per_key:
            carried |= per_key[key]
        elif carried:
            per_key[key] = set(carried)
    if register:
        undetermined["population"] = register
    for key, clusters in per_key.items():
        undetermined.setdefault(key, set()).update(clusters)
        undetermined.setdefault(element_of(key), set()).update(clusters)
    kept = {k: v for k, v in conditions.items() if k not in per_key}
    removed = {k: v for k, v in conditions.items() if k in per_key}
    return kept, removed, {k: tuple(sorted(v)) for k, v in undetermined.items()}


def blocked_by(protocol) -> dict[str, list[str]]:
    """Missing cluster -> the elements it blocks (activity:<id>, rule:<id>, ...; population first), for
    `carepath validate` and `carepath codelists list`."""
    out: dict[str, list[str]] = {c.cluster: [] for c in protocol.missing_clusters}
    for key, clusters in protocol.undetermined.items():
        if key != element_of(key) or key.startswith("define:"):
            continue  # a condition of an element (the element is listed), or a definition
        for c in clusters:
            out.setdefault(c, [])
            if key not in out[c]:
                out[c].append(key)
    return {c: sorted(keys, key=lambda k: (k != "population", k)) for c, keys in out.items()}
