"""Batch engine: a protocol's intermediate form compiled to DuckDB SQL over a whole population.

The SQL is written by the compiler the SQL engines share (engine/engines/sql/compiler.py, DuckDB's dialect
is its default; what each IR node becomes is described there). This module runs it on DuckDB: `prepare()`
makes the three temporary tables the query reads (the value sets' codes; the facts matched to value sets
in one pass over the facts; unit conversions computed by units.converter), then the query runs. Outputs
are identical to the per-patient engines by construction and by test (tests/spec/test_batch_equivalence.py
and the shared spec suite).
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from engine.engines.derive import Context
from engine.engines.sql import episodes
from engine.engines.sql.compiler import carried_columns, matches_sql
from engine.engines.sql.records import TABLES
from engine.engines.sql.compiler import (  # noqa: F401  (re-exported: the names this module has always offered)
    DUCKDB, ORDINAL_EPOCH, ROW_COLS, S_COLS, Compiled, Compiler, Dialect, _Joins, _attr_match, _cond_sql,
    _func_sql, _interval, _sub_lowered, _text_match, age_sql, compile_protocol, condition_groups,
    converted_value, default_tables, ident, lit, lowered_for,
)
from engine.language.model import Protocol


def connect(database: str = ":memory:", threads: int | None = None, memory_limit: str | None = None):
    import duckdb

    con = duckdb.connect(database)
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con


def _insert(con, table: str, rows: list[tuple], types: list[str]) -> None:
    """Bulk-insert rows (no numpy / pandas needed): small lists as VALUES, large ones through a CSV file."""
    if not rows:
        return
    if len(rows) <= 200:
        values = ", ".join("(" + ", ".join(lit(x) for x in r) + ")" for r in rows)
        con.execute(f"INSERT INTO {table} VALUES {values}")
        return
    import csv
    import os
    import tempfile

    fd, path = tempfile.mkstemp(suffix=".csv", prefix="carepath-batch-")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerows([["\\N" if x is None else repr(x) if isinstance(x, float) else x for x in r] for r in rows])
        cols = ", ".join(f"'c{i}': '{t}'" for i, t in enumerate(types))
        con.execute(f"INSERT INTO {table} SELECT * FROM read_csv('{path}', header=false, columns={{{cols}}}, "
                    f"nullstr='\\N', allow_quoted_nulls=false, quote='\"', escape='\"', delim=',', auto_detect=false)")
    finally:
        os.unlink(path)


def _exists(con, table: str) -> bool:
    name = table.strip('"')
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])


def _matched_table(con, table: str, sql: str) -> None:
    """The facts matched to value sets (`sql`, a matching pass) as a temporary table stored by value set: the
    query reads it one value set at a time (`WHERE m.vs = '<name>'`, twice per event list), and stored in the
    facts' order each of those reads scans every row; stored by value set, a read takes only the row groups
    whose min/max `vs` can match. P5 at 50,000 people (docs/population.md): the sort costs ~0.3 CPU s more in
    prepare and saves ~0.6 in the query. No query depends on row order."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM ({sql}) ORDER BY vs")


