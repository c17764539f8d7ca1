"""Audit over a population run's persisted results (engine/engines/duckdb/run.py's results file).

A measure by practice (or MDT / locality) is counted from the per-patient rows (`fired` lists and
`deceased`) with the same measure logic the run used for its own aggregates (engine/engines/sql/measures.py's measure_sql: every
population, denominator exceptions apart, episodes counted for a measure counted per episode), so an
audit can slice the stored run any way without evaluating again.
"""
from __future__ import annotations

from engine.engines.duckdb import batch
from engine.engines.sql.measures import measure_sql
from engine.language.model import Protocol

COLUMNS = ("initial_population", "denominator", "exclusions", "exceptions", "numerator", "cannot_determine")


def measure_by_practice(con, run: str, proto: Protocol, measure: str) -> list[dict]:
    """[{practice, initial_population, denominator, exclusions, exceptions, numerator, cannot_determine, rate,
    basis}] for one measure of one protocol in a run, from the per-patient rows of `con` (a connection to the
    results file). The rate is over the denominator less exclusions and exceptions (as
    engine.app.audit.Counts.rate); patients whose result cannot be determined (a declared codelist not supplied)
    are in `cannot_determine` only."""
    parts = {ms.measure: ms for ms in measure_sql(proto, lambda key: f"list_contains(fired, {batch.lit(key)})")}
    if measure not in parts:
        raise KeyError(f"{proto.key} has no measure {measure!r} (it has {', '.join(sorted(parts)) or 'none'})")
    ms = parts[measure]
    sums = ", ".join(f"CAST(coalesce(sum({ms.counts[c]}), 0) AS BIGINT)" for c in COLUMNS)
    rows = con.execute(f"SELECT practice, {sums} FROM fired WHERE run = ? AND protocol = ? AND version = ? "
                       f"GROUP BY practice ORDER BY practice", [run, proto.id, proto.version]).fetchall()
    out = []
    for practice, *counts in rows:
        c = dict(zip(COLUMNS, (int(x) for x in counts)))
        eligible = c["denominator"] - c["exclusions"] - c["exceptions"]
        out.append({"practice": practice, **c, "rate": round(c["numerator"] / eligible, 4) if eligible > 0 else None,
                    "basis": ms.basis})
    return out
