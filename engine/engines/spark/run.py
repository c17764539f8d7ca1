"""A whole population on Spark: every protocol in force over a Parquet population (the layout `carepath
generate` writes, or a real extract with the same columns), chunk by chunk, results written as Parquet.

    carepath evaluate-population --engine spark [--master local[2]] --data var/population --as-of 2026-11-20

Output (`<data>/results-spark/` by default): the result tables of the DuckDB run (engine/engines/duckdb/run.py),
same columns, one Parquet folder each, partitioned by protocol and chunk:

    fired/protocol=<id>@<version>/chunk=<k>/      run, protocol, version, chunk, nhs_number, practice, deceased,
                                                  fired (the condition keys that held; one row per patient)
    measures/protocol=<id>@<version>/chunk=<k>/   run, protocol, version, chunk, measure, practice, mdt, locality,
                                                  initial_population, denominator, exclusions, numerator,
                                                  exceptions, basis (engine/engines/sql/measures.py: the DuckDB
                                                  run's definition)
    measure_values/protocol=<id>@<version>/chunk=<k>/  run, protocol, version, chunk, measure, nhs_number, practice,
                                                  mdt, locality, value (one row per person a `value:` measure
                                                  counts; only for protocols with such measures)
    registers/protocol=<id>@<version>/chunk=<k>/  run, protocol, version, chunk, practice, patients
    run_chunks.jsonl                              one line per (protocol, chunk) done

Resumable: a (protocol, chunk) whose line is in run_chunks.jsonl is skipped when the same run id runs again;
a chunk's tables are written to a temporary folder and renamed into place before its line is added
(a run killed in between writes that (protocol, chunk) again, replacing what was there)."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

from engine.engines.spark import batch, episodes
from engine.engines.spark.session import get_session
from engine.engines.spark.tables import load_parquet
from engine.engines.sql import measures
from engine.engines.sql.compiler import condition_groups, ident, lit
from engine.language.model import Protocol

DEFAULT_CHUNK = 250_000  # Spark's fixed cost per query is high: large chunks (memory is the cluster's)
RESULT_TABLES = ("fired", "measures", "measure_values", "registers")


def _columns(spark, proto: Protocol, as_of: dt.date, period_start: dt.date | None,
             shared=None) -> tuple[list[str], dict[str, tuple[str, str | None]]]:
    """Register `__cur`: one row per patient of the chunk with pid, nhs_number, one boolean column per
    condition key, the measure values' columns, practice, mdt, locality and deceased (each condition group's
    query checkpointed, then joined on pid, as the DuckDB run joins its groups; the steps of every episode one
    query over (patient, episode) rows). Returns the condition keys and the value columns
    (measure:<id>:value -> (column, presence column or None), as measures.measures_select reads them)."""
    keys: list[str] = []
    values: dict[str, tuple[str, str | None]] = {}
    frames = []
    groups = condition_groups(proto)
    # every episode's steps in one query over (patient, episode) rows (engine/engines/spark/episodes.py)
    per_episode = episodes.episode_frame(spark, proto, as_of, period_start, shared)
    for group in groups:
        if per_episode is not None and any("#" in k for k in group):
            if per_episode[0] is not None:  # all `#k` columns at the place of the first episode's group
                df, ep_keys = per_episode
                ep_keys = [k for g in groups for k in g if "#" in k]  # in the groups' order, as the DuckDB run
                keys += ep_keys
                frames.append(df.select(*[df[f"`{c}`"] for c in ["pid"] + ep_keys]))
                per_episode = (None, ep_keys)
            continue
        compiled = batch.prepare(spark, proto, as_of, period_start, keys=group, shared=shared)
        df = batch.query(spark, compiled, ["pid"] + compiled.conditions + compiled.value_columns()).localCheckpoint(eager=True)
        spark.catalog.uncacheTable(batch._name(compiled.vsm_table))
        keys += compiled.conditions
        values.update(compiled.value_sources())
        frames.append(df)
    for i, df in enumerate(frames):
        df.createOrReplaceTempView(f"__g{i}")
    cols = ", ".join(f"__g{i}.{ident(k)}" for i, df in enumerate(frames) for k in df.columns[1:])
    joins = "".join(f" JOIN __g{i} ON __g{i}.pid = p.pid" for i in range(len(frames)))
    spark.sql(f"SELECT p.pid, p.nhs_number, p.practice, p.mdt, p.locality, "
              f"coalesce(p.death_date <= {lit(as_of)}, FALSE) AS deceased{', ' if cols else ''}{cols} "
              f"FROM patients p{joins}").localCheckpoint(eager=True).createOrReplaceTempView("__cur")
    return keys, values


def _result_sql(proto: Protocol, keys: list[str], chunk: int, run: str,
                values: dict[str, tuple[str, str | None]] | None = None) -> dict[str, str]:
    meta = (f"{lit(run)} AS run, {lit(proto.id)} AS protocol, {lit(proto.version)} AS version, "
            f"CAST({int(chunk)} AS INT) AS chunk")
    arr = ", ".join(f"CASE WHEN {ident(k)} THEN {lit(k)} END" for k in keys) or "CAST(NULL AS STRING)"
    out = {"fired": f"SELECT {meta}, nhs_number, practice, deceased, "
                    f"filter(array({arr}), x -> x IS NOT NULL) AS fired FROM __cur",
           "registers": f"SELECT {meta}, practice, count_if({measures.register_sql(keys)}) AS patients "
                        f"FROM __cur GROUP BY practice"}
    for table, sql in (("measures", measures.measures_select(proto, meta, "__cur", values)),
                       ("measure_values", measures.measure_values_select(proto, meta, "__cur", values))):
        if sql:  # '' when the protocol counts no measures / no values
            out[table] = sql
    return out


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
        if all((proto.key, k) in done for proto in protocols):
            log(f"chunk {k}: already done in run {run}, skipped")
            continue
        for t in ("patients", "facts", "fact_codings", "fact_attrs"):
            df = spark.sql(f"SELECT * FROM all_{t} WHERE pid >= {a} AND pid < {b}").cache()
            if spark.catalog.tableExists(t):
                spark.catalog.uncacheTable(t)
            df.createOrReplaceTempView(t)
        # one value-set matching pass over this chunk for every protocol still to run (as the DuckDB run)
        shared = batch.create_shared(spark, [p for p in protocols if (p.key, k) not in done], as_of, period_start)
        for proto in protocols:
            if (proto.key, k) in done:
                log(f"{proto.key} chunk {k}: already done in run {run}, skipped")
                continue
            t1 = time.perf_counter()
            tmp = out / f".tmp-{proto.key}-{k}"
            shutil.rmtree(tmp, ignore_errors=True)
            with batch.Scratch(spark):
                keys, values = _columns(spark, proto, as_of, period_start, shared)
                for table, sql in _result_sql(proto, keys, k, run, values).items():
                    spark.sql(sql).write.mode("overwrite").parquet(str(tmp / table))
                patients = spark.sql("SELECT count(*) FROM __cur").first()[0]
            for table in RESULT_TABLES:
                target = out / table / f"protocol={proto.key}" / f"chunk={k}"
                shutil.rmtree(target, ignore_errors=True)
                if (tmp / table).exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    (tmp / table).rename(target)
            shutil.rmtree(tmp, ignore_errors=True)
            secs = round(time.perf_counter() - t1, 3)
            with ledger.open("a") as fh:
                fh.write(json.dumps({"run": run, "protocol": proto.key, "chunk": k, "patients": patients,
                                     "seconds": secs}) + "\n")
            summary["protocols"].append({"protocol": proto.key, "chunk": k, "seconds": secs})
            log(f"{proto.key} chunk {k}: {patients} patients in {secs} s")
        batch.drop_shared(spark, shared)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def read_results(spark, out: Path, table: str):
    """One result table of a Spark run as one DataFrame (its leaf folders read as they are: protocol and chunk
    are columns of the rows, so the `protocol=` / `chunk=` folder names are not read as partition columns)."""
    return spark.read.parquet(*[str(p) for p in sorted((Path(out) / table).glob("protocol=*/chunk=*"))])
