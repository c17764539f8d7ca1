"""Benchmark P3 (issue 8): the first page of an MDT's worklist filtered by role, through real HTTP.

    benchmarks.bench_worklist.run(patients=750000)        target: p95 <= 100 ms

- The registry: engine.app.registry_load.build_registry (the generated population in the SQL
  registry, the largest MDT's patients evaluated with every protocol in force and their tasks,
  flags and evaluations stored); reused from benchmarks/.data/ when built before.
- The service: the real app (api.main:app) served by uvicorn in a subprocess on 127.0.0.1, one
  worker, against that registry; a user of role mdt-member scoped to the MDT (engine.app.users.add_user),
  logged in through POST /auth/token.
- The figure: `requests` GETs of /worklist?mdt=<mdt>&role=<role>&page=1&page_size=50 over one
  keep-alive connection, cycling over the roles that have open tasks in the MDT and three filter
  variants (role only; role + priority urgent/high; role + overdue=false). The endpoint has one sort order
  (priority, then due, then id). Each request counts the matches, fetches the page and appends an
  access-log row, as in service.
- References from the same run: GET /health (HTTP + app overhead, no database), and the same
  worklist queries (Filters.query: count + ordered page) executed in-process through SQLAlchemy,
  without HTTP, serialisation or the access log.
Results go to benchmarks/results/worklist-<patients>-<timestamp>.json with machine information.
"""
from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time

from sqlalchemy import text

from benchmarks.bench_batch import ROOT, finish
from engine.app.registry_load import AS_OF, build_registry, registry_counts

TARGET_P95_MS = 100.0
PAGE_SIZE = 50
VARIANTS = ({}, {"priority": ["urgent", "high"]}, {"overdue": "false"})


