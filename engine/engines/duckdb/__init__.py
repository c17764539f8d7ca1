"""The batch engine: each protocol compiled to one SQL query over columnar tables, run by DuckDB
(batch.py compiles, columnar.py holds the tables, run.py evaluates a whole population, audit.py
aggregates measures). `fired` runs it over one patient: the adapter the shared spec suite uses.
"""
from __future__ import annotations

from engine.engines.derive import Context, Deriver
from engine.ir.lowering import lowered_for, summary_fact
from engine.language.model import Protocol


def fired(record, protocol: Protocol, ctx: Context) -> tuple[set[str], Deriver]:
    from engine.engines.duckdb.batch import evaluated_for_record

    # The deriver explains the outputs; it derives the same summary fields the other engines' derivers do,
    # so the why-lines (which read the deriver's evidence) are the same whichever engine decided.
    d = Deriver(protocol, record, ctx)
    summary_fact(lowered_for(protocol), d)
    keys, values = evaluated_for_record(record, protocol, ctx)
    d.out.engine_values = values  # the measure values as the SQL computed them, not the deriver
    return keys, d
