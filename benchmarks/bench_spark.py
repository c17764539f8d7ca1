"""Spark local[2] against DuckDB on the same people and protocols, same run (issue 18).

    carepath bench spark --patients 750000 --chunk 31250 --chunks 2 [--protocols t2dm-annual-care,asthma]

The generated population of `--patients` people (cached under benchmarks/.data as `carepath bench population`
keeps it; `--data` for another folder), cut into chunks of `--chunk` people (default: the DuckDB run's own
chunk for the whole population, 31,250 at 750,000 on 2 workers); only the first `--chunks` K of them are run
(default: all). On those people, one after the other in this process:

1. DuckDB: `evaluate_population_run` (the population run `carepath evaluate-population` does: chunks in
   worker processes, results in a DuckDB file);
2. Spark: a `local[2]` session started (timed apart), then `evaluate_population_spark` (results as Parquet).

Same chunk size for both, so the chunk column and the per-chunk measures match. For each: wall seconds, CPU
seconds of this process and every descendant (the DuckDB workers; the JVM and its Python workers — live
processes read through psutil, reaped ones through their parent's children times), peak RSS summed over the
same process tree (benchmarks.bench_population.TreeRss, sampled every 0.2 s) and patients/s. The result
tables (fired, measures, measure_values, registers) are then compared row for row (as tests/spec/test_spark_population_run.py
does). The 1-minute load average is recorded before, between and after: the machine may be shared.

With K < all chunks, `projected_whole_population` scales the measured figures to every chunk: it is a
projection (chunks are independent and of one size, so the time is linear in chunks; Spark's session start is
paid once), not a measurement, and says so.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench_batch import DATA, ROOT, finish

AS_OF = dt.date(2026, 11, 20)  # every protocol in protocols/ is in force
RUN = "bench-spark"
FIRED_COLS = "run, protocol, version, chunk, nhs_number, practice, deceased, list_sort(fired) AS fired"


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process and every live descendant, each with its reaped children's
    (a process that ended and was waited for is counted in its parent's children times, so none is lost
    while its parent lives and none is counted twice)."""
    import psutil

    root = psutil.Process(pid or os.getpid())
    total = 0.0
    for p in [root] + root.children(recursive=True):
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def project(seconds: float, chunks_run: int, chunks_total: int, parallel: int = 1, fixed: float = 0.0) -> float:
    """Seconds for every chunk from seconds measured over the first `chunks_run`: chunks run `parallel` at a
    time (DuckDB's worker processes; Spark's one session runs them one after the other: 1), every chunk of
    one size; `fixed` (inside `seconds`) is paid once whatever the number of chunks."""
    waves_run = -(-chunks_run // parallel)
    waves_total = -(-chunks_total // parallel)
    return fixed + (seconds - fixed) * waves_total / waves_run


def _measured(fn) -> tuple[object, dict]:
    from benchmarks.bench_population import TreeRss

    c0, w0 = tree_cpu_seconds(), time.perf_counter()
    with TreeRss() as rss:
        result = fn()
    return result, {"seconds": round(time.perf_counter() - w0, 2), "cpu_seconds": round(tree_cpu_seconds() - c0, 2),
                    "peak_rss_mib": round(rss.peak, 1)}


def compare(results: Path, spark_out: Path) -> dict:
    """Row-for-row comparison of the DuckDB run's result tables with the Spark run's Parquet folders:
    per table, rows on each side and rows found on one side only (as multisets; fired lists sorted)."""
    import duckdb

    from engine.engines.spark.run import RESULT_TABLES

    con = duckdb.connect()
    con.execute(f"ATTACH '{results}' AS res (READ_ONLY)")
    out = {}
    for table in RESULT_TABLES:
        cols = [r[0] for r in con.execute(f"DESCRIBE res.{table}").fetchall()]
        sel = FIRED_COLS if table == "fired" else ", ".join(f'"{c}"' for c in cols)
        files = sorted(str(p) for p in (spark_out / table).glob("protocol=*/chunk=*/*.parquet"))
        a = f"SELECT {sel} FROM res.{table} WHERE run = '{RUN}'"
        b = f"SELECT {sel} FROM read_parquet({files!r}, hive_partitioning = false)" if files else f"{a} AND false"
        n_a = con.execute(f"SELECT count(*) FROM ({a})").fetchone()[0]
        n_b = con.execute(f"SELECT count(*) FROM ({b})").fetchone()[0]
        only_a = con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone()[0]
        only_b = con.execute(f"SELECT count(*) FROM ({b} EXCEPT ALL {a})").fetchone()[0]
        out[table] = {"duckdb_rows": n_a, "spark_rows": n_b, "only_duckdb": only_a, "only_spark": only_b}
        if only_a or only_b:  # where: per protocol, and a few rows of each side
            out[table]["differing_by_protocol"] = dict(con.execute(
                f"SELECT protocol || '@' || version, count(*) FROM ({a} EXCEPT ALL {b}) GROUP BY ALL ORDER BY 1").fetchall())
            for side, (x, y) in (("duckdb", (a, b)), ("spark", (b, a))):
                out[table][f"sample_only_{side}"] = [repr(r) for r in con.execute(
                    f"SELECT * FROM ({x} EXCEPT ALL {y}) ORDER BY ALL LIMIT 3").fetchall()]
    con.close()
    # identical: nothing on one side only, and not vacuously (every patient has a fired row; measure_values
    # has rows only when a protocol run counts a `value:` measure)
    out["identical"] = out["fired"]["duckdb_rows"] > 0 and all(v["only_duckdb"] == 0 and v["only_spark"] == 0
                                                                 for v in out.values())
    return out


def run(patients: int = 750_000, seed: int = 1, as_of: dt.date = AS_OF, chunk: int | None = None,
        chunks: int | None = None, protocol_ids: tuple[str, ...] = (), workers: int = 2, master: str = "local[2]",
        spark_memory: str | None = None, data_dir: Path | None = None, write: bool = True, log=lambda m: None) -> dict:
    from benchmarks.bench_population import population_dir
    from engine.engines.duckdb.columnar import has_population
    from engine.engines.duckdb.run import balanced_chunk, evaluate_population_run
    from engine.language.library import load_library

    lib = load_library([ROOT / "protocols"])
    protocols = lib.in_force(as_of)
    if protocol_ids:
        wanted = [p.strip() for p in protocol_ids if p.strip()]
        unknown = [w for w in wanted if not any(w in (p.id, p.key) for p in protocols)]
        if unknown:
            raise SystemExit(f"not in force on {as_of}: {', '.join(unknown)}")
        protocols = [p for p in protocols if p.id in wanted or p.key in wanted]
    if data_dir is not None:
        data = Path(data_dir).resolve()
        if not has_population(data):
            raise SystemExit(f"no population at {data}")
    else:
        data, _ = population_dir(patients, seed, as_of, workers, log)
    chunk = chunk or balanced_chunk(patients, workers)
    chunks_total = -(-patients // chunk)
    chunks = min(chunks or chunks_total, chunks_total)
    first = min(patients, chunks * chunk)
    load = {"before": round(os.getloadavg()[0], 2)}
    out: dict = {"benchmark": "spark-vs-duckdb", "population": patients, "seed": seed, "as_of": as_of.isoformat(),
                 "data": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else data.name,
                 "protocols": [p.key for p in protocols], "chunk": chunk, "chunks_run": chunks,
                 "chunks_in_population": chunks_total, "patients": first, "duckdb_workers": workers,
                 "spark_master": master,
                 "command": f"carepath bench spark --patients {patients} --chunk {chunk} --chunks {chunks}"
                            + (f" --protocols {','.join(protocol_ids)}" if protocol_ids else "")
                            + (f" --spark-memory {spark_memory}" if spark_memory else "")
                            + (f" --master {master}" if master != "local[2]" else "")
                            + (f" --data .../{data.name}" if data_dir is not None else "")}
    tmp = Path(tempfile.mkdtemp(prefix="carepath-bench-spark-", dir=DATA))
    try:
        log(f"DuckDB: {first} patients ({chunks} chunks of {chunk}) x {len(protocols)} protocols, {workers} workers ...")
        duck, m = _measured(lambda: evaluate_population_run(data, protocols, as_of, workers=workers, results=tmp / "results.duckdb",
                                                            run=RUN, chunk_size=chunk, first=first, log=lambda s: None))
        m["patients_per_second"] = round(duck["patients"] / m["seconds"], 1)
        m["workers_busy"] = min(workers, duck["chunks"])
        m["errors"] = {p["protocol"]: p["error"] for p in duck["protocols"] if p.get("error")}
        out["duckdb"] = m
        log(f"DuckDB: {m}")
        load["between"] = round(os.getloadavg()[0], 2)

        from engine.engines.spark.run import evaluate_population_spark
        from engine.engines.spark.session import get_session

        log(f"Spark {master}: starting the session ...")

        def spark_run():
            t0 = time.perf_counter()
            spark = get_session(master, memory=spark_memory) if spark_memory else get_session(master)
            started = time.perf_counter() - t0
            summary = evaluate_population_spark(data, protocols, as_of, master=master, out=tmp / "spark", run=RUN,
                                                chunk_size=chunk, first=first, log=log)
            return spark, started, summary

        (spark, started, summary), m = _measured(spark_run)
        m["session_start_seconds"] = round(started, 2)
        m["run_seconds"] = summary["seconds"]
        m["patients_per_second"] = round(summary["patients"] / m["seconds"], 1)
        m["patients_per_second_without_session_start"] = round(summary["patients"] / summary["seconds"], 1)
        m["driver_memory"] = spark.conf.get("spark.driver.memory")
        m["seconds_per_protocol"] = {}
        for p in summary["protocols"]:
            m["seconds_per_protocol"][p["protocol"]] = round(m["seconds_per_protocol"].get(p["protocol"], 0) + p["seconds"], 2)
        out["spark"] = m
        log(f"Spark: {m}")
        load["after"] = round(os.getloadavg()[0], 2)
        if duck["patients"] != summary["patients"] or duck["chunks"] != summary["chunks"]:
            raise AssertionError(f"not the same people: DuckDB {duck['patients']} in {duck['chunks']} chunks, "
                                 f"Spark {summary['patients']} in {summary['chunks']}")
        out["agreement"] = compare(tmp / "results.duckdb", tmp / "spark")
        log(f"agreement: {out['agreement']}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["load_average_1min"] = load
    d, s = out["duckdb"], out["spark"]
    out["spark_to_duckdb"] = {"seconds": round(s["seconds"] / d["seconds"], 1),
                              "cpu_seconds": round(s["cpu_seconds"] / max(d["cpu_seconds"], 1e-9), 1),
                              "peak_rss": round(s["peak_rss_mib"] / max(d["peak_rss_mib"], 1e-9), 1)}
    if chunks < chunks_total:
        out["projected_whole_population"] = {
            "what": f"a PROJECTION, not a measurement: the figures over {chunks} of {chunks_total} chunks scaled to "
                    f"all {chunks_total} (chunks independent and of one size; DuckDB runs {workers} chunks at a time, "
                    f"Spark's session one after the other; Spark's session start paid once). Peak RSS is per chunk: "
                    f"not scaled.",
            "patients": patients,
            "duckdb_seconds": round(project(d["seconds"], chunks, chunks_total, workers), 0),
            "duckdb_cpu_seconds": round(project(d["cpu_seconds"], chunks, chunks_total), 0),
            "spark_seconds": round(project(s["seconds"], chunks, chunks_total, 1, s["session_start_seconds"]), 0),
            "spark_cpu_seconds": round(project(s["cpu_seconds"], chunks, chunks_total), 0)}
    return finish(out, f"spark-{first}", write)
