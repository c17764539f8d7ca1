"""Benchmark: the batch engine over a synthetic population, against plain Python and durable-rules.

    carepath bench batch --patients 100000 [--json]        (or: python benchmarks/bench_batch.py ...)

One run measures, on the same machine and data:
- generate_seconds: writing the population (Parquet, worker processes); reused from
  benchmarks/.data/ when the same (patients, seed, as_of) was generated before (then null);
- load_seconds: Parquet -> DuckDB tables;
- seconds / patients_per_second: the batch engine, every patient's summary fact and fired
  conditions for one protocol (compile + one query, results materialised);
- reference_seconds: the same lowered conditions evaluated in plain Python (lowering.eval_lowered)
  over the same summary facts (fetching them is timed apart: reference_fetch_seconds), with the
  fired sets compared patient by patient (reference_mismatches must be 0);
- durable_sample: the per-patient durable-rules engine on the first patients (derive + rules),
  compared with the batch engine (mismatches must be 0);
- peak_rss_mib of this process and its workers.
Results go to benchmarks/results/batch-<patients>-<timestamp>.json with machine information.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "benchmarks" / ".data"


def machine() -> dict:
    import duckdb

    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": mem,
            "python": platform.python_version(), "duckdb": duckdb.__version__, "commit": commit}


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def finish(out: dict, name: str, write: bool = True) -> dict:
    """Add peak RSS, machine information and the finishing time to a benchmark's result; with
    `write`, save it as benchmarks/results/<name>-<timestamp>.json (its path in out["written"])."""
    out["peak_rss_mib"] = peak_rss_mib()
    out["machine"] = machine()
    now = dt.datetime.now(dt.timezone.utc)
    out["finished"] = now.isoformat(timespec="seconds")
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(out, indent=2) + "\n")
        out["written"] = str(path.relative_to(ROOT))
    return out


def run(patients: int, seed: int = 1, as_of: dt.date = dt.date(2026, 4, 30), workers: int | None = None,
        protocol_id: str = "t2dm-annual-care", durable_sample: int = 2000, reference: bool = True,
        data_dir: Path | None = None, write: bool = True, log=lambda m: None) -> dict:
    from engine.engines.duckdb import batch
    from engine.engines.derive import Context
    from engine.evaluation.evaluator import fired_conditions
    from engine.ir.lowering import lowered_for
    from engine.ir.lowering import eval_lowered
    from engine.engines.duckdb.columnar import has_population, load_parquet
    from engine.synthetic.generate import generate, write_population
    from engine.language.library import load_library

    workers = workers or os.cpu_count() or 1
    lib = load_library([ROOT / "protocols"])
    proto = lib.find(protocol_id)
    if proto is None:
        raise SystemExit(f"no protocol {protocol_id!r} under {ROOT / 'protocols'}")
    out: dict = {"benchmark": "batch", "protocol": proto.key, "patients": patients, "seed": seed,
                 "as_of": as_of.isoformat(), "workers": workers}

    import hashlib

    import engine.synthetic.generate as gen_module
    version = hashlib.sha1(Path(gen_module.__file__).read_bytes()).hexdigest()[:8]  # data follows the generator code
    data = Path(data_dir) if data_dir else DATA / f"pop-{patients}-s{seed}-{as_of.isoformat()}-g{version}"
    if has_population(data):
        out["generate_seconds"] = None
        log(f"reusing {data}")
    else:
        log(f"generating {patients} patients into {data} ...")
        g = write_population(data, patients, seed=seed, as_of=as_of, workers=workers)
        out["generate_seconds"] = g["generate_seconds"]
        out["generate_total_seconds"] = g["total_seconds"]

    con = batch.connect(threads=workers)
    t0 = time.perf_counter()
    load_parquet(con, data, views=False)
    out["load_seconds"] = round(time.perf_counter() - t0, 3)
    out["facts"] = con.execute("SELECT count(*) FROM facts").fetchone()[0]

    t0, c0 = time.perf_counter(), time.process_time()
    compiled = batch.prepare(con, proto, as_of)
    con.execute(f"CREATE TEMP TABLE bench_out AS {compiled.sql}")
    seconds = time.perf_counter() - t0
    out["seconds"] = round(seconds, 3)
    out["cpu_seconds"] = round(time.process_time() - c0, 3)  # all DuckDB threads; less sensitive to other load
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    out["patients_per_second"] = round(patients / seconds) if seconds else None
    keys, fields = compiled.conditions, list(compiled.fields)
    out["conditions"], out["summary_fields"] = len(keys), len(fields)
    out["on_register"] = con.execute('SELECT count(*) FROM bench_out WHERE "population"').fetchone()[0]
    log(f"batch: {patients} patients in {seconds:.2f} s")

    if reference:
        lowered = lowered_for(proto)
        cols = ", ".join(batch.ident(c) for c in ["nhs_number"] + keys + fields)
        cur = con.execute(f"SELECT {cols} FROM bench_out")
        eval_s = fetch_s = 0.0
        mismatches = n = 0
        while True:
            t0 = time.perf_counter()
            rows = cur.fetchmany(50000)
            if not rows:
                break
            facts = [dict(zip(fields, r[1 + len(keys):])) for r in rows]
            t1 = time.perf_counter()
            fired = [{k for k, t in lowered.conditions.items() if eval_lowered(t, f)} for f in facts]
            t2 = time.perf_counter()
            fetch_s += t1 - t0
            eval_s += t2 - t1
            for r, f in zip(rows, fired):
                if f != {k for k, v in zip(keys, r[1:1 + len(keys)]) if v}:
                    mismatches += 1
            n += len(rows)
        out["reference_seconds"] = round(eval_s, 3)
        out["reference_patients_per_second"] = round(n / eval_s) if eval_s else None
        out["reference_fetch_seconds"] = round(fetch_s, 3)
        out["reference_mismatches"] = mismatches
        log(f"plain Python over the same summaries: {eval_s:.2f} s, {mismatches} mismatches")

    if durable_sample:
        k = min(durable_sample, patients)
        records = list(generate(k, seed=seed, as_of=as_of))
        ctx = Context.as_of(as_of, proto.period)
        rows = con.execute("SELECT nhs_number, " + ", ".join(batch.ident(c) for c in keys)
                           + f" FROM bench_out WHERE pid < {k}").fetchall()
        got = {r[0]: {c for c, v in zip(keys, r[1:]) if v} for r in rows}
        from engine.engines.durable.rules import RuleEngineError

        t0 = time.perf_counter()
        durable, errors = {}, []
        for rec in records:
            try:
                durable[rec.patient.nhs_number] = fired_conditions(rec, proto, ctx, engine="durable")[0]
            except RuleEngineError as e:  # seen once in a long run; reported, not hidden
                errors.append(str(e))
        ds = time.perf_counter() - t0
        out["durable_sample"] = {"patients": k, "seconds": round(ds, 3), "patients_per_second": round(k / ds) if ds else None,
                                 "mismatches": sum(1 for nhs, f in durable.items() if got.get(nhs) != f),
                                 "rule_engine_errors": errors}
        log(f"durable-rules on {k} patients: {ds:.2f} s, {out['durable_sample']['mismatches']} mismatches")
    con.close()
    return finish(out, f"batch-{patients}", write)
