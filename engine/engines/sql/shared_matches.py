"""One value-set matching pass per chunk for many protocols (issue 18 item 4).

Each compiled protocol reads its facts through one table: every fact matched to each of the protocol's value
sets (compiler.matches_sql, the "vsm" table `prepare()` makes). A population run evaluates ten or more
protocols over the same chunk, and each one matched the chunk's facts to its value sets again — the same
codelists many times over (every version of a pathway, and the lists pathways share). Here the chunk's facts
are matched once to the union of every protocol's value sets, each value set named by a content id (a hash
of its codes, code-system rule and kinds: two protocols' `hba1c` lists are one list when their codes are
the same, two when they differ, whatever their names). A protocol's own matched table is then a copy of its
value sets' rows under its own names (`protocol_sql`): a hash join on a small list, not a join of every
fact with every code.

The rows are the ones the protocol's own pass would make (the same SQL, compiler.matches_sql, over the same
facts, with ids for names), so results are identical: tests/spec/test_shared_matches.py checks it for every
protocol version in the library on the generator's population, and the population-run tests run through it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field

from engine.engines.sql.compiler import (DUCKDB, FACT_COLUMNS, Dialect, carried_columns, compile_protocol,
                                        condition_groups, ident, lit, matches_sql, valueset_rows)
from engine.engines.derive import Context
from engine.language.model import Protocol

VS_TABLE = ident("shared_vs_codes")
VSM_TABLE = ident("shared_vsm")
VSM_COLUMNS = "pid, seq, ord, day, ts, fid, raw, unit, end_day, end_ts"


def valueset_id(vs) -> str:
    """A value set's content id: equal ids match exactly the same facts."""
    key = repr((sorted(vs.codes), bool(vs.any_system), sorted(vs.kinds), bool(vs.any_code)))
    return "v" + hashlib.sha1(key.encode()).hexdigest()[:16]


@dataclass
class SharedMatches:
    """The shared pass for one chunk: create `vs_table` from `vs_rows`, then `vsm_table` AS `sql`."""
    reference_date: dt.date
    sql: str
    vs_rows: list[tuple]  # (id, system, code, any_system)
    vs_table: str = VS_TABLE
    vsm_table: str = VSM_TABLE
    ids: dict[str, dict[str, str]] = field(default_factory=dict)  # ruleset_name -> {value set name: id}

    def read_directly(self, protocol: Protocol) -> tuple[str, dict[str, str]] | None:
        """(this pass's table, the protocol's {value set: id}), for a query reading its value sets' rows from
        the shared table itself (compile_protocol(matched_from=...)) instead of a copy (protocol_sql); None
        when the protocol was left out of the pass."""
        ids = self.ids.get(protocol.ruleset_name)
        return None if ids is None else (self.vsm_table, ids)

    def protocol_sql(self, protocol: Protocol, names: list[str]) -> str:
        """A protocol's matched table (columns and rows of its own pass) for its value sets `names`."""
        ids = self.ids[protocol.ruleset_name]
        cols = ", ".join("m." + c for c in VSM_COLUMNS.split(", ") + list(carried_columns(protocol)))
        if not names:
            return f"SELECT m.vs, {cols} FROM {self.vsm_table} m WHERE FALSE"
        values = ", ".join(f"({lit(n)}, {lit(ids[n])})" for n in names)
        return (f"SELECT n.name AS vs, {cols} FROM {self.vsm_table} m "
                f"JOIN (VALUES {values}) AS n(name, id) ON m.vs = n.id")


def matched_valuesets(protocol: Protocol, ctx: Context, tables: dict[str, str], extra_codes: bool,
                      dialect: Dialect) -> set[str]:
    """The value sets a protocol's queries read as events (every condition group)."""
    names: set[str] = set()
    for group in condition_groups(protocol):
        names |= set(compile_protocol(protocol, ctx, tables, extra_codes=extra_codes, keys=group,
                                      dialect=dialect).matched)
    return names


def plan(protocols: list[Protocol], as_of: dt.date, period_start: dt.date | None, tables: dict[str, str],
         extra_codes: bool, dialect: Dialect = DUCKDB) -> SharedMatches:
    """The shared pass for `protocols` over the chunk in `tables` (all evaluated as of `as_of`)."""
    by_id: dict[str, object] = {}
    ids: dict[str, dict[str, str]] = {}
    carry: set[str] = set()  # the facts' columns any of the protocols' `where` tests read (compiler.carried_columns)
    ref = None
    for proto in protocols:
        ctx = Context.as_of(as_of, proto.period, period_start)
        if ref is not None and ctx.reference_date != ref:
            raise ValueError("one shared matching pass needs one reference date")
        ref = ctx.reference_date
        try:
            names = matched_valuesets(proto, ctx, tables, extra_codes, dialect)
        except NotImplementedError:  # not compilable: left out here, reported when the protocol itself runs
            continue
        carry |= set(carried_columns(proto))
        mine = ids.setdefault(proto.ruleset_name, {})
        for name in sorted(names):
            vs = proto.valuesets[name]
            mine[name] = vid = valueset_id(vs)
            by_id.setdefault(vid, vs)
    rows = [r for vid in sorted(by_id) for r in valueset_rows(vid, by_id[vid])]
    sql = matches_sql(by_id, sorted(by_id), VS_TABLE, tables, ref or as_of, dialect, extra_codes,
                      tuple(c for c in FACT_COLUMNS.values() if c in carry))
    return SharedMatches(ref or as_of, sql, rows, ids=ids)
