"""The reference engine: the lowered conditions evaluated in plain Python over the derived summary fact.

The spec suite and the generative tests compare every other engine with this one.
"""
from __future__ import annotations

from engine.engines.derive import Context, Deriver
from engine.ir.lowering import eval_lowered, lowered_for, summary_fact, values_from_fact
from engine.language.model import Protocol


def fired(record, protocol: Protocol, ctx: Context) -> tuple[set[str], Deriver]:
    lowered = lowered_for(protocol)
    d = Deriver(protocol, record, ctx)
    fact = summary_fact(lowered, d)
    d.out.engine_values = values_from_fact(lowered, fact)
    return {k for k, t in lowered.conditions.items() if eval_lowered(t, fact)}, d
