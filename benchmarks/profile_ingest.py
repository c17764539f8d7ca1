"""Where the CPU of one `POST /ingest/records` goes, in-process (issue 17, P2).

    run(patients=5000, requests=200, database_url=None)      (carepath bench ingest-profile ...)

The registry of `carepath bench incremental` / `ingest-workers` (engine.app.registry_load: the
generated population bulk-loaded, one MDT evaluated; SQLite under benchmarks/.data/ by default, or
`database_url`, e.g. PostgreSQL). The MDT's living evaluated patients are the targets (at most
`targets`), re-evaluated once first, as the service leaves them (stored results with their inputs
digest), so what is measured is the steady state.

The real app (`api.app.create_app`, clock fixed to `as_of` 12:00) is called in this process through
httpx's ASGI transport, with FastAPI's thread pool replaced by a direct call, so the whole request -
body validation, the login check, the route, the response - runs in the main thread where cProfile
sees it. Each request is one new HbA1c or blood pressure for one target patient (the fact maker of
bench_incremental), checked as the benchmark checks it (re-evaluated, with its diff).

Measured over `requests` requests after a warm-up: process CPU seconds per request (this process:
the service's work and the in-process client's, no HTTP server, no PostgreSQL server CPU), wall
seconds per request, and SQL statements per request (an SQLAlchemy `before_cursor_execute` listener
on every engine; `by_kind` counts SELECT / INSERT / UPDATE / DELETE / other). With `profile`, a
second pass of the same size under cProfile (its overhead is in no figure above): the top functions
by cumulative and by own time, and the time under a few named stages of the request.

Results: benchmarks/results/ingest-profile-<patients>-<database>-<timestamp>.json.
"""
from __future__ import annotations

import asyncio
import collections
import cProfile
import datetime as dt
import io
import os
import pstats
import random
import time

from benchmarks.bench_batch import ROOT, finish
from benchmarks.bench_incremental import USERS, FactMaker, _check, _ensure_user, _prime, _targets, build_registry

# Stages of a request, by the function whose cumulative time is the stage's (file suffix, function).
STAGES = {
    "whole request (ASGI app)": ("fastapi/applications.py", "__call__"),
    "route: store the facts (ingest_records)": ("engine/registry/ingest.py", "ingest_records"),
    "route: evaluate (drain -> evaluate_one)": ("engine/app/service.py", "evaluate_one"),
    "  read the record and stored rows (_read)": ("engine/app/service.py", "_read"),
    "  evaluate what was read (_compute)": ("engine/app/service.py", "_compute"),
    "    inputs digests (evaluation_inputs)": ("engine/app/service.py", "evaluation_inputs"),
    "    reuse checks (_reusable)": ("engine/app/service.py", "_reusable"),
    "    derive + rules + outputs (evaluate)": ("engine/evaluation/evaluator.py", "evaluate"),
    "      why-lines (clauses)": ("engine/evaluation/explain.py", "clauses"),
    "      evidence items (evidence_items)": ("engine/evaluation/explain.py", "evidence_items"),
    "  write the outputs (_write)": ("engine/app/service.py", "_write"),
    "    store the evaluation rows (_store_evaluation)": ("engine/app/service.py", "_store_evaluation"),
    "    reconcile tasks (_reconcile_tasks)": ("engine/app/service.py", "_reconcile_tasks"),
    "    reconcile flags (_reconcile_flags)": ("engine/app/service.py", "_reconcile_flags"),
    "  commit": ("sqlalchemy/orm/session.py", "commit"),
    "route: the access log (log_access)": ("api/deps.py", "log_access"),
    "response model (serialize_response)": ("fastapi/routing.py", "serialize_response"),
}


# The same stages timed without a profiler (process CPU time around each call; cProfile's overhead is
# per Python call, so it inflates call-heavy code): (module, attribute) patched with a timing wrapper.
TIMED = {
    "route: store the facts (ingest_records)": ("api.routers.ingest", "ingest_records"),
    "route: evaluate (_evaluate: outbox + drain)": ("api.routers.ingest", "_evaluate"),
    "  read the record and stored rows (_read)": ("engine.app.service", "_read"),
    "  evaluate what was read (_compute)": ("engine.app.service", "_compute"),
    "    inputs digests (evaluation_inputs)": ("engine.app.service", "evaluation_inputs"),
    "    reuse checks (_reusable: stored results validated)": ("engine.app.service", "_reusable"),
    "    derive + rules + outputs (evaluate)": ("engine.app.service", "evaluate"),
    "  write the outputs (_write)": ("engine.app.service", "_write"),
    "    store tasks, flags, evaluations (store_evaluation)": ("engine.app.service", "store_evaluation"),
    "route: the access log (log_access)": ("api.routers.ingest", "log_access"),
}


class StageTimer:
    def __init__(self):
        self.cpu: collections.Counter = collections.Counter()
        self.saved: list = []

    def __enter__(self):
        import functools
        import importlib
        for label, (module, name) in TIMED.items():
            mod = importlib.import_module(module)
            fn = getattr(mod, name)

            def wrap(fn=fn, label=label):
                @functools.wraps(fn)
                def timed(*a, **k):
                    c0 = time.process_time()
                    try:
                        return fn(*a, **k)
                    finally:
                        self.cpu[label] += time.process_time() - c0
                return timed
            setattr(mod, name, wrap())
            self.saved.append((mod, name, fn))
        return self

    def __exit__(self, *exc):
        for mod, name, fn in self.saved:
            setattr(mod, name, fn)


