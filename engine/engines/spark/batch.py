"""The Spark engine: a protocol compiled by the shared SQL compiler (engine/engines/sql/compiler.py) in Spark
SQL's dialect (dialect.py), run over the four columnar views (tables.py) by Spark (local mode or a cluster).

Per protocol and group of conditions (compiler.condition_groups), `prepare()` makes the same three tables
the DuckDB engine makes (value-set codes; the facts matched to value sets in one pass, cached; unit
conversions computed in Python by units.converter so no float can differ), then the compiled query runs."""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from engine.engines.derive import Context
from engine.engines.spark.dialect import SPARK
from engine.engines.sql.compiler import Compiled, compile_protocol, condition_groups, converted_value
from engine.language.model import Protocol

VIEWS = {t: f'"{t}"' for t in ("patients", "facts", "fact_codings", "fact_attrs")}


def _name(table: str) -> str:
    return table.strip('"')


def _replace_view(spark, table: str, df, cache: bool = False) -> None:
    name = _name(table)
    if spark.catalog.tableExists(name):
        spark.catalog.uncacheTable(name)
        spark.catalog.dropTempView(name)
    if cache:
        df = df.cache()
    df.createOrReplaceTempView(name)


def _ensure_tables(spark, protocol: Protocol, compiled: Compiled, shared=None) -> None:
    _replace_view(spark, compiled.vs_table, spark.createDataFrame(
        compiled.vs_rows, "vs STRING, system STRING, code STRING, any_system BOOLEAN"))
    if compiled.props_table:
        _replace_view(spark, compiled.props_table, spark.createDataFrame(
            compiled.props_rows, "vs STRING, system STRING, code STRING, col STRING, value STRING"))
    vsm = spark.sql(shared.protocol_sql(protocol, compiled.matched) if shared is not None else compiled.vsm_sql)
    _replace_view(spark, compiled.vsm_table, vsm, cache=True)
    rows = []
    if compiled.converted:
        names = ", ".join("'" + v.replace("'", "''") + "'" for v in compiled.converted)
        for r in spark.sql(f"SELECT DISTINCT vs, unit, raw FROM {compiled.vsm_table} WHERE vs IN ({names}) "
                           f"AND unit IS NOT NULL AND raw IS NOT NULL").collect():
            rows.append((r[0], r[1], float(r[2]), converted_value(r[2], r[1], protocol.valuesets[r[0]])))
    _replace_view(spark, compiled.conv_table, spark.createDataFrame(
        rows, "vs STRING, unit STRING, value DOUBLE, cv DOUBLE"))


def prepare(spark, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
            tables: dict[str, str] | None = None, keys: list[str] | None = None, shared=None,
            values: dict | None = None) -> Compiled:
    """Compile a protocol and make the tables its SQL reads. `shared`: the chunk's one matching pass for many
    protocols (create_shared), copied from instead of matching the facts again."""
    tables = tables or VIEWS
    ctx = Context.as_of(as_of, protocol.period, period_start)
    extra = spark.sql(f"SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1").count() > 0
    compiled = compile_protocol(protocol, ctx, tables, extra_codes=extra, keys=keys, dialect=SPARK, values=values)
    _ensure_tables(spark, protocol, compiled, shared)
    return compiled


def create_shared(spark, protocols: list[Protocol], as_of: dt.date, period_start: dt.date | None = None,
                  tables: dict[str, str] | None = None):
    """Match the facts in `tables` once to every value set of `protocols` (engine/engines/sql/shared_matches.py,
    as the DuckDB run does), cached now (outside any Scratch, which would free it); pass it to
    prepare(shared=...) for each of them and drop_shared() it after."""
    from engine.engines.sql import shared_matches

    tables = tables or VIEWS
    extra = spark.sql(f"SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1").count() > 0
    shared = shared_matches.plan(protocols, as_of, period_start, tables, extra, SPARK)
    _replace_view(spark, shared.vs_table, spark.createDataFrame(
        shared.vs_rows, "vs STRING, system STRING, code STRING, any_system BOOLEAN"))
    _replace_view(spark, shared.vsm_table, spark.sql(shared.sql), cache=True)
    spark.table(_name(shared.vsm_table)).count()  # computed once, here
    return shared


def drop_shared(spark, shared) -> None:
    for t in (shared.vsm_table, shared.vs_table):
        name = _name(t)
        if spark.catalog.tableExists(name):
            spark.catalog.uncacheTable(name)
            spark.catalog.dropTempView(name)


def run_parts(spark, compiled: Compiled, materialize: str = "shared"):
    """The compiled query as a DataFrame, its parts (CTEs) registered as temporary views one by one.

    Spark inlines every deterministic CTE at each place it is read, so one WITH query of ~130 CTEs became a
    plan of ~4,500 nodes and ran 150 s over 100 patients. Here a part read more than once (materialize=
    "shared"; "all": every part) is computed once and checkpointed (lineage cut: later plans read it as a
    leaf); the others stay views and are inlined where read."""
    import re

    names = [n for n, _ in compiled.ctes]
    later = [sql for _, sql in compiled.ctes[1:]] + [compiled.final]
    for i, (name, sql) in enumerate(compiled.ctes):
        df = spark.sql(sql)
        rest = " ".join(later[i:])
        reads = len(re.findall(rf"\b{re.escape(name)}\b", rest))
        if materialize == "all" or (materialize == "shared" and reads > 1):
            df = df.localCheckpoint(eager=True)
        df.createOrReplaceTempView(name)
    del names
    return spark.sql(compiled.final)


SMALL_QUERY = 40  # parts: below this, one WITH query (inlining copies little; one job instead of many)