def _ensure_tables(con, protocol: Protocol, compiled: Compiled, tables: dict[str, str], shared=None,
                   direct: bool = False) -> None:
    """The value-set codes table; the facts matched to value sets (one pass over the facts); and the
    unit-conversion table: every distinct (unit, value) of the facts in a value set that declares a unit,
    converted in Python by units.converter exactly as the per-patient deriver does (so the two engines
    cannot differ by a float rounding)."""
    if not _exists(con, compiled.vs_table):  # a protocol's codes never change (its name carries its hash)
        con.execute(f"CREATE TEMP TABLE {compiled.vs_table} (vs VARCHAR, system VARCHAR, code VARCHAR, any_system BOOLEAN)")
        _insert(con, compiled.vs_table, compiled.vs_rows, ["VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN"])
    else:  # a query over some of the protocol's conditions (condition_groups) may need value sets not yet loaded
        have = {r[0] for r in con.execute(f"SELECT DISTINCT vs FROM {compiled.vs_table}").fetchall()}
        _insert(con, compiled.vs_table, [r for r in compiled.vs_rows if r[0] not in have],
                ["VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN"])
    if compiled.props_table and not _exists(con, compiled.props_table):
        con.execute(f"CREATE TEMP TABLE {compiled.props_table} (vs VARCHAR, system VARCHAR, code VARCHAR, col VARCHAR, "
                    f"value VARCHAR)")
        _insert(con, compiled.props_table, compiled.props_rows, ["VARCHAR"] * 5)
    matched = compiled.vsm_table
    if direct:  # the query reads the shared pass itself (prepare): its value sets' rows, under their names
        matched = f"({shared.protocol_sql(protocol, compiled.converted)})"
    elif shared is not None:  # copied from the shared pass, in its order (by value set: create_shared)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {compiled.vsm_table} AS {shared.protocol_sql(protocol, compiled.matched)}")
    else:
        _matched_table(con, compiled.vsm_table, compiled.vsm_sql)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {compiled.conv_table} (vs VARCHAR, unit VARCHAR, value DOUBLE, cv DOUBLE)")
    if not compiled.converted:
        return
    names = ", ".join(lit(v) for v in compiled.converted)
    rows = con.execute(f"SELECT DISTINCT vs, unit, raw FROM {matched} WHERE vs IN ({names}) "
                       f"AND unit IS NOT NULL AND raw IS NOT NULL").fetchall()
    out = []
    for vs_name, unit, value in rows:
        out.append((vs_name, unit, value, converted_value(value, unit, protocol.valuesets[vs_name])))
    _insert(con, compiled.conv_table, out, ["VARCHAR", "VARCHAR", "DOUBLE", "DOUBLE"])


def prepare(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
            tables: dict[str, str] | None = None, keys: list[str] | None = None, shared=None,
            values: dict | None = None) -> Compiled:
    """Compile a protocol for the data behind `con` and create the temporary tables its SQL reads
    (value-set codes, matched facts, unit conversions); returns the compiled SQL. `values`: extra value
    columns (compiler.compile_protocol). `shared`: the chunk's one matching pass for many protocols
    (create_shared), read by the query itself (stored by value set, a read of one value set takes only its row
    groups; no copy of the protocol's rows is written, docs/population.md) instead of matching the facts again;
    another `shared` (episodes.CopiedMatches, ...) is copied from."""
    tables = tables or default_tables()
    ctx = Context.as_of(as_of, protocol.period, period_start)
    extra = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1)").fetchone()[0]
    direct = shared.read_directly(protocol) if hasattr(shared, "read_directly") else None
    compiled = compile_protocol(protocol, ctx, tables, extra_codes=bool(extra), keys=keys, values=values,
                                matched_from=direct)
    _ensure_tables(con, protocol, compiled, tables, shared, direct is not None)
    return compiled


def create_shared(con, protocols: list[Protocol], as_of: dt.date, period_start: dt.date | None = None,
                  tables: dict[str, str] | None = None):
    """Match the facts in `tables` once to every value set of `protocols` (engine/engines/sql/shared_matches.py);
    pass the result to prepare(shared=...) / fired_by_patient(shared=...) for each of them."""
    from engine.engines.sql import shared_matches

    tables = tables or default_tables()
    extra = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1)").fetchone()[0]
    shared = shared_matches.plan(protocols, as_of, period_start, tables, bool(extra))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {shared.vs_table} (vs VARCHAR, system VARCHAR, code VARCHAR, any_system BOOLEAN)")
    _insert(con, shared.vs_table, shared.vs_rows, ["VARCHAR", "VARCHAR", "VARCHAR", "BOOLEAN"])
    # each protocol's copy (shared.protocol_sql, in prepare) then reads only the row groups whose min/max `vs`
    # can hold its lists (per 25,000 people: the sort +0.5-0.6 CPU s and +145 MiB peak, the copies -1.1 to -1.4 CPU s)
    _matched_table(con, shared.vsm_table, shared.sql)
    return shared


def drop_shared(con, shared) -> None:
    for t in (shared.vsm_table, shared.vs_table):
        con.execute(f"DROP TABLE IF EXISTS {t}")