class StatementCounter:
    """Counts the SQL statements every engine of this process sends (SQLAlchemy event on Engine)."""

    def __init__(self):
        self.by_kind: collections.Counter = collections.Counter()
        self.on = False

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if self.on:
            word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
            self.by_kind[word if word in ("SELECT", "INSERT", "UPDATE", "DELETE") else "other"] += 1

    def __enter__(self):
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        event.listen(Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc):
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        event.remove(Engine, "before_cursor_execute", self)


def _inline_threadpool():
    """Run FastAPI's sync endpoints and dependencies in the calling thread (so cProfile sees them)."""
    import fastapi.dependencies.utils as dep_utils
    import fastapi.routing as routing

    async def inline(func, *args, **kwargs):
        return func(*args, **kwargs)

    for mod in (routing, dep_utils):
        if hasattr(mod, "run_in_threadpool"):
            mod.run_in_threadpool = inline


def _stages(stats: pstats.Stats, n: int) -> dict:
    out = {}
    for label, (suffix, func) in STAGES.items():
        cum = sum(v[3] for (path, _line, name), v in stats.stats.items() if name == func and path.endswith(suffix))
        out[label] = round(cum / n * 1000, 2)
    return out


def _top(stats: pstats.Stats, key: str, n: int, limit: int = 40) -> list[str]:
    buf = io.StringIO()
    stats.stream = buf
    stats.sort_stats(key).print_stats(limit)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return [line.replace(str(ROOT) + "/", "") for line in lines[start:] if line.strip()]


def run(patients: int = 5000, requests: int = 200, seed: int = 1, as_of: dt.date = dt.date(2026, 11, 20),
        database_url: str | None = None, targets: int = 500, profile: bool = True, warmup: int = 20,
        prime: bool = True, note: str = "", dump: str | None = None, write: bool = True, log=lambda m: None) -> dict:
    import httpx

    from engine.registry.db import _normalise

    built = build_registry(patients, seed, as_of, None, database_url, log)
    url, mdt = _normalise(built["url"]), built["mdt"]
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    _ensure_user(url)
    chosen = _targets(url, mdt)
    if len(chosen) > targets:
        chosen = random.Random(seed).sample(chosen, targets)
    now = dt.datetime.combine(as_of, dt.time(12, 0))
    if prime:  # (not needed again on a copy of a registry primed before)
        log(f"priming {len(chosen)} target patients ...")
    prime = _prime(url, chosen, now) if prime else None

    os.environ.setdefault("CAREPATH_COOKIE_SECURE", "0")
    _inline_threadpool()
    from api.app import create_app
    app = create_app(url, ROOT / "protocols", clock=lambda: now, migrate=False)
    maker = FactMaker(as_of, seed)
    rng = random.Random(seed + 1)
    out: dict = {"benchmark": "ingest-profile", "patients": patients, "seed": seed, "as_of": as_of.isoformat(),
                 "database": dialect, "mdt": mdt, "target_patients": len(chosen), "requests": requests,
                 "prime_seconds": prime, "note": note, "cpus": os.cpu_count(),
                 "load_average_1min_before": round(os.getloadavg()[0], 2)}

    async def session(n: int, prof: cProfile.Profile | None, counter: StatementCounter | None) -> dict:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            r = await client.post("/auth/token", data={"username": "bench.ingest", "password": USERS["bench.ingest"][1]})
            r.raise_for_status()
            client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            problems, wall = [], 0.0
            c0 = time.process_time()
            for _ in range(n):
                t = rng.choice(chosen)
                _kind, body = maker.body(t)
                if counter is not None:
                    counter.on = True
                if prof is not None:
                    prof.enable()
                s = time.perf_counter()
                resp = await client.post("/ingest/records", json=body)
                wall += time.perf_counter() - s
                if prof is not None:
                    prof.disable()
                if counter is not None:
                    counter.on = False
                bad = _check(resp, t["nhs_number"])
                if bad:
                    problems.append(bad)
            return {"cpu": time.process_time() - c0, "wall": wall, "problems": problems}

    async def main():
        async with app.router.lifespan_context(app):
            await session(warmup, None, None)
            with StatementCounter() as counter, StageTimer() as stages:
                got = await session(requests, None, counter)
            out["cpu_ms_per_request"] = round(got["cpu"] / requests * 1000, 2)
            out["wall_ms_per_request"] = round(got["wall"] / requests * 1000, 2)
            out["statements_per_request"] = round(sum(counter.by_kind.values()) / requests, 2)
            out["statements_by_kind_per_request"] = {k: round(v / requests, 2) for k, v in sorted(counter.by_kind.items())}
            out["stages_cpu_ms_per_request"] = {label: round(stages.cpu[label] / requests * 1000, 2) for label in TIMED}
            out["problems"] = len(got["problems"])
            out["problem_examples"] = got["problems"][:5]
            log(f"{requests} requests: {out['cpu_ms_per_request']} ms CPU, {out['wall_ms_per_request']} ms wall, "
                f"{out['statements_per_request']} statements per request, {out['problems']} problems")
            for label, ms in out["stages_cpu_ms_per_request"].items():
                log(f"  {ms:8.2f} ms CPU  {label}")
            if profile:
                prof = cProfile.Profile(time.process_time)  # CPU time: the machine is shared
                got = await session(requests, prof, None)
                stats = pstats.Stats(prof)
                if dump:
                    stats.dump_stats(dump)
                out["profile"] = {"requests": requests, "note": "cProfile times per request, ms (profiler overhead included)",
                                  "stages_ms": _stages(stats, requests),
                                  "top_cumulative": _top(stats, "cumulative", requests),
                                  "top_own_time": _top(stats, "tottime", requests)}
                for label, ms in out["profile"]["stages_ms"].items():
                    log(f"  {ms:8.2f} ms  {label}")

    asyncio.run(main())
    out["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    app.state.carepath.engines.dispose()
    return finish(out, f"ingest-profile-{patients}-{dialect}", write)
