"""The outcome measures at scale (issue 19): pilot-outcomes month by month over a population with the
DuckDB batch engine (engine/app/outcomes/protocol_route.py), into the outcome table.

    carepath bench outcomes --patients 100000 --months 12 [--data DIR] [--workers 2]

Times the whole route (chunks loaded, their facts matched to the value sets once per chunk, one compiled query
per chunk and month, sums by practice, age band, sex and cohort) end to end, with the CPU seconds of the
workers, the machine's load average before and after (the machine may be shared), and a linear extrapolation
to 750,000 people (the route is linear in people: chunks are independent and the per-chunk cost is per patient
plus a fixed compile cost per month).
"""
from __future__ import annotations

import datetime as dt
import os
import resource
import time
from pathlib import Path

from benchmarks.bench_batch import DATA, ROOT, finish

AS_OF = dt.date(2026, 11, 30)
TARGET_PATIENTS, TARGET_SECONDS = 750_000, 180  # the population benchmark's P1 target (benchmarks/bench_population.py)


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run(patients: int = 100_000, months: int = 12, seed: int = 1, as_of: dt.date = AS_OF, data: Path | None = None,
        workers: int = 2, chunk: int = 62_500, write: bool = True, log=lambda m: None) -> dict:
    from engine.app.outcomes.protocol_route import from_population
    from engine.engines.duckdb.columnar import has_population
    from engine.language.library import load_library

    data = Path(data) if data else DATA / f"outcomes-{patients}-{seed}-{as_of.isoformat()}"
    gen_s = None
    if not has_population(data):
        from engine.synthetic.generate import write_population

        t0 = time.perf_counter()
        write_population(data, patients, seed=seed, as_of=as_of, workers=workers)
        gen_s = round(time.perf_counter() - t0, 1)
    proto = load_library([ROOT / "protocols"]).find("pilot-outcomes")
    load_before = os.getloadavg()
    cpu0, t0 = _cpu(), time.perf_counter()
    table = from_population(data, proto, as_of, months=months, chunk_size=chunk, workers=workers, log=log)
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    load_after = os.getloadavg()
    per_patient = seconds / max(table.people, 1)
    admissions = sum(sum(c.counts["emergency_admission"]) for k, c in table.cells.items() if k[3] == "75-plus")
    out = {"benchmark": "outcomes", "protocol": proto.key, "patients": table.people, "months": months, "seed": seed,
           "as_of": as_of.isoformat(), "workers": workers, "chunk": chunk, "generate_seconds": gen_s,
           "data": str(data.resolve().relative_to(ROOT)) if data.resolve().is_relative_to(ROOT) else f"(outside the repository) {data.name}",
           "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
           "chunk_load_worker_seconds": round(table.timings["load_seconds"], 2),
           "month_query_worker_seconds": round(table.timings["month_seconds"], 2),
           "per_month_seconds": round(seconds / months, 2),
           "cells": len(table.cells), "admissions_75_plus": admissions,
           "unavailable": table.unavailable,
           "load_average_before": [round(x, 1) for x in load_before],
           "load_average_after": [round(x, 1) for x in load_after],
           "extrapolated": {"patients": TARGET_PATIENTS,
                            "seconds_linear": round(per_patient * TARGET_PATIENTS, 1),
                            # CPU seconds per patient spread over `workers` otherwise idle cores: the time on a
                            # machine not shared with other work
                            "seconds_from_cpu_idle_cores": round(cpu / max(table.people, 1) * TARGET_PATIENTS
                                                                 / max(1, min(workers, os.cpu_count() or 1)), 1),
                            "target_seconds": TARGET_SECONDS,
                            "note": "linear in people at the same load and workers; the machine was shared "
                                    "(load average above) so an idle 2-core run would be faster"}}
    return finish(out, f"outcomes-{table.people}", write)