def evaluate_population(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                        tables: dict[str, str] | None = None):
    """A DuckDB relation: pid, nhs_number, one boolean column per condition key, then the summary fields
    (named and valued exactly as lowering.summary_fact: dates as day numbers, `<f>__p` presence flags)."""
    return con.sql(prepare(con, protocol, as_of, period_start, tables).sql)


def results_by_patient(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                       tables: dict[str, str] | None = None, shared=None) -> dict[str, tuple[set[str], dict[str, Any]]]:
    """nhs_number -> (keys of the conditions that held, the summary fact), from one query (one per group
    of conditions_groups)."""
    out: dict[str, tuple[set[str], dict[str, Any]]] = {}
    for group in condition_groups(protocol):
        compiled = prepare(con, protocol, as_of, period_start, tables, group, shared)
        keys, names = compiled.conditions, list(compiled.fields)
        cols = ", ".join(ident(k) for k in keys + names)
        for row in con.execute(f"SELECT nhs_number{', ' if cols else ''}{cols} FROM ({compiled.sql})").fetchall():
            flags, values = row[1:1 + len(keys)], row[1 + len(keys):]
            fired, summary = out.setdefault(row[0], (set(), {}))
            fired.update(k for k, v in zip(keys, flags) if v)
            summary.update(zip(names, values))
    return out


def episode_table(con, proto: Protocol, as_of: dt.date, period_start: dt.date | None,
                  tables: dict[str, str], shared=None) -> tuple[str, list[str], set[str]] | None:
    """Evaluate every `#k` condition of `proto` (its measures counted per episode) into a temporary table
    (pid, nhs_number, one boolean column per `#k` key, as the per-episode queries give them). Returns
    (its name, the keys, the temporary tables to drop after), or None when the protocol has no episode steps
    compiled this way (engine.engines.sql.episodes.plan)."""
    p = episodes.plan(proto)
    if p is None:
        return None
    ctx = Context.as_of(as_of, proto.period, period_start)
    tag = "ep_" + hashlib.sha1(proto.ruleset_name.encode()).hexdigest()[:12]
    slots, out = ident(f"{tag}_slots"), ident(f"{tag}_rows")
    counted = prepare(con, proto, as_of, period_start, tables, keys=[], shared=shared, values=p.count_values())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {slots} AS {episodes.slots_sql(p, counted.sql)}")
    copied = {t: ident(f"{tag}_{t}") for t in TABLES}
    extra = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1)").fetchone()[0]
    compiled = compile_protocol(proto, ctx, copied, extra_codes=bool(extra), keys=p.keys, episode_sets=frozenset(p.sets))
    if shared is not None:
        real = shared.protocol_sql
    else:  # the protocol's own pass over the chunk's facts (the codes table is made first by _ensure_tables)
        def real(protocol, names):
            return matches_sql(protocol.valuesets, names, compiled.vs_table, tables, ctx.reference_date, DUCKDB,
                               bool(extra), carried_columns(protocol))
    _ensure_tables(con, proto, compiled, copied, episodes.CopiedMatches(real, slots))
    for t in TABLES:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {copied[t]} AS "
                    f"{episodes.table_sql(t, tables[t], slots, compiled.vsm_table)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {episodes.per_patient_sql(p, compiled.sql, slots)}")
    keys = [k for ks in p.out.values() for k in ks]
    return out, keys, {slots, compiled.vsm_table, out, *copied.values()}


def _episode_fired(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None, tables, shared,
                   out: dict) -> list:
    """The conditions of every episode (keys `#k`) from one query over (patient, episode) rows
    (episode_table) added to `out` (nhs_number -> (fired keys, ...)); returns the condition
    groups left to run (all of them when the protocol has no episode steps compiled that way)."""
    groups = condition_groups(protocol)
    got = episode_table(con, protocol, as_of, period_start, tables or default_tables(), shared)
    if got is None:
        return groups
    table, keys, drop = got
    for row in con.execute(f"SELECT nhs_number, {', '.join(ident(k) for k in keys)} FROM {table}").fetchall():
        out.setdefault(row[0], (set(), {}))[0].update(k for k, v in zip(keys, row[1:]) if v)
    for t in drop:
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return [g for g in groups if not any("#" in k for k in g)]


