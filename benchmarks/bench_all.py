"""Every benchmark of issue 8 in one go, one after the other (never two at once: they would measure
each other), with one summary file: `carepath bench all` / `make bench`.

    P1 + scaling + P4   benchmarks/bench_population.py
    P2                  benchmarks/bench_incremental.py
    P3                  benchmarks/bench_worklist.py
    memory (1M evals)   benchmarks/bench_durable.py
    one protocol        benchmarks/bench_batch.py (the batch engine vs plain Python, durable-rules sample)

Each writes its own file in benchmarks/results/ too; the summary (`all-<patients>-<time>.json`)
lists every target beside the measured figure and whether it was met.
"""
from __future__ import annotations

import datetime as dt
import os
import time
import traceback

from benchmarks.bench_batch import finish

AS_OF = dt.date(2026, 11, 20)


def _get(d: dict | None, *path):
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def summary(res: dict) -> list[dict]:
    """(figure, target, measured, met) for every target of issue 8 found in the results."""
    pop, inc, wl, dur = (res.get(k) or {} for k in ("population", "incremental", "worklist", "durable"))
    rows = []

    def add(figure, target, measured, met, note=None):
        rows.append({"figure": figure, "target": target, "measured": measured,
                     "met": None if measured is None else bool(met), **({"note": note} if note else {})})

    s = _get(pop, "p1", "seconds")
    add("P1 all protocols, seconds", 60, s, s is not None and s <= 60,
        f"{_get(pop, 'p1', 'patients')} patients x {_get(pop, 'p1', 'protocols')} protocols")
    m = _get(pop, "p1", "peak_rss_mib")
    add("P1 peak RSS of the process tree, MiB", 4096, m, m is not None and m <= 4096)
    p99 = _get(inc, "open_loop", "p99_ms")
    add("P2 incremental p99 ms at the target rate", 50, p99, _get(inc, "target", "met_here"),
        f"rate {_get(inc, 'open_loop', 'rate_target')}/s (achieved {_get(inc, 'open_loop', 'achieved_rate')}/s), registry "
        f"{_get(inc, 'patients')} patients; sustained max {_get(inc, 'max_sustained_per_second')}/s")
    p95 = _get(wl, "worklist", "p95_ms")
    add("P3 worklist first page p95 ms", 100, p95, p95 is not None and p95 <= 100,
        f"registry {_get(wl, 'patients')} patients; MDT {_get(wl, 'mdt')} with {_get(wl, 'mdt_patients')} patients"
        + (f", {_get(wl, 'mdt_patients_evaluated')} evaluated" if _get(wl, "mdt_patients_evaluated") is not None else ""))
    p4 = _get(pop, "p4", "seconds_worst")
    add("P4 one measure by practice, seconds", 2.0, p4, p4 is not None and p4 <= 2.0)
    v = _get(dur, "verdict")
    add("durable-rules memory over evaluations", "flat", v, v == "flat", f"{_get(dur, 'evaluations_done')} evaluations")
    return rows


def combine(files: list, write: bool = True) -> dict:
    """The summary file from benchmark result files written earlier (each benchmark's own JSON), for
    when they were run one by one."""
    import json
    from pathlib import Path

    results, sources = {}, {}
    for f in files:
        data = json.loads(Path(f).read_text())
        name = data.get("benchmark")
        if name in ("population", "worklist", "incremental", "durable", "batch"):
            results[name], sources[name] = data, str(f)
    out = {"benchmark": "all", "patients": (results.get("population") or {}).get("patients"), "combined_from": sources,
           "summary": summary(results), "results": results}
    return finish(out, f"all-{out['patients']}", write)


def run(patients: int = 750_000, seed: int = 1, as_of: dt.date = AS_OF, workers: int | None = None,
        evaluations: int = 1_000_000, incremental_seconds: float = 30, worklist_patients: int | None = None,
        skip: tuple[str, ...] = (), write: bool = True, log=lambda m: None) -> dict:
    from benchmarks import bench_batch as bench
    from benchmarks import bench_durable
    from benchmarks import bench_incremental
    from benchmarks import bench_population
    from benchmarks import bench_worklist
    workers = workers or os.cpu_count() or 1
    steps = {
        "population": lambda: bench_population.run(patients, seed, as_of, workers, log=log),
        "worklist": lambda: bench_worklist.run(worklist_patients or patients, seed, as_of, log=log),
        "incremental": lambda: bench_incremental.run(worklist_patients or patients, seed, as_of,
                                                     seconds=incremental_seconds, log=log),
        "durable": lambda: bench_durable.run(evaluations, patients, seed, as_of, workers, log=log),
        "batch": lambda: bench.run(patients, seed, as_of, workers, log=log),
    }
    out: dict = {"benchmark": "all", "patients": patients, "seed": seed, "as_of": as_of.isoformat(), "steps": {}}
    results: dict = {}
    for name, step in steps.items():
        if name in skip:
            continue
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            results[name] = step()
            out["steps"][name] = {"seconds": round(time.perf_counter() - t0, 1), "written": results[name].get("written")}
        except Exception as e:  # one benchmark failing must not hide the others' figures
            out["steps"][name] = {"seconds": round(time.perf_counter() - t0, 1), "error": f"{type(e).__name__}: {e}",
                                  "traceback": traceback.format_exc(limit=5)}
            log(f"{name} failed: {e}")
    out["summary"] = summary(results)
    out["results"] = results
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    return finish(out, f"all-{patients}", write)
