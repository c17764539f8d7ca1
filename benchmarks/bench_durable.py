"""Benchmark: memory and speed of the per-patient durable-rules engine over a million evaluations.

    python benchmarks/bench_durable.py --evaluations 1000000 [--patients 750000]   (prints one JSON object)

Summary facts come from the batch engine (engine/engines/duckdb/batch.py: its compiled query gives one row
per patient with every summary-fact field and the fired condition columns) over a synthetic
population (generated once and reused from benchmarks/.data/, as bench.py does), for every protocol
in force that the batch engine compiles. `evaluations` summary facts — the first patients of each
protocol in turn, chunk by chunk, cycling over the patients if the population is smaller — go through
durable-rules in worker processes (engine/engines/durable/pool.py: one fresh session per
evaluation, state deleted after it). For every evaluation the worker also evaluates the same lowered
conditions in plain Python (lowering.eval_lowered, timed apart) and compares three fired sets:
durable-rules, plain Python and the batch engine's columns (mismatches must be 0).

Each worker samples its own VmRSS and RssAnon (/proc/self/status) after its rulesets are created,
every `sample_every` evaluations and at the end. growth_mib is, per worker, RSS at the end minus RSS
at the first sample at or past 10 % of that worker's evaluations (the allocator's and the engine's
warm-up are over by then). Verdict "flat" when every worker grew by less than FLAT_MIB: a leak of
one durable-rules session state (~1.1 MB, design.md) per 20,000 evaluations, or of ~24 bytes per
evaluation, over the last 900,000 of a million evaluations, is already more than that; RSS noise
from Python's allocator is a few MiB.
Results go to benchmarks/results/durable-<evaluations>-<timestamp>.json with machine information.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from benchmarks.bench_batch import DATA, ROOT, finish, peak_rss_mib

FLAT_MIB = 20.0


def population_dir(patients: int, seed: int, as_of: dt.date) -> Path:
    """The cached population folder, named as bench.py names it (the data follows the generator's code)."""
    import hashlib

    import engine.synthetic.generate as gen_module
    version = hashlib.sha1(Path(gen_module.__file__).read_bytes()).hexdigest()[:8]
    return DATA / f"pop-{patients}-s{seed}-{as_of.isoformat()}-g{version}"


def growth(samples: list[tuple[int, float, float]]) -> dict:
    """RSS at the 10 % point and at the end of one worker's series, and the growth between them."""
    total = samples[-1][0]
    after = [s for s in samples if s[0] > 0 and s[0] >= 0.1 * total] or samples[-1:]
    p10, end = after[0], samples[-1]
    evals = end[0] - p10[0]
    return {"evaluations": total, "rss_start_mib": samples[0][1], "rss_10pct_mib": p10[1], "rss_end_mib": end[1],
            "rss_max_mib": max(s[1] for s in samples), "growth_mib": round(end[1] - p10[1], 1),
            "anon_growth_mib": round(end[2] - p10[2], 1),
            "growth_bytes_per_evaluation": round((end[1] - p10[1]) * 1048576 / evals, 2) if evals else None,
            "from_evaluation": p10[0], "to_evaluation": end[0]}


def run(evaluations: int = 1_000_000, patients: int = 750_000, seed: int = 1, as_of: dt.date = dt.date(2026, 11, 20),
        workers: int = 2, protocols: list[str] | None = None, chunk_size: int = 1000, sample_every: int | None = None,
        data_dir: Path | None = None, write: bool = True, log=lambda m: None) -> dict:
    from engine.engines.duckdb import batch
    from engine.engines.duckdb.columnar import has_population, load_parquet
    from engine.engines.durable.pool import Chunk, DurablePool
    from engine.synthetic.generate import write_population
    from engine.language.library import load_library

    lib = load_library([ROOT / "protocols"])
    if protocols:
        chosen = [lib.find(p) for p in protocols]
        if None in chosen:
            raise SystemExit(f"unknown protocol in {protocols}")
    else:
        chosen = lib.in_force(as_of)
    sample_every = sample_every or max(1000, min(50_000, evaluations // (workers * 10)))
    out: dict = {"benchmark": "durable", "evaluations": evaluations, "patients": patients, "seed": seed,
                 "as_of": as_of.isoformat(), "workers": workers, "chunk_size": chunk_size, "sample_every": sample_every,
                 "flat_threshold_mib": FLAT_MIB}
    # Workers first, while this process is small: a forked worker's RSS starts at its parent's.
    pool = DurablePool(chosen, workers=workers, sample_every=sample_every, check=True, keep_fired=False, timeout=600)
    try:
        data = Path(data_dir) if data_dir else population_dir(patients, seed, as_of)
        if has_population(data):
            out["generate_seconds"] = None
            log(f"reusing {data}")
        else:
            log(f"generating {patients} patients into {data} ...")
            out["generate_seconds"] = write_population(data, patients, seed=seed, as_of=as_of, workers=workers)["generate_seconds"]

        # Summary facts from the batch engine, for the first patients only (as many as the quota needs).
        t0 = time.perf_counter()
        con = batch.connect(threads=workers)
        load_parquet(con, data)  # views over the Parquet files
        per_protocol = -(-evaluations // max(1, len(chosen)))
        first = min(patients, per_protocol)
        for t in ("patients", "facts", "fact_codings", "fact_attrs"):
            con.execute(f'CREATE TABLE "sub_{t}" AS SELECT * FROM "{t}" WHERE pid < {first}')
        tables = batch.default_tables("sub_")
        sources, skipped = [], {}
        for proto in chosen:
            try:
                compiled = batch.prepare(con, proto, as_of, tables=tables)
            except NotImplementedError as e:
                skipped[proto.key] = str(e)
                continue
            table = f"dr_{len(sources)}"
            flags = " || ".join(f"CASE WHEN {batch.ident(k)} THEN '1' ELSE '0' END" for k in compiled.conditions) or "''"
            fields = list(compiled.fields)
            cols = ", ".join(batch.ident(f) for f in fields)
            con.execute(f"CREATE TABLE {table} AS SELECT row_number() OVER (ORDER BY pid) - 1 AS rn, nhs_number, "
                        f"{flags} AS expected{', ' if cols else ''}{cols} FROM ({compiled.sql}) q")
            n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            sources.append({"key": proto.key, "table": table, "rows": n, "fields": tuple(fields),
                            "conditions": tuple(compiled.conditions), "cols": cols})
        for t in ("patients", "facts", "fact_codings", "fact_attrs"):
            con.execute(f'DROP TABLE "sub_{t}"')
        out["facts_seconds"] = round(time.perf_counter() - t0, 2)
        if not sources:
            raise SystemExit("no protocol the batch engine compiles")
        quota = {s["key"]: evaluations // len(sources) + (1 if i < evaluations % len(sources) else 0)
                 for i, s in enumerate(sources)}
        out["protocols"] = [{"protocol": s["key"], "patients": s["rows"], "evaluations": quota[s["key"]],
                             "conditions": len(s["conditions"]), "summary_fields": len(s["fields"])} for s in sources]
        out["protocols_skipped"] = skipped
        log(f"summary facts for {len(sources)} protocols ({first} patients each) in {out['facts_seconds']} s")

        def chunks():
            pos = {s["key"]: 0 for s in sources}
            while True:
                sent = False
                for s in sources:
                    key, n = s["key"], s["rows"]
                    if pos[key] >= quota[key] or n == 0:
                        continue
                    start = pos[key] % n
                    take = min(chunk_size, n - start, quota[key] - pos[key])
                    rows = con.execute(f"SELECT nhs_number, expected{', ' if s['cols'] else ''}{s['cols']} FROM {s['table']} "
                                       f"WHERE rn >= {start} AND rn < {start + take} ORDER BY rn").fetchall()
                    pos[key] += take
                    sent = True
                    yield Chunk("rows", (key,), rows, s["fields"], s["conditions"])
                if not sent:
                    return

        log(f"{evaluations} evaluations through durable-rules in {workers} worker processes ...")
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = pool.run(chunks())
        seconds = time.perf_counter() - t0
        con.close()
    finally:
        pool.close()
    res = pool.result
    out["seconds"] = round(seconds, 2)
    out["load_average_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    out["evaluations_done"] = res.evaluations
    out["evaluations_per_second"] = round(res.evaluations / seconds) if seconds else None
    out["durable_seconds"] = round(res.durable_seconds, 2)  # inside durable-rules, summed over workers
    out["durable_evaluations_per_core_second"] = round(res.evaluations / res.durable_seconds) if res.durable_seconds else None
    out["reference_seconds"] = round(res.reference_seconds, 2)
    out["reference_evaluations_per_core_second"] = (round(res.evaluations / res.reference_seconds)
                                                    if res.reference_seconds else None)
    out["reference_mismatches"] = res.reference_mismatches  # durable-rules vs plain Python, same fact
    out["batch_mismatches"] = res.expected_mismatches  # durable-rules vs the batch engine's fired columns
    out["mismatch_examples"] = res.mismatch_examples
    out["failures"] = len(res.failures)
    out["failure_examples"] = res.failures[:10]
    out["worker_deaths"] = res.worker_deaths
    out["rss_series"] = {str(pid): [list(s) for s in series] for pid, series in res.samples.items()}
    out["memory"] = {str(pid): growth(series) for pid, series in res.samples.items() if series}
    worst = max((g["growth_mib"] for g in out["memory"].values()), default=None)
    out["max_growth_mib"] = worst
    out["verdict"] = "flat" if worst is not None and worst < FLAT_MIB else "growing"
    out["parent_peak_rss_mib"] = peak_rss_mib()
    log(f"{res.evaluations} evaluations in {seconds:.1f} s ({out['evaluations_per_second']}/s); memory {out['verdict']} "
        f"(max growth {worst} MiB); mismatches {res.reference_mismatches} / {res.expected_mismatches}; "
        f"failures {len(res.failures)}")
    return finish(out, f"durable-{evaluations}", write)
