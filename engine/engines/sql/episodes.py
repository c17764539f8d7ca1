"""Measures counted per episode in one query over (patient, episode) rows, for the SQL engines (issue 18).

The loader writes a measure counted per episode as its steps once per episode (keys `measure:<id>:<step>#k`,
k = 1 .. episodes_at_most, each with `episode` the k-th event of the measure's `episodes:` list). Compiled
as they are, that is one query per episode (compiler.condition_groups): CMS22's twelve were ~75 % of a
population run's query time. Here the steps of episode 1 are compiled once over a table of rows that are
each one (patient, episode): row pid = patient pid * EPISODE_SLOTS + k, with every column of the patient and
of the facts the steps read copied per row, and the episode pick taking each row's own k-th event
(compiler.EPISODE_INDEX). Row k = 0 has no episode: it answers for every episode the patient does not have
(a step like `denominator: age >= 18` holds there too, as it does in the per-episode queries). The result is
turned back to one row per patient with the `#k` columns the per-episode queries give:

    #k = the row (patient, k) when the patient has it (k <= their episodes, at most episodes_at_most), else row 0

so everything after (fired lists, measures) is unchanged. The SQL is portable (both dialects); the engines run
it (engine/engines/duckdb/batch.py episode_table, engine/engines/spark/episodes.py). Equal by test: tests/spec/test_episode_rows.py (against the
per-episode queries and the per-patient engine), the population-run and eCQM conformance tests.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.engines.sql.compiler import EPISODE_SLOTS, carried_columns, ident, lowered_for
from engine.engines.sql.records import SCHEMA
from engine.engines.sql.shared_matches import VSM_COLUMNS
from engine.ir import nodes as ir
from engine.language.model import Protocol

COUNT_PREFIX = "episodes_"  # the count query's value columns: expr:episodes_<i>, one per measure


@dataclass(frozen=True)
class EpisodePlan:
    sets: tuple  # each episode measure's list of events (unwrapped)
    at_most: tuple  # each one's episodes_at_most
    keys: list[str]  # the `#1` condition keys, compiled once over (patient, episode) rows
    out: dict[str, list[str]]  # `#1` key -> its `#k` keys (k = 1 .. that measure's episodes_at_most)

    def count_values(self) -> dict[str, ir.Node]:
        """The number of episodes of each measure per patient (compile_protocol values=)."""
        return {f"{COUNT_PREFIX}{i}": ir.Count(s) for i, s in enumerate(self.sets)}

    def slots(self) -> int:
        return max(self.at_most)


def plan(proto: Protocol) -> EpisodePlan | None:
    """How `proto`'s episode steps are compiled over (patient, episode) rows; None when it has none (or they
    cannot be: then the per-episode queries of compiler.condition_groups are used)."""
    conds = list(lowered_for(proto).conditions)
    if not any("#" in k for k in conds):
        return None
    sets, at_most, keys, out = [], [], [], {}
    everything = {**proto.undetermined_conditions, **proto.conditions}
    for m in proto.measures:
        if not m.episode_based:
            continue
        over = everything.get(f"measure:{m.id}:episodes_over")
        if not isinstance(over, ir.Compare) or not isinstance(ir.unwrap(over.left), ir.Count):
            return None
        sets.append(ir.unwrap(ir.unwrap(over.left).source))
        at_most.append(m.episodes_at_most)
        for k in conds:
            if k.startswith(f"measure:{m.id}:") and k.endswith("#1"):
                base = k[:-2]
                keys.append(k)
                out[k] = [f"{base}#{j}" for j in range(1, m.episodes_at_most + 1) if f"{base}#{j}" in conds]
    if not sets or max(at_most) >= EPISODE_SLOTS:
        return None
    if {x for ks in out.values() for x in ks} != {k for k in conds if "#" in k}:
        return None  # a `#k` key this plan would not give back
    return EpisodePlan(tuple(sets), tuple(at_most), keys, out)


def slots_sql(p: EpisodePlan, counts_sql: str) -> str:
    """(pid, k, vpid): the (patient, episode) rows, k = 0 .. the patient's episodes (at most episodes_at_most,
    the most over the protocol's episode measures); `counts_sql` has pid and the count_values() columns."""
    n = [f"least({ident('expr:' + COUNT_PREFIX + str(i))}, {a})" for i, a in enumerate(p.at_most)]
    most = n[0] if len(n) == 1 else f"greatest({', '.join(n)})"
    ks = ", ".join(f"({k})" for k in range(p.slots() + 1))
    return (f"SELECT c.pid, s.k, CAST(c.pid AS BIGINT) * {EPISODE_SLOTS} + s.k AS vpid "
            f"FROM ({counts_sql}) c JOIN (VALUES {ks}) AS s(k) ON s.k <= {most}")


def vsm_sql(real_sql: str, slots: str, carry: tuple[str, ...] = ()) -> str:
    """A protocol's matched facts (rows of `real_sql`, compiler.matches_sql's columns, with the facts' columns
    `carry` of compiler.carried_columns) copied per row."""
    cols = ", ".join("e.vpid AS pid" if c == "pid" else f"m.{c}" for c in VSM_COLUMNS.split(", ") + list(carry))
    return f"SELECT m.vs, {cols} FROM ({real_sql}) m JOIN {slots} e ON e.pid = m.pid"


def table_sql(table: str, real: str, slots: str, matched: str | None = None) -> str:
    """One of the four tables copied per row. For the fact tables, only the facts in `matched` (the copied
    matched facts: every fact the compiled steps read is one of them, looked up by (pid, seq))."""
    cols = ", ".join("e.vpid AS pid" if c == "pid" else f"t.{ident(c)}" for c in SCHEMA[table])
    if matched is None or table == "patients":
        return f"SELECT {cols} FROM {real} t JOIN {slots} e ON e.pid = t.pid"
    return (f"SELECT {cols} FROM (SELECT DISTINCT pid, seq FROM {matched}) k JOIN {slots} e ON e.vpid = k.pid "
            f"JOIN {real} t ON t.pid = e.pid AND t.seq = k.seq")


def per_patient_sql(p: EpisodePlan, query: str, slots: str) -> str:
    """The (patient, episode) query's `#1` columns back to one row per patient with every `#k` column."""
    cols = []
    for k1, outs in p.out.items():
        c = f"q.{ident(k1)}"
        none = f"bool_or(CASE WHEN e.k = 0 THEN {c} END)"
        for key in outs:
            j = int(key.rsplit("#", 1)[1])
            cols.append(f"coalesce(bool_or(CASE WHEN e.k = {j} THEN {c} END), {none}) AS {ident(key)}")
    return (f"SELECT e.pid, max(q.nhs_number) AS nhs_number, {', '.join(cols)} "
            f"FROM ({query}) q JOIN {slots} e ON e.vpid = q.pid GROUP BY e.pid")


class CopiedMatches:
    """The `shared` role of the engines' prepare(): a protocol's matched facts copied per (patient, episode) row.
    `real_sql(protocol, names)` is the SQL of its matched facts on the chunk's own rows."""

    def __init__(self, real_sql, slots: str):
        self.real_sql, self.slots = real_sql, slots

    def protocol_sql(self, protocol: Protocol, names: list[str]) -> str:
        return vsm_sql(self.real_sql(protocol, names), self.slots, carried_columns(protocol))
