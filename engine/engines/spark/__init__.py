"""The Spark engine: each protocol compiled by the shared SQL compiler (engine/engines/sql/compiler.py) to
Spark SQL (dialect.py), run by PySpark in local mode (`local[2]`) or on a cluster (docs/scale.md).
batch.py runs it over columnar views (tables.py), run.py evaluates a whole Parquet population. `fired`
runs it over one patient: the adapter the spec tests use (slow per patient: batch.precompute first)."""
from __future__ import annotations

from engine.engines.derive import Context, Deriver
from engine.ir.lowering import lowered_for, summary_fact
from engine.language.model import Protocol


def fired(record, protocol: Protocol, ctx: Context) -> tuple[set[str], Deriver]:
    from engine.engines.spark.batch import evaluated_for_record

    d = Deriver(protocol, record, ctx)
    summary_fact(lowered_for(protocol), d)
    keys, values = evaluated_for_record(record, protocol, ctx)
    d.out.engine_values = values  # the measure values as Spark SQL computed them
    return keys, d
