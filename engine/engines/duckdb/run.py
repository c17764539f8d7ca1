"""Population evaluation: every protocol in force, over a whole population, with the batch engine.

    carepath generate --patients 750000 --seed 1 --out var/population
    carepath evaluate-population --data var/population --as-of 2026-11-20 [--workers 2] [--chunk 50000]

Input: a population folder (`<table>/*.parquet` as written by engine/synthetic/generate.py, or
`<table>.parquet`, or a `population.duckdb`). Output: a DuckDB results file (default `<data>/results.duckdb`):

    runs            run, as_of, period_start, chunk_size, started, finished
    run_chunks      run, protocol, version, chunk, patients, seconds, finished  <- one row per (protocol, chunk) done
    run_protocols   run, protocol, version, patients, seconds, finished          <- one row per protocol done
    fired           run, protocol, version, chunk, nhs_number, practice, deceased, fired  (condition keys that held)
    measures        run, protocol, version, chunk, measure, practice, mdt, locality,
                    initial_population, denominator, exclusions, numerator, exceptions, basis, cannot_determine,
                    value_sum, value_patients, value_missing
                    (engine/ir/measure_steps.py, as the per-patient engines count them: denominator
                    exceptions apart; a measure with basis 'episode' counts each episode, CMS22;
                    cannot_determine: patients whose result needs a declared codelist the site has not
                    supplied, in no other column, as the evaluator and the live audit count them; a measure
                    with `value:` adds its values up over the patients in the denominator and not excluded,
                    and counts those with a value and those whose value is missing; NULL for other measures)
    measure_values  run, protocol, version, chunk, measure, nhs_number, practice, mdt, locality, value
                    one row per patient counted by a measure with `value:` (NULL = missing, never 0)
    registers       run, protocol, version, chunk, practice, patients

Memory: the population is evaluated in chunks of patients (`pid` ranges; by default equal chunks of at most 31,250, as many
as a multiple of the workers: balanced_chunk): a chunk's
rows are copied into memory once (DuckDB skips the other Parquet files by their pid statistics) and
every protocol runs over it. Peak memory follows the chunk size, not the population size.

Each chunk's facts are matched to value sets once for every protocol (engine/engines/sql/shared_matches.py);
each protocol's query reads its value sets' rows from that one pass.

Chunks run in worker processes (one DuckDB thread each); a worker writes a chunk's rows to Parquet
and the parent, which alone holds the results file, takes them in.

Resumable: a run id names a run. Each chunk (the rows of every protocol evaluated over it, with their run_chunks
rows) is written in one transaction, so a run killed at any point (kill -9 included) leaves whole chunks or
nothing of them; running again with the same id skips the (protocol, chunk) pairs done.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path
from typing import NamedTuple

from engine.engines.duckdb import batch
from engine.engines.derive import Context
from engine.engines.duckdb.columnar import TABLES, has_population, load_parquet
from engine.engines.sql import measures
from engine.language.model import Protocol

# The largest chunk a run takes unless told (chunk_size=None): memory follows it (a worker holds the chunk, its
# shared matches and one protocol query's intermediates: ~1.7 GiB at 31,250, ~3 GiB at 62,500, whose two workers
# went over P1's 4 GiB at 17 protocols). 750,000 people = 24 chunks = 12 per worker on 2 cores (docs/population.md).
DEFAULT_CHUNK = 31_250
CHUNK_PREFIX = "chunk_"  # the in-memory copy of one chunk's four tables


def open_population(data: Path, threads: int | None = None, memory_limit: str | None = None,
                    first: int | None = None):
    """A DuckDB connection with the population's four tables (views over Parquet, or a DuckDB file).
    `first`: only patients with pid < first (each generated person has their own random stream, so the
    first N of a big population are the population of N)."""
    data = Path(data)
    if data.suffix == ".duckdb" or (data / "population.duckdb").exists():
        path = data if data.suffix == ".duckdb" else data / "population.duckdb"
        if first is not None:
            raise ValueError("first= needs a Parquet population")
        return batch.connect(str(path), threads=threads, memory_limit=memory_limit)
    if not data.is_dir() or not has_population(data):
        raise FileNotFoundError(f"{data}: no population here (expected facts.parquet etc. from `carepath generate`)")
    con = batch.connect(threads=threads, memory_limit=memory_limit)
    load_parquet(con, data, prefix="all_" if first is not None else "")
    if first is not None:
        for t in TABLES:
            con.execute(f'CREATE VIEW "{t}" AS SELECT * FROM "all_{t}" WHERE pid < {int(first)}')
    return con


def balanced_chunk(patients: int, workers: int, largest: int = DEFAULT_CHUNK) -> int:
    """The chunk size for `patients` (a pid span) on `workers` processes when none is asked: the fewest chunks no
    larger than `largest`, rounded up to a multiple of `workers`, all of one size (so no core idles at the end
    while another takes a last chunk alone). 750,000 on 2 workers: 24 chunks of 31,250; 100,000: 4 of 25,000."""
    patients, workers = max(1, int(patients)), max(1, int(workers))
    n = -(-patients // max(1, int(largest)))
    n = -(-n // workers) * workers
    return -(-patients // n)


def run_id_for(as_of: dt.date, period_start: dt.date | None, protocols: list[Protocol]) -> str:
    h = hashlib.sha1("|".join([as_of.isoformat(), str(period_start)] + sorted(p.ruleset_name for p in protocols)).encode())
    return f"{as_of.isoformat()}-{h.hexdigest()[:8]}"


SCHEMA = """
CREATE TABLE IF NOT EXISTS res.runs (run VARCHAR PRIMARY KEY, as_of DATE, period_start DATE, chunk_size BIGINT,
    started TIMESTAMP, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS res.run_chunks (run VARCHAR, protocol VARCHAR, version VARCHAR, chunk INTEGER,
    patients BIGINT, seconds DOUBLE, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS res.run_protocols (run VARCHAR, protocol VARCHAR, version VARCHAR, patients BIGINT,
    seconds DOUBLE, finished TIMESTAMP);
CREATE TABLE IF NOT EXISTS res.fired (run VARCHAR, protocol VARCHAR, version VARCHAR, chunk INTEGER,
    nhs_number VARCHAR, practice VARCHAR, deceased BOOLEAN, fired VARCHAR[]);
CREATE TABLE IF NOT EXISTS res.measures (run VARCHAR, protocol VARCHAR, version VARCHAR, chunk INTEGER, measure VARCHAR,
    practice VARCHAR, mdt VARCHAR, locality VARCHAR, initial_population BIGINT, denominator BIGINT, exclusions BIGINT,
    numerator BIGINT, exceptions BIGINT, basis VARCHAR, cannot_determine BIGINT, value_sum DOUBLE, value_patients BIGINT,
    value_missing BIGINT);
CREATE TABLE IF NOT EXISTS res.measure_values (run VARCHAR, protocol VARCHAR, version VARCHAR, chunk INTEGER,
    measure VARCHAR, nhs_number VARCHAR, practice VARCHAR, mdt VARCHAR, locality VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS res.registers (run VARCHAR, protocol VARCHAR, version VARCHAR, chunk INTEGER,
    practice VARCHAR, patients BIGINT);
"""


def _stored_measures(con, run: str, proto: Protocol) -> dict:
    rows = con.execute("SELECT measure, sum(initial_population), sum(denominator), sum(exclusions), sum(exceptions), "
                       "sum(numerator), sum(cannot_determine) FROM res.measures WHERE run = ? AND protocol = ? "
                       "AND version = ? GROUP BY measure ORDER BY measure", [run, proto.id, proto.version]).fetchall()
    return {m: {"initial_population": int(ip), "denominator": int(d), "exclusions": int(e), "exceptions": int(x),
                "numerator": int(n), "cannot_determine": int(u)} for m, ip, d, e, x, n, u in rows}


def _open_results(con, results: Path) -> None:
    con.execute(f"ATTACH '{results}' AS res")
    for stmt in SCHEMA.strip().split(";"):
        if stmt.strip():
            con.execute(stmt)
    cols = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = 'res' "
                                      "AND table_name = 'fired'").fetchall()}
    if not {"chunk", "deceased"} <= cols:
        raise FileNotFoundError(f"{results} was written by an older carepath (results without chunks); "
                                f"use a new --results file")
    cols = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE database_name = 'res' "
                                      "AND table_name = 'measures'").fetchall()}
    if "exceptions" not in cols:
        raise FileNotFoundError(f"{results} was written by an older carepath (measures without denominator "
                                f"exceptions and episode counts); use a new --results file")
    if "cannot_determine" not in cols:
        raise FileNotFoundError(f"{results} was written by an older carepath (measures without the count of "
                                f"patients whose result cannot be determined); use a new --results file")
    if "value_sum" not in cols:
        raise FileNotFoundError(f"{results} was written by an older carepath (measures without values); "
                                f"use a new --results file")


# The attributes in key order: the compiled queries test one key at a time (`where intent == "order"`,
# `verification_status`, `reason in valueset`, ...), each a scan of the chunk's attributes; stored by key, a scan
# reads only the row groups holding its key (their min/max). Measured on 25,000 people (docs/population.md):
# the protocols' CPU 11-14 % lower, for ~0.26 s of sorting; results identical. No query depends on row order.
_CHUNK_ORDER = {"fact_attrs": " ORDER BY key"}


def load_chunk(con, lo: int, hi: int) -> int:
    """Copy patients lo <= pid < hi of the four tables into memory (as the tables named by
    `batch.default_tables(CHUNK_PREFIX)`); returns the number of patients."""
    for t in TABLES:
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{CHUNK_PREFIX}{t}" AS SELECT * FROM "{t}" '
                    f"WHERE pid >= {int(lo)} AND pid < {int(hi)}{_CHUNK_ORDER.get(t, '')}")
    return con.execute(f'SELECT count(*) FROM "{CHUNK_PREFIX}patients"').fetchone()[0]


def _evaluate_chunk(con, run: str, proto: Protocol, chunk: int, as_of: dt.date, period_start: dt.date | None,
                    out: Path, shared=None) -> dict:
    """One protocol over the loaded chunk; its fired / registers / measures rows go to Parquet files in
    `out` (the process holding the results file takes them in, see _commit_chunk)."""
    tables = batch.default_tables(CHUNK_PREFIX)
    t0 = time.perf_counter()
    body, keys, vsm_tables, values = patient_columns(con, proto, as_of, period_start, tables, shared)
    ctx = Context.as_of(as_of, proto.period, period_start)
    fired_list = ("flatten([" + ", ".join(f"CASE WHEN {batch.ident(k)} THEN [{batch.lit(k)}] ELSE []::VARCHAR[] END"
                                          for k in keys) + "])") if keys else "[]::VARCHAR[]"
    con.execute(f"CREATE OR REPLACE TEMP TABLE cur AS SELECT o.*, p.practice, p.mdt, p.locality, "
                f"coalesce(p.death_date <= {batch.lit(ctx.reference_date)}, FALSE) AS deceased "
                f"FROM ({body}) o JOIN {tables['patients']} p USING (pid)")
    meta = ", ".join([batch.lit(run), batch.lit(proto.id), batch.lit(proto.version), str(int(chunk))])
    reg = measures.register_sql(keys)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"fired": f"SELECT {meta}, nhs_number, practice, deceased, {fired_list} FROM cur",
             "registers": f"SELECT {meta}, practice, count(*) FILTER (WHERE {reg}) FROM cur GROUP BY practice",
             "measures": measures.measures_select(proto, meta, "cur", values),
             "measure_values": measures.measure_values_select(proto, meta, "cur", values)}
    files = {}
    for table, sql in parts.items():
        if sql:
            files[table] = str(out / f"{table}.parquet")
            con.execute(f"COPY ({sql}) TO '{files[table]}' (FORMAT parquet)")
    n, on_register = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {reg}) FROM cur").fetchone()
    con.execute("DROP TABLE cur")
    for t in vsm_tables:
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return {"protocol": proto.key, "id": proto.id, "version": proto.version, "chunk": chunk, "patients": n,
            "on_register": on_register, "files": files, "seconds": time.perf_counter() - t0}


class PatientColumns(NamedTuple):
    """A protocol compiled over the loaded chunk: one row per patient."""
    sql: str  # SELECT with pid, nhs_number, one boolean column per condition key and the measure values' columns
    keys: list[str]  # the condition keys (those boolean columns)
    temp_tables: set[str]  # temporary tables the query reads; drop them after use
    values: dict[str, tuple[str, str | None]]  # measure:<id>:value -> (its column, its presence column or None)


def patient_columns(con, proto: Protocol, as_of: dt.date, period_start: dt.date | None,
                    tables: dict[str, str], shared=None) -> PatientColumns:
    """`proto` compiled over `tables` (usually `batch.default_tables(CHUNK_PREFIX)` after load_chunk) as of
    `as_of`: the per-patient query with the condition keys that held and the measure values, which
    engine/engines/sql/measures.py counts. One query for most protocols; a protocol with a measure counted
    per episode is compiled in groups (batch.condition_groups): the steps of every episode in one query over
    (patient, episode) rows (batch.episode_table), the rest another, each group's columns kept in a temporary
    table and joined on pid."""
    groups = batch.condition_groups(proto)
    if groups == [None]:
        compiled = batch.prepare(con, proto, as_of, period_start, tables, shared=shared)
        return PatientColumns(compiled.sql, list(compiled.conditions), {compiled.vsm_table}, _value_cols(compiled))
    order = [k for g in groups for k in g]  # the keys in the order the groups give them, whatever computes them
    values: dict[str, tuple[str, str | None]] = {}
    names, drop = [], set()
    # every episode's steps in one query over (patient, episode) rows (batch.episode_table)
    per_episode = batch.episode_table(con, proto, as_of, period_start, tables, shared)
    if per_episode is not None:
        table, ep_keys, ep_drop = per_episode
        groups = [g for g in groups if not any("#" in k for k in g)]
        names.append((table, ep_keys))
        drop |= ep_drop
    for i, group in enumerate(groups):
        compiled = batch.prepare(con, proto, as_of, period_start, tables, group, shared)
        name = f"cur_group_{i}"
        cols = "".join(f", {batch.ident(k)}" for k in compiled.conditions + compiled.value_columns())
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT pid, nhs_number{cols} FROM ({compiled.sql})")
        values.update(_value_cols(compiled))
        names.append((name, compiled.conditions + compiled.value_columns()))
        drop |= {compiled.vsm_table, name}
    owner = {k: n for n, ks in names for k in ks}
    first = names[0][0]
    cols = [f"{owner[k]}.{batch.ident(k)}" for k in order]
    in_order = set(order)
    cols += [f"{n}.{batch.ident(k)}" for n, ks in names for k in ks if k not in in_order]  # the value columns
    select = ", ".join([f"{first}.pid", f"{first}.nhs_number"] + cols)
    joins = "".join(f" JOIN {n} ON {n}.pid = {first}.pid" for n, _ in names[1:])
    return PatientColumns(f"SELECT {select} FROM {first}{joins}", order, drop, values)


def _value_cols(compiled) -> dict[str, tuple[str, str | None]]:
    return compiled.value_sources()


def _take_part(con, run: str, part: dict) -> None:
    """One (protocol, chunk)'s rows and its run_chunks row, inside the chunk's transaction (_commit_chunk)."""
    key = [run, part["id"], part["version"], part["chunk"]]
    for t in ("fired", "measures", "measure_values", "registers", "run_chunks"):  # defensive: a chunk is written whole or not at all
        con.execute(f"DELETE FROM res.{t} WHERE run = ? AND protocol = ? AND version = ? AND chunk = ?", key)
    for table, path in part["files"].items():
        con.execute(f"INSERT INTO res.{table} SELECT * FROM read_parquet('{path}')")
    con.execute("INSERT INTO res.run_chunks VALUES (?, ?, ?, ?, ?, ?, now())", key + [part["patients"], part["seconds"]])


def _commit_chunk(con, run: str, parts: list[dict]) -> None:
    """Take one chunk's rows in (every protocol a worker evaluated over it, with their run_chunks rows) in one
    transaction: one COMMIT per chunk, not per (protocol, chunk) (the parent's commits were 2.9 of its 4.5 CPU s
    at 100,000 people, docs/population.md). A run killed at any point keeps whole chunks or nothing of them."""
    con.execute("BEGIN TRANSACTION")
    try:
        for part in parts:
            _take_part(con, run, part)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    for part in parts:
        for path in part["files"].values():
            Path(path).unlink(missing_ok=True)


# What forked workers inherit (set before the pool starts; protocols do not need pickling).
_JOB: dict = {}


def _chunk_job(task: tuple) -> list[dict]:
    """In a worker: load one chunk and run every pending protocol over it."""
    k, lo, hi, keys = task
    job = _JOB
    con = job.get("con")
    if con is None:
        con = job["con"] = open_population(job["data"], threads=job["threads"], memory_limit=job["memory_limit"],
                                           first=job["first"])
    t0 = time.perf_counter()
    load_chunk(con, lo, hi)
    # one value-set matching pass for every protocol over this chunk (engine/engines/sql/shared_matches.py)
    shared = batch.create_shared(con, [job["protocols"][key] for key in keys], job["as_of"], job["period_start"],
                                 batch.default_tables(CHUNK_PREFIX))
    load_s = time.perf_counter() - t0
    out = []
    for key in keys:
        proto = job["protocols"][key]
        try:
            part = _evaluate_chunk(con, job["run"], proto, k, job["as_of"], job["period_start"],
                                   job["parts"] / f"chunk-{k}" / key.replace("@", "_"), shared)
            part["seconds"] += load_s / len(keys)
        except NotImplementedError as e:
            part = {"protocol": key, "chunk": k, "error": str(e)}
        out.append(part)
    batch.drop_shared(con, shared)
    return out


def evaluate_population_run(data: Path, protocols: list[Protocol], as_of: dt.date, period_start: dt.date | None = None,
                            workers: int | None = None, results: Path | None = None, run: str | None = None,
                            chunk_size: int | None = None, memory_limit: str | None = None,
                            log=print, progress=None, first: int | None = None) -> dict:
    """Evaluate each protocol over the population at `data` chunk by chunk in `workers` processes (one
    DuckDB thread each: chunks are independent, so processes scale better than threads over one query);
    store results; return a summary. `progress(done, total)` is called for each (protocol, chunk), once its chunk
    is committed.
    `chunk_size`: patients per chunk (None: balanced_chunk, at most DEFAULT_CHUNK)."""
    import shutil
    import uuid
    from multiprocessing import get_context

    data = Path(data)
    results = Path(results) if results else (data if data.is_dir() else data.parent) / "results.duckdb"
    workers = max(1, workers or os.cpu_count() or 1)
    pop = open_population(data, threads=1, first=first)
    lo_pid, hi_pid, n_patients = pop.execute("SELECT coalesce(min(pid), 0), coalesce(max(pid), -1), count(*) "
                                             "FROM patients").fetchone()
    pop.close()
    con = batch.connect(threads=1)
    _open_results(con, results)
    run = run or run_id_for(as_of, period_start, protocols)
    row = con.execute("SELECT chunk_size FROM res.runs WHERE run = ?", [run]).fetchone()
    if chunk_size is None:
        chunk_size = balanced_chunk(hi_pid - lo_pid + 1, workers)
    if row is None:
        con.execute("INSERT INTO res.runs VALUES (?, ?, ?, ?, now(), NULL)", [run, as_of, period_start, chunk_size])
    else:
        chunk_size = int(row[0])  # a resumed run keeps its chunks, whatever was asked this time
    chunks = [(k, lo, lo + chunk_size) for k, lo in enumerate(range(lo_pid, hi_pid + 1, chunk_size))]
    done = {(p, c) for p, c in con.execute("SELECT protocol || '@' || version, chunk FROM res.run_chunks WHERE run = ?",
                                           [run]).fetchall()}
    finished = {r[0] for r in con.execute("SELECT protocol || '@' || version FROM res.run_protocols WHERE run = ?",
                                          [run]).fetchall()}
    con.close()  # no DuckDB instance open while worker processes fork
    todo = [p for p in protocols if p.key not in finished]
    for p in protocols:
        if p.key in finished:
            log(f"{p.key}: already done in run {run}, skipped")
    tasks = [(k, lo, hi, [p.key for p in todo if (p.key, k) not in done]) for k, lo, hi in chunks]
    total = len(todo) * len(chunks)
    step = total - sum(len(t[3]) for t in tasks)
    tasks = [t for t in tasks if t[3]]
    parts_root = results.parent / f".{results.name}.parts"
    shutil.rmtree(parts_root, ignore_errors=True)  # rows of an interrupted attempt (never committed)
    _JOB.clear()
    _JOB.update(data=data, first=first, threads=1, memory_limit=memory_limit, protocols={p.key: p for p in todo}, run=run,
                as_of=as_of, period_start=period_start, parts=parts_root / uuid.uuid4().hex)
    pool = get_context("fork").Pool(min(workers, len(tasks))) if workers > 1 and len(tasks) > 1 else None
    errors: dict[str, str] = {}
    t_run = time.perf_counter()
    con = batch.connect(threads=1)
    try:
        _open_results(con, results)
        for parts in (pool.imap_unordered(_chunk_job, tasks) if pool else map(_chunk_job, tasks)):
            for part in parts:
                if "error" in part:
                    if part["protocol"] not in errors:
                        log(f"{part['protocol']}: not evaluated: {part['error']}")
                    errors[part["protocol"]] = part["error"]
            _commit_chunk(con, run, [part for part in parts if "error" not in part])
            for part in parts:
                step += 1
                if progress:
                    progress(step, total)
            log(f"chunk {parts[0]['chunk'] + 1}/{len(chunks)} done ({len(parts)} protocols)")
    finally:
        if pool:
            pool.terminate()
            pool.join()
        _JOB.clear()
        shutil.rmtree(parts_root, ignore_errors=True)
    summary = {"run": run, "as_of": as_of.isoformat(), "results": str(results), "patients": n_patients,
               "chunks": len(chunks), "chunk_size": chunk_size, "workers": workers,
               "seconds": round(time.perf_counter() - t_run, 2), "protocols": []}
    for proto in protocols:
        if proto.key in finished:
            summary["protocols"].append({"protocol": proto.key, "skipped": True,
                                         "measures": _stored_measures(con, run, proto)})
            continue
        if proto.key in errors:
            summary["protocols"].append({"protocol": proto.key, "error": errors[proto.key]})
            continue
        key = [run, proto.id, proto.version]
        seconds, chunks_done = con.execute("SELECT coalesce(sum(seconds), 0), count(*) FROM res.run_chunks "
                                           "WHERE run = ? AND protocol = ? AND version = ?", key).fetchone()
        on_register = con.execute("SELECT coalesce(sum(patients), 0) FROM res.registers WHERE run = ? AND protocol = ? "
                                  "AND version = ?", key).fetchone()[0]
        if chunks_done == len(chunks):
            con.execute("INSERT INTO res.run_protocols VALUES (?, ?, ?, ?, ?, now())", key + [n_patients, seconds])
        entry = {"protocol": proto.key, "patients": n_patients, "on_register": int(on_register),
                 "worker_seconds": round(seconds, 2), "measures": _stored_measures(con, run, proto)}
        if proto.missing_clusters:  # declared codelists not supplied: what they block was not evaluated
            from engine.language.determinacy import blocked_by
            entry["cannot_determine"] = blocked_by(proto)
            if "population" in proto.undetermined:
                entry["on_register"] = None
        summary["protocols"].append(entry)
        log(f"{proto.key}: {n_patients} patients, "
            + (f"{on_register} on the register" if entry["on_register"] is not None else "register cannot be determined")
            + (f"; cannot determine (codelists not supplied): {entry['cannot_determine']}" if "cannot_determine" in entry else ""))
    con.execute("UPDATE res.runs SET finished = now() WHERE run = ?", [run])
    con.close()
    return summary
