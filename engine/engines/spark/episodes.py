"""Spark: a protocol's measures counted per episode in one query over (patient, episode) rows
(engine/engines/sql/episodes.py says how; engine/engines/duckdb/batch.py episode_table is DuckDB's), instead of one query
per episode — Spark's fixed cost per query is high, so this pays more here."""
from __future__ import annotations

import datetime as dt

from engine.engines.derive import Context
from engine.engines.spark import batch
from engine.engines.spark.dialect import SPARK
from engine.engines.sql import episodes
from engine.engines.sql.compiler import carried_columns, compile_protocol, condition_groups, ident, matches_sql
from engine.engines.sql.records import TABLES
from engine.language.model import Protocol

SLOTS = '"__ep_slots"'


def episode_frame(spark, proto: Protocol, as_of: dt.date, period_start: dt.date | None, shared=None,
                  tables: dict[str, str] | None = None):
    """(a checkpointed DataFrame: pid, nhs_number, one boolean column per `#k` key of `proto`, as the
    per-episode queries give them; the keys), or None when the protocol has no episode steps compiled this way.
    Call inside a batch.Scratch (what it caches is freed there)."""
    p = episodes.plan(proto)
    if p is None:
        return None
    tables = tables or batch.VIEWS
    ctx = Context.as_of(as_of, proto.period, period_start)
    counted = batch.prepare(spark, proto, as_of, period_start, tables, keys=[], shared=shared, values=p.count_values())
    spark.sql(episodes.slots_sql(p, counted.sql)).localCheckpoint(eager=True).createOrReplaceTempView(SLOTS.strip('"'))
    copied = {t: ident(f"__ep_{t}") for t in TABLES}
    extra = spark.sql(f"SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1").count() > 0
    compiled = compile_protocol(proto, ctx, copied, extra_codes=extra, keys=p.keys, dialect=SPARK,
                                episode_sets=frozenset(p.sets))
    if shared is not None:
        real = shared.protocol_sql
    else:  # the protocol's own pass over the chunk's facts (the codes table is made first by _ensure_tables)
        def real(protocol, names):
            return matches_sql(protocol.valuesets, names, compiled.vs_table, tables, ctx.reference_date, SPARK, extra,
                               carried_columns(protocol))
    batch._ensure_tables(spark, proto, compiled, episodes.CopiedMatches(real, SLOTS))
    for t in TABLES:
        spark.sql(episodes.table_sql(t, tables[t], SLOTS, compiled.vsm_table)).localCheckpoint(eager=True) \
            .createOrReplaceTempView(copied[t].strip('"'))
    rows = batch.query(spark, compiled, ["pid", "nhs_number"] + p.keys).localCheckpoint(eager=True)
    rows.createOrReplaceTempView("__ep_q")
    spark.catalog.uncacheTable(batch._name(compiled.vsm_table))
    df = spark.sql(episodes.per_patient_sql(p, "SELECT * FROM __ep_q", SLOTS)).localCheckpoint(eager=True)
    return df, [k for ks in p.out.values() for k in ks]


def fired_by_patient(spark, proto: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                     tables: dict[str, str] | None = None) -> dict[str, set[str]]:
    """nhs_number -> keys of the conditions that held (as the DuckDB engine's fired_by_patient, which does the
    same): the steps of every episode (keys `#k`) from one query over (patient, episode) rows, the other
    condition groups one query each (batch.fired_by_patient)."""
    out: dict[str, set[str]] = {}
    groups = condition_groups(proto)
    with batch.Scratch(spark):
        got = episode_frame(spark, proto, as_of, period_start, tables=tables)
        if got is not None:
            df, keys = got
            for row in df.select(*[df[f"`{c}`"] for c in ["nhs_number"] + keys]).collect():
                out.setdefault(row[0], set()).update(k for k, v in zip(keys, row[1:]) if v)
            groups = [g for g in groups if not any("#" in k for k in g)]
    return batch.fired_by_patient(spark, proto, as_of, period_start, tables, groups=groups, out=out)