def query(spark, compiled: Compiled, cols: list[str], materialize: str | None = None):
    """The compiled query's DataFrame with only `cols` (by name; names may hold any character)."""
    if materialize is None:
        materialize = "none" if len(compiled.ctes) < SMALL_QUERY else "shared"
    df = spark.sql(compiled.sql) if materialize == "none" else run_parts(spark, compiled, materialize)
    return df.select(*[df[f"`{c}`"] for c in cols])


class Scratch:
    """``with Scratch(spark):`` around one query (or one protocol's queries): on leaving, every RDD persisted
    inside the block (the matched facts, locally checkpointed parts) is unpersisted; what was persisted
    before the block is kept. Local checkpoints stay in the block manager for the session's life otherwise
    (a run over many protocols ran out of heap). Used here, by `episodes.fired_by_patient` and by `run`."""

    def __init__(self, spark):
        self.spark = spark

    def __enter__(self):
        self.before = set(self.spark.sparkContext._jsc.getPersistentRDDs().keys())
        return self

    def __exit__(self, *exc):
        for rdd_id, rdd in self.spark.sparkContext._jsc.getPersistentRDDs().items():
            if rdd_id not in self.before:
                rdd.unpersist(False)
        return False


def fired_by_patient(spark, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                     tables: dict[str, str] | None = None, groups: list | None = None,
                     out: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """nhs_number -> keys of the conditions that held (as the DuckDB engine's fired_by_patient), each condition
    group one query (`groups`: only these; `out`: added to). episodes.fired_by_patient takes the steps of every
    episode from one query over (patient, episode) rows instead, as the population run does."""
    out = {} if out is None else out
    for group in condition_groups(protocol) if groups is None else groups:
        with Scratch(spark):
            compiled = prepare(spark, protocol, as_of, period_start, tables, group)
            keys = compiled.conditions
            rows = query(spark, compiled, ["nhs_number"] + keys).collect()
            spark.catalog.uncacheTable(_name(compiled.vsm_table))
        for row in rows:
            out.setdefault(row[0], set()).update(k for k, v in zip(keys, row[1:]) if v)
    return out


def evaluated_by_patient(spark, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                         tables: dict[str, str] | None = None) -> dict[str, tuple[set[str], dict[str, float | None]]]:
    """nhs_number -> (keys of the conditions that held, the measure values; as the DuckDB engine's)."""
    out: dict[str, tuple[set[str], dict[str, float | None]]] = {}
    for group in condition_groups(protocol):
        with Scratch(spark):
            compiled = prepare(spark, protocol, as_of, period_start, tables, group)
            keys, vcols = compiled.conditions, compiled.value_columns()
            rows = query(spark, compiled, ["nhs_number"] + keys + vcols).collect()
            spark.catalog.uncacheTable(_name(compiled.vsm_table))
        for row in rows:
            fired, values = out.setdefault(row[0], (set(), {}))
            fired.update(k for k, v in zip(keys, row[1:1 + len(keys)]) if v)
            values.update(compiled.values_of(list(row[1 + len(keys):])))
    return out


def results_by_patient(spark, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                       tables: dict[str, str] | None = None) -> dict[str, tuple[set[str], dict[str, Any]]]:
    out: dict[str, tuple[set[str], dict[str, Any]]] = {}
    for group in condition_groups(protocol):
        with Scratch(spark):
            compiled = prepare(spark, protocol, as_of, period_start, tables, group)
            keys, names = compiled.conditions, list(compiled.fields)
            rows = query(spark, compiled, ["nhs_number"] + keys + names).collect()
            spark.catalog.uncacheTable(_name(compiled.vsm_table))
        for row in rows:
            flags, values = row[1:1 + len(keys)], row[1 + len(keys):]
            fired, summary = out.setdefault(row[0], (set(), {}))
            fired.update(k for k, v in zip(keys, flags) if v)
            summary.update(zip(names, values))
    return out


# ---- the per-patient adapter the spec suite uses (batched: one Spark job per protocol, not per patient) ----
_adapter: dict[str, Any] = {}


def _fingerprint(record) -> str:
    return hashlib.sha1(record.model_dump_json().encode()).hexdigest()


def precompute(records: list, protocol: Protocol, ctx: Context, master: str = "local[2]") -> None:
    """Run the engine once over many records; fired_for_record then answers from it for exactly these
    records (checked by a fingerprint of the record)."""
    from engine.engines.spark.session import get_session
    from engine.engines.spark.tables import load_records

    spark = get_session(master)
    load_records(spark, records)
    fired = evaluated_by_patient(spark, protocol, ctx.reference_date, ctx.period_start)
    _adapter.setdefault("pre", {})[(protocol.ruleset_name, ctx)] = (
        fired, {r.patient.nhs_number: _fingerprint(r) for r in records})


def fired_for_record(record, protocol: Protocol, ctx: Context) -> set[str]:
    return evaluated_for_record(record, protocol, ctx)[0]


def evaluated_for_record(record, protocol: Protocol, ctx: Context) -> tuple[set[str], dict[str, float | None]]:
    from engine.engines.spark.session import get_session
    from engine.engines.spark.tables import load_records

    if ctx.period_end != ctx.reference_date:
        raise NotImplementedError("spark engine: period end other than the reference date")
    pre = _adapter.get("pre", {}).get((protocol.ruleset_name, ctx))
    if pre is not None and record.patient.nhs_number in pre[0]:
        if pre[1].get(record.patient.nhs_number) == _fingerprint(record):
            fired, values = pre[0][record.patient.nhs_number]
            return set(fired), dict(values)
    spark = get_session()
    load_records(spark, [record])
    return evaluated_by_patient(spark, protocol, ctx.reference_date, ctx.period_start).get(
        record.patient.nhs_number, (set(), {}))
