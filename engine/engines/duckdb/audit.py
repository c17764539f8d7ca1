"""Audit over a population run's persisted results (engine/engines/duckdb/run.py's results file).

A measure by practice (or MDT / locality) is counted from the per-patient rows (`fired` lists and
`deceased`) with the same measure logic the run used for its own aggregates (run._measure_sql), so an
audit can slice the stored run any way without evaluating again.
"""
from __future__ import annotations

from engine.engines.duckdb import batch
from engine.engines.duckdb.run import _measure_sql
from engine.language.model import Protocol



def measure_by_practice(con, run: str, proto: Protocol, measure: str) -> list[dict]:
    """[{practice, denominator, exclusions, numerator, rate}] for one measure of one protocol in a run,
    from the per-patient rows of `con` (a connection to the results file)."""
    parts = {m: (ip, den, excl, num) for m, ip, den, excl, num in
             _measure_sql(proto, lambda key: f"list_contains(fired, {batch.lit(key)})")}
    if measure not in parts:
        raise KeyError(f"{proto.key} has no measure {measure!r} (it has {', '.join(sorted(parts)) or 'none'})")
    _ip, den, excl, num = parts[measure]
    rows = con.execute(f"SELECT practice, count(*) FILTER (WHERE {den}), count(*) FILTER (WHERE {excl}), "
                       f"count(*) FILTER (WHERE {num}) FROM fired WHERE run = ? AND protocol = ? AND version = ? "
                       f"GROUP BY practice ORDER BY practice", [run, proto.id, proto.version]).fetchall()
    return [{"practice": p, "denominator": int(d), "exclusions": int(e), "numerator": int(n),
             "rate": round(n / (d - e), 4) if d - e else None} for p, d, e, n in rows]
