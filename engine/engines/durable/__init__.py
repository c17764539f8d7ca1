"""The durable-rules engine: one ruleset per protocol version decides the boolean match over the summary
fact that `engine.engines.derive` computes (rules.py); pool.py runs it over a population in worker
processes. What durable-rules decides and what it does not is in docs/engines.md.
"""
from __future__ import annotations

from engine.engines.derive import Context, Deriver
from engine.ir.lowering import lowered_for, summary_fact, values_from_fact
from engine.language.model import Protocol


def fired(record, protocol: Protocol, ctx: Context) -> tuple[set[str], Deriver]:
    from engine.engines.durable import rules

    lowered = lowered_for(protocol)
    d = Deriver(protocol, record, ctx)
    fact = summary_fact(lowered, d)
    # durable-rules decides yes/no matches only; a measure's number is the summary fact's field it was given
    d.out.engine_values = values_from_fact(lowered, fact)
    rules.ensure_ruleset(protocol.ruleset_name, lowered)
    return rules.run(protocol.ruleset_name, fact, record.patient.nhs_number), d
