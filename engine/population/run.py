"""Population evaluation: every protocol in force, over a whole population, with the batch engine.

    carepath generate --patients 750000 --seed 1 --out var/population
    carepath evaluate-population --data var/population --as-of 2026-03-31 [--workers 2]

Input: a population folder (`<table>/*.parquet` as written by engine/population/generate.py, or
`<table>.parquet`, or a `population.duckdb`). Output: a DuckDB results file (default `<data>/results.duckdb`):

    runs            run, as_of, period_start, started, finished
    run_protocols   run, protocol, version, patients, seconds, finished    <- one row per protocol done
    fired           run, protocol, version, nhs_number, practice, fired     (condition keys that held)
    measures        run, protocol, version, measure, practice, mdt, locality,
                    initial_population, denominator, exclusions, numerator   (evaluator._measure's logic)
    registers       run, protocol, version, practice, patients

Resumable: a run id names a run; evaluating again with the same id skips the protocols that
finished and redoes any that did not (their partial rows are deleted first).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

from engine.evaluate import batch
from engine.evaluate.derive import Context
from engine.population.columnar import has_population, load_parquet
from engine.protocols.model import Protocol


def open_population(data: Path, threads: int | None = None, memory_limit: str | None = None):
    """A DuckDB connection with the population's four tables (views over Parquet, or a DuckDB file)."""
    data = Path(data)
    if data.suffix == ".duckdb" or (data / "population.duckdb").exists():
        path = data if data.suffix == ".duckdb" else data / "population.duckdb"
        con = batch.connect(str(path), threads=threads, memory_limit=memory_limit)
        return con
    if not data.is_dir() or not has_population(data):
        raise FileNotFoundError(f"{data}: no population here (expected facts.parquet etc. from `carepath generate`)")
    con = batch.connect(threads=threads, memory_limit=memory_limit)
    load_parquet(con, data)
    return con


def run_id_for(as_of: dt.date, period_start: dt.date | None, protocols: list[Protocol]) -> str:
    h = hashlib.sha1("|".join([as_of.isoformat(), str(period_start)] + sorted(p.ruleset_name for p in protocols)).encode())
    return f"{as_of.isoformat()}-{h.hexdigest()[:8]}"


SCHEMA = """
CREATE TABLE IF NOT EXISTS res.runs (run VARCHAR PRIMARY KEY, as_of DATE, period_start DATE, started TIMESTAMP, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS res.run_protocols (run VARCHAR, protocol VARCHAR, version VARCHAR, patients BIGINT,
    seconds DOUBLE, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS res.fired (run VARCHAR, protocol VARCHAR, version VARCHAR, nhs_number VARCHAR,
    practice VARCHAR, fired VARCHAR[]);
CREATE TABLE IF NOT EXISTS res.measures (run VARCHAR, protocol VARCHAR, version VARCHAR, measure VARCHAR,
    practice VARCHAR, mdt VARCHAR, locality VARCHAR, initial_population BIGINT, denominator BIGINT, exclusions BIGINT,
    numerator BIGINT);
CREATE TABLE IF NOT EXISTS res.registers (run VARCHAR, protocol VARCHAR, version VARCHAR, practice VARCHAR, patients BIGINT);
"""


def _measure_sql(proto: Protocol) -> list[tuple[str, str, str, str, str]]:
    """(measure, ip, den, excl, num) SQL per measure over the fired columns, as evaluator._measure decides
    (deceased patients count nowhere)."""
    conds = set(batch.lowered_for(proto).conditions)
    out = []
    for m in proto.measures:
        key = f"measure:{m.id}"
        col = lambda part: batch.ident(f"{key}:{part}") if f"{key}:{part}" in conds else "FALSE"  # noqa: E731
        ip = f"(NOT deceased AND {col('ip')})"
        den = f"({ip} AND {col('den')})"
        met = f"({den} AND {col('num')})"
        excl = f"({den} AND {col('excl')})"
        if m.achievers_kept:
            excl = f"({excl} AND NOT {met})"
        num = f"({met} AND NOT {excl})"
        out.append((m.id, ip, den, excl, num))
    return out


def _stored_measures(con, run: str, proto: Protocol) -> dict:
    rows = con.execute("SELECT measure, sum(denominator), sum(exclusions), sum(numerator) FROM res.measures "
                       "WHERE run = ? AND protocol = ? AND version = ? GROUP BY measure ORDER BY measure",
                       [run, proto.id, proto.version]).fetchall()
    return {m: {"denominator": int(d), "exclusions": int(e), "numerator": int(n)} for m, d, e, n in rows}