def fired_by_patient(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                     tables: dict[str, str] | None = None, shared=None) -> dict[str, set[str]]:
    """nhs_number -> keys of the conditions that held (as evaluator.fired_conditions returns them)."""
    pairs: dict[str, tuple[set[str], dict]] = {}
    groups = _episode_fired(con, protocol, as_of, period_start, tables, shared, pairs)
    out: dict[str, set[str]] = {k: v[0] for k, v in pairs.items()}
    for group in groups:
        compiled = prepare(con, protocol, as_of, period_start, tables, group, shared)
        keys = compiled.conditions
        cols = ", ".join(ident(k) for k in keys)
        for row in con.execute(f"SELECT nhs_number{', ' if cols else ''}{cols} FROM ({compiled.sql})").fetchall():
            out.setdefault(row[0], set()).update(k for k, v in zip(keys, row[1:]) if v)
    return out


def evaluated_by_patient(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                         tables: dict[str, str] | None = None) -> dict[str, tuple[set[str], dict[str, float | None]]]:
    """nhs_number -> (keys of the conditions that held, the measure values `measure:<id>:value` as the SQL
    computed them; None where missing)."""
    out: dict[str, tuple[set[str], dict[str, float | None]]] = {}
    for group in _episode_fired(con, protocol, as_of, period_start, tables, None, out):
        compiled = prepare(con, protocol, as_of, period_start, tables, group)
        keys, vcols = compiled.conditions, compiled.value_columns()
        cols = ", ".join(ident(k) for k in keys + vcols)
        for row in con.execute(f"SELECT nhs_number{', ' if cols else ''}{cols} FROM ({compiled.sql})").fetchall():
            fired, values = out.setdefault(row[0], (set(), {}))
            fired.update(k for k, v in zip(keys, row[1:1 + len(keys)]) if v)
            values.update(compiled.values_of(row[1 + len(keys):]))
    return out


def summaries_by_patient(con, protocol: Protocol, as_of: dt.date, period_start: dt.date | None = None,
                         tables: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """nhs_number -> the summary fact (the dict lowering.summary_fact builds), for cross-engine checks."""
    return {k: v[1] for k, v in results_by_patient(con, protocol, as_of, period_start, tables).items()}


_adapter: dict[str, Any] = {}


def fired_for_record(record, protocol: Protocol, ctx: Context) -> set[str]:
    """The batch engine run over one patient (the adapter the shared spec suite uses)."""
    return evaluated_for_record(record, protocol, ctx)[0]


def evaluated_for_record(record, protocol: Protocol, ctx: Context) -> tuple[set[str], dict[str, float | None]]:
    """The batch engine run over one patient: (condition keys that held, measure values)."""
    from engine.engines.duckdb.columnar import load_records

    if ctx.period_end != ctx.reference_date:
        raise NotImplementedError("batch engine: period end other than the reference date")
    pre = _adapter.get("pre", {}).get((protocol.ruleset_name, ctx))
    if pre is not None and record.patient.nhs_number in pre[0]:
        (fired, values), fp = pre[0][record.patient.nhs_number], pre[1].get(record.patient.nhs_number)
        if fp == _fingerprint(record):
            return set(fired), dict(values)
    con = _adapter.get("con")
    if con is None:
        con = _adapter["con"] = connect(threads=1)
    load_records(con, [record])
    fired, values = evaluated_by_patient(con, protocol, ctx.reference_date, ctx.period_start).get(
        record.patient.nhs_number, (set(), {}))
    return fired, values


def _fingerprint(record) -> str:
    return hashlib.sha1(record.model_dump_json().encode()).hexdigest()


def precompute(records: list, protocol: Protocol, ctx: Context) -> None:
    """Run the population engine once over many records (e.g. a whole conformance kit: one query per
    condition group for all its patients, not one per patient); fired_for_record then answers from it
    for exactly these records (checked by a fingerprint of the record)."""
    from engine.engines.duckdb.columnar import load_records

    con = connect(threads=2)
    try:
        load_records(con, records)
        fired = evaluated_by_patient(con, protocol, ctx.reference_date, ctx.period_start)
    finally:
        con.close()
    _adapter.setdefault("pre", {})[(protocol.ruleset_name, ctx)] = (
        fired, {r.patient.nhs_number: _fingerprint(r) for r in records})
