"""DuckDB: a protocol's measures counted per episode in one query over (patient, episode) rows
(engine/engines/sql/episodes.py says how), instead of one query per episode."""
from __future__ import annotations

import datetime as dt
import hashlib

from engine.engines.derive import Context
from engine.engines.duckdb import batch
from engine.engines.sql import episodes
from engine.engines.sql.compiler import DUCKDB, compile_protocol, ident, matches_sql
from engine.engines.sql.records import TABLES
from engine.language.model import Protocol


class _Copied:
    """prepare()'s `shared` role: the protocol's matched facts, copied per (patient, episode) row."""

    def __init__(self, real_sql, slots: str):
        self.real_sql, self.slots = real_sql, slots

    def protocol_sql(self, protocol: Protocol, names: list[str]) -> str:
        return episodes.vsm_sql(self.real_sql(protocol, names), self.slots)


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
    counted = batch.prepare(con, proto, as_of, period_start, tables, keys=[], shared=shared, values=p.count_values())
    con.execute(f"CREATE OR REPLACE TEMP TABLE {slots} AS {episodes.slots_sql(p, counted.sql)}")
    copied = {t: ident(f"{tag}_{t}") for t in TABLES}
    extra = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {tables['fact_codings']} WHERE role = 'code' LIMIT 1)").fetchone()[0]
    compiled = compile_protocol(proto, ctx, copied, extra_codes=bool(extra), keys=p.keys, episode_sets=frozenset(p.sets))
    if shared is not None:
        real = shared.protocol_sql
    else:  # the protocol's own pass over the chunk's facts (the codes table is made first by _ensure_tables)
        def real(protocol, names):
            return matches_sql(protocol.valuesets, names, compiled.vs_table, tables, ctx.reference_date, DUCKDB,
                               bool(extra))
    batch._ensure_tables(con, proto, compiled, copied, _Copied(real, slots))
    for t in TABLES:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {copied[t]} AS "
                    f"{episodes.table_sql(t, tables[t], slots, compiled.vsm_table)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {episodes.per_patient_sql(p, compiled.sql, slots)}")
    keys = [k for ks in p.out.values() for k in ks]
    return out, keys, {slots, compiled.vsm_table, out, *copied.values()}