def _stats(ms: list[float]) -> dict:
    s = sorted(ms)

    def pct(p: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))], 2)

    return {"n": len(s), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "max_ms": round(s[-1], 2),
            "mean_ms": round(statistics.fmean(s), 2)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bench_user(url: str, mdt: str) -> tuple[str, str]:
    """An mdt-member scoped to the MDT, made (or given a fresh password) with the project's users code."""
    from sqlmodel import Session, select

    from engine.app.users import add_user, update_user
    from engine.registry.access import UserRow
    from engine.registry.db import make_engine

    username, password = f"bench.{mdt}", secrets.token_urlsafe(16)
    engine = make_engine(url)
    try:
        with Session(engine) as s:
            row = s.exec(select(UserRow).where(UserRow.username == username)).first()
            if row is None:
                add_user(s, username, password, "mdt-member", full_name=f"Benchmark ({mdt} MDT)", mdt=mdt)
            else:
                update_user(s, row, password=password, role="mdt-member", active=True, mdt=mdt)
            s.commit()
    finally:
        engine.dispose()
    return username, password


def _roles(url: str, mdt: str) -> list[str]:
    from engine.registry.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as c:
            return [r[0] for r in c.execute(text(
                "SELECT task.role, count(*) FROM task JOIN patient ON patient.id = task.patient_id "
                "WHERE patient.mdt = :mdt AND task.status IN ('open', 'accepted') GROUP BY task.role ORDER BY 2 DESC, 1"),
                {"mdt": mdt})]
    finally:
        engine.dispose()


def _params(mdt: str, roles: list[str], i: int) -> dict:
    return {"mdt": mdt, "role": roles[i % len(roles)], "page": 1, "page_size": PAGE_SIZE,
            **VARIANTS[(i // len(roles)) % len(VARIANTS)]}


def _in_process(url: str, username: str, mdt: str, roles: list[str], n: int) -> tuple[list[float], list[str]]:
    """The endpoint's own queries (Filters.query, count + ordered page) without HTTP; and the query plan."""
    from sqlmodel import Session, func, select

    from api.db import make_engines
    from api.deps import Principal
    from api.routers.worklists import Filters, _ordered
    from api.security import Scope
    from engine.registry.access import UserRow

    engines = make_engines(url)
    ms, plan = [], []
    try:
        with Session(engines.read) as s:
            user = s.exec(select(UserRow).where(UserRow.username == username)).one()
            who = Principal(id=user.id, username=user.username, role=user.role, mdt=user.mdt, practice=user.practice,
                            locality=user.locality, scope=Scope.of(user))
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        for i in range(n):
            p = _params(mdt, roles, i)
            prio = p.get("priority")
            f = Filters(provider=None, team=None, role=p["role"], mdt=mdt, practice=None, status=None,
                        priority=prio if isinstance(prio, list) else None,
                        overdue={"true": True, "false": False}.get(p.get("overdue")), protocol=None, nhs_number=None)
            q = f.query(who, now)
            t0 = time.perf_counter()
            with Session(engines.read) as s:
                s.exec(select(func.count()).select_from(q.subquery())).one()
                s.exec(_ordered(q).offset(0).limit(PAGE_SIZE)).all()
            ms.append((time.perf_counter() - t0) * 1000)
            if i == 0 and engines.read.dialect.name == "sqlite":
                with engines.read.connect() as c:
                    for stmt in (select(func.count()).select_from(q.subquery()), _ordered(q).limit(PAGE_SIZE)):
                        sql = str(stmt.compile(engines.read, compile_kwargs={"literal_binds": True}))
                        plan += [r[-1] for r in c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)] + ["--"]
    finally:
        engines.dispose()
    return ms, plan


class Server:
    """The real app under uvicorn in a subprocess, on a free loopback port."""

    def __init__(self, url: str):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Plain HTTP on loopback: the session cookie (Secure by default) must be sent without TLS.
        env = dict(os.environ, DATABASE_URL=url, CAREPATH_PROTOCOLS=str(ROOT / "protocols"), CAREPATH_COOKIE_SECURE="0")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
                                      str(self.port), "--log-level", "warning", "--no-access-log"], cwd=ROOT, env=env)

    def wait(self, client, timeout: float = 120) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if client.get(self.base + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not come up")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(patients: int = 50000, seed: int = 1, as_of: dt.date = AS_OF, mdt: str | None = None, requests: int = 300,
        database_url: str | None = None, workers: int = 2, write: bool = True, log=lambda m: None) -> dict:
    import httpx

    t0 = time.perf_counter()
    reg = build_registry(patients, seed=seed, as_of=as_of, mdt=mdt, database_url=database_url, workers=workers, log=log)
    url, mdt = reg["url"], reg["mdt"]
    out: dict = {"benchmark": "worklist", "patients": patients, "seed": seed, "as_of": as_of.isoformat(), "mdt": mdt,
                 "target_p95_ms": TARGET_P95_MS, "requests": requests, "page_size": PAGE_SIZE,
                 "registry": {k: reg.get(k) for k in ("key", "path", "facts", "load", "outputs")},
                 "registry_seconds": round(time.perf_counter() - t0, 1)}
    from engine.registry.db import make_engine

    engine = make_engine(url)
    out["database"] = engine.dialect.name
    out.update(registry_counts(engine, mdt))
    engine.dispose()
    roles = _roles(url, mdt)
    out["roles"] = roles
    if not roles:
        raise SystemExit(f"no open tasks in MDT {mdt}")
    username, password = _bench_user(url, mdt)

    server = Server(url)
    try:
        with httpx.Client(timeout=60) as client:
            server.wait(client)
            r = client.post(server.base + "/auth/token", data={"username": username, "password": password})
            r.raise_for_status()
            client.headers["Authorization"] = "Bearer " + r.json()["access_token"]
            for i in range(min(10, requests)):  # warm-up: connections, caches
                client.get(server.base + "/worklist", params=_params(mdt, roles, i)).raise_for_status()
            ms, totals = [], {}
            for i in range(requests):
                p = _params(mdt, roles, i)
                t1 = time.perf_counter()
                r = client.get(server.base + "/worklist", params=p)
                ms.append((time.perf_counter() - t1) * 1000)
                r.raise_for_status()
                body = r.json()
                key = " ".join(f"{k}={v}" for k, v in p.items() if k not in ("mdt", "page", "page_size"))
                totals[key] = body["total"]
                if body["total"] and not body["items"]:
                    raise RuntimeError(f"page 1 empty for {p}")
            out["worklist"] = _stats(ms)
            out["worklist"]["tasks_matched"] = totals
            health = []
            for _ in range(requests):
                t1 = time.perf_counter()
                client.get(server.base + "/health").raise_for_status()
                health.append((time.perf_counter() - t1) * 1000)
            out["reference_health"] = _stats(health)
    finally:
        server.stop()
    ref, plan = _in_process(url, username, mdt, roles, requests)
    out["reference_in_process_query"] = _stats(ref)
    out["query_plan"] = plan
    out["meets_target"] = out["worklist"]["p95_ms"] <= TARGET_P95_MS
    log(f"worklist page 1, MDT {mdt} ({out['mdt_patients']} patients, {out['mdt_open_tasks']} open tasks): "
        f"p50 {out['worklist']['p50_ms']} ms, p95 {out['worklist']['p95_ms']} ms (target {TARGET_P95_MS:.0f}); "
        f"in-process query p95 {out['reference_in_process_query']['p95_ms']} ms, /health p95 {out['reference_health']['p95_ms']} ms")
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    return finish(out, f"worklist-{patients}", write)
