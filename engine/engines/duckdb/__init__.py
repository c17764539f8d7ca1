"""The batch engine: each protocol compiled to one SQL query over columnar tables, run by DuckDB
(batch.py compiles, columnar.py holds the tables, run.py evaluates a whole population, audit.py
aggregates measures). `fired` runs it over one patient: the adapter the shared spec suite uses.
"""
from __future__ import annotations

from engine.engines.derive import Context, Deriver
from engine.language.model import Protocol


def fired(record, protocol: Protocol, ctx: Context) -> tuple[set[str], Deriver]:
    from engine.engines.duckdb.batch import fired_for_record

    return fired_for_record(record, protocol, ctx), Deriver(protocol, record, ctx)