def evaluate_population_run(data: Path, protocols: list[Protocol], as_of: dt.date, period_start: dt.date | None = None,
                            workers: int | None = None, results: Path | None = None, run: str | None = None,
                            log=print) -> dict:
    """Evaluate each protocol over the population at `data`; store results; return a summary."""
    data = Path(data)
    results = Path(results) if results else (data if data.is_dir() else data.parent) / "results.duckdb"
    con = open_population(data, threads=workers)
    con.execute(f"ATTACH '{results}' AS res")
    for stmt in SCHEMA.strip().split(";"):
        if stmt.strip():
            con.execute(stmt)
    run = run or run_id_for(as_of, period_start, protocols)
    if not con.execute("SELECT 1 FROM res.runs WHERE run = ?", [run]).fetchone():
        con.execute("INSERT INTO res.runs VALUES (?, ?, ?, now(), NULL)", [run, as_of, period_start])
    done = {r[0] for r in con.execute("SELECT protocol || '@' || version FROM res.run_protocols WHERE run = ?", [run]).fetchall()}
    summary = {"run": run, "as_of": as_of.isoformat(), "results": str(results), "protocols": []}
    n_patients = con.execute("SELECT count(*) FROM patients").fetchone()[0]
    for proto in protocols:
        if proto.key in done:
            log(f"{proto.key}: already done in run {run}, skipped")
            summary["protocols"].append({"protocol": proto.key, "skipped": True,
                                         "measures": _stored_measures(con, run, proto)})
            continue
        for t in ("fired", "measures", "registers"):  # a partial earlier attempt
            con.execute(f"DELETE FROM res.{t} WHERE run = ? AND protocol = ? AND version = ?", [run, proto.id, proto.version])
        t0 = time.perf_counter()
        try:
            compiled = batch.prepare(con, proto, as_of, period_start)
        except NotImplementedError as e:
            log(f"{proto.key}: not evaluated: {e}")
            summary["protocols"].append({"protocol": proto.key, "error": str(e)})
            continue
        ctx = Context.as_of(as_of, proto.period, period_start)
        keys = compiled.conditions
        fired_list = ("flatten([" + ", ".join(f"CASE WHEN {batch.ident(k)} THEN [{batch.lit(k)}] ELSE []::VARCHAR[] END"
                                              for k in keys) + "])") if keys else "[]::VARCHAR[]"
        con.execute(f"CREATE OR REPLACE TEMP TABLE cur AS SELECT o.*, p.practice, p.mdt, p.locality, "
                    f"coalesce(p.death_date <= {batch.lit(ctx.reference_date)}, FALSE) AS deceased "
                    f"FROM ({compiled.sql}) o JOIN patients p USING (pid)")
        meta = [batch.lit(run), batch.lit(proto.id), batch.lit(proto.version)]
        con.execute(f"INSERT INTO res.fired SELECT {', '.join(meta)}, nhs_number, practice, {fired_list} FROM cur")
        reg = "(NOT deceased AND \"population\")" if "population" in keys else "FALSE"
        con.execute(f"INSERT INTO res.registers SELECT {', '.join(meta)}, practice, count(*) FILTER (WHERE {reg}) "
                    f"FROM cur GROUP BY practice")
        for mid, ip, den, excl, num in _measure_sql(proto):
            con.execute(f"INSERT INTO res.measures SELECT {', '.join(meta)}, {batch.lit(mid)}, practice, mdt, locality, "
                        f"count(*) FILTER (WHERE {ip}), count(*) FILTER (WHERE {den}), count(*) FILTER (WHERE {excl}), "
                        f"count(*) FILTER (WHERE {num}) FROM cur GROUP BY practice, mdt, locality")
        seconds = time.perf_counter() - t0
        con.execute("INSERT INTO res.run_protocols VALUES (?, ?, ?, ?, ?, now())",
                    [run, proto.id, proto.version, n_patients, seconds])
        on_register = con.execute(f"SELECT count(*) FILTER (WHERE {reg}) FROM cur").fetchone()[0]
        entry = {"protocol": proto.key, "patients": n_patients, "on_register": on_register, "seconds": round(seconds, 2),
                 "measures": _stored_measures(con, run, proto)}
        summary["protocols"].append(entry)
        log(f"{proto.key}: {n_patients} patients, {on_register} on the register, {seconds:.1f} s")
        con.execute("DROP TABLE cur")
        con.execute(f"DROP TABLE IF EXISTS {compiled.vsm_table}")
    con.execute("UPDATE res.runs SET finished = now() WHERE run = ?", [run])
    con.close()
    return summary
