"""A whole population on Spark: every protocol in force over a Parquet population (the layout `carepath
generate` writes, or a real extract with the same columns), chunk by chunk, results written as Parquet.

    carepath evaluate-population --engine spark [--master local[2]] --data var/population --as-of 2026-11-20

Output (`<data>/results-spark/` by default): `fired/protocol=<id>@<version>/chunk=<k>/` Parquet files with
the columns of the DuckDB run's `fired` table (run, protocol, version, chunk, nhs_number, practice, deceased,
fired = the condition keys that held; a protocol whose measures are counted per episode
has one row per patient and condition group, under `group=<g>`), and `run_chunks.jsonl` (one line per (protocol, chunk) done).
Resumable: a (protocol, chunk) whose line is in run_chunks.jsonl is skipped when the same run id runs again;
a chunk's files are written to a temporary folder and renamed into place before its line is added.
Not yet here (the DuckDB run has them): the measures and registers tables (docs/scale.md)."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

from engine.engines.spark import batch
from engine.engines.spark.session import get_session
from engine.engines.spark.tables import load_parquet
from engine.engines.sql.compiler import condition_groups, ident, lit
from engine.language.model import Protocol

DEFAULT_CHUNK = 250_000  # Spark's fixed cost per query is high: large chunks (memory is the cluster's)


def _fired_sql(compiled, as_of: dt.date, chunk: int, protocol: Protocol, run: str) -> str:
    keys = compiled.conditions
    arr = ", ".join(f"CASE WHEN q.{ident(k)} THEN {lit(k)} END" for k in keys) or "CAST(NULL AS STRING)"
    return (f"SELECT {lit(run)} AS run, {lit(protocol.id)} AS protocol, {lit(protocol.version)} AS version, "
            f"{int(chunk)} AS chunk, q.nhs_number, p.practice, coalesce(p.death_date <= {lit(as_of)}, FALSE) AS deceased, "
            f"filter(array({arr}), x -> x IS NOT NULL) AS fired FROM __q q JOIN patients p ON p.pid = q.pid")


def evaluate_population_spark(data: Path, protocols: list[Protocol], as_of: dt.date, period_start: dt.date | None = None,
                              master: str | None = "local[2]", out: Path | None = None, run: str | None = None,
                              chunk_size: int = DEFAULT_CHUNK, first: int | None = None, log=print) -> dict:
    data = Path(data)
    out = Path(out) if out else data / "results-spark"
    out.mkdir(parents=True, exist_ok=True)
    run = run or f"{as_of.isoformat()}-spark"
    spark = get_session(master)
    t0 = time.perf_counter()
    load_parquet(spark, data, prefix="all_", first=first)
    lo, hi, n = spark.sql('SELECT coalesce(min(pid), 0), coalesce(max(pid), -1), count(*) FROM all_patients').first()
    ledger = out / "run_chunks.jsonl"
    done = set()
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            r = json.loads(line)
            if r["run"] == run:
                done.add((r["protocol"], r["chunk"]))
    chunks = [(k, a, min(a + chunk_size, hi + 1)) for k, a in enumerate(range(lo, hi + 1, chunk_size))]
    summary = {"run": run, "patients": n, "chunks": len(chunks), "protocols": [], "results": str(out)}
    for k, a, b in chunks:
        for t in ("patients", "facts", "fact_codings", "fact_attrs"):
            df = spark.sql(f"SELECT * FROM all_{t} WHERE pid >= {a} AND pid < {b}").cache()
            if spark.catalog.tableExists(t):
                spark.catalog.uncacheTable(t)
            df.createOrReplaceTempView(t)
        for proto in protocols:
            if (proto.key, k) in done:
                log(f"{proto.key} chunk {k}: already done in run {run}, skipped")
                continue
            t1 = time.perf_counter()
            target = out / "fired" / f"protocol={proto.key}" / f"chunk={k}"
            tmp = out / "fired" / f".tmp-{proto.key}-{k}"
            shutil.rmtree(tmp, ignore_errors=True)
            for g, group in enumerate(condition_groups(proto)):
                with batch._Scratch(spark):
                    compiled = batch.prepare(spark, proto, as_of, period_start, keys=group)
                    batch.query(spark, compiled, ["pid", "nhs_number"] + compiled.conditions).createOrReplaceTempView("__q")
                    spark.sql(_fired_sql(compiled, as_of, k, proto, run)).write.mode("append").parquet(str(tmp / f"group={g}"))
                    spark.catalog.uncacheTable(batch._name(compiled.vsm_table))
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(target)
            secs = round(time.perf_counter() - t1, 3)
            with ledger.open("a") as fh:
                fh.write(json.dumps({"run": run, "protocol": proto.key, "chunk": k, "patients": b - a, "seconds": secs}) + "\n")
            summary["protocols"].append({"protocol": proto.key, "chunk": k, "seconds": secs})
            log(f"{proto.key} chunk {k}: {b - a} patients in {secs} s")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary
