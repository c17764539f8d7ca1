"""Engines for the service.

Two engines on one database:
- `read`: ordinary sessions for queries.
- `write`: used for every change (ingest, re-evaluation, task actions, outcomes, the access log).
  On SQLite its transactions start with ``BEGIN IMMEDIATE``, so two writers never both read the
  same patient's tasks and then both insert (SQLite's default deferred transactions would let
  them); the busy timeout makes the second writer wait instead of failing. SQLite files are put
  in WAL mode so readers are not blocked by a writer. On PostgreSQL the evaluation service locks
  the patient row (``SELECT ... FOR UPDATE``) and ingest retries on a unique-key race.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError

from engine.registry.db import make_engine

SQLITE_BUSY_TIMEOUT_S = 30
PING_AFTER_S = 1.0  # PostgreSQL: a pooled connection idle longer than this is pinged at checkout (_pinged_when_idle)
PING_ENV = "CAREPATH_POOL_PING_AFTER"


@dataclass
class Engines:
    read: Engine
    write: Engine

    def dispose(self) -> None:
        self.read.dispose()
        self.write.dispose()


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = make_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        if immediate:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cur.close()

    if immediate:
        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engines(url: str) -> Engines:
    probe = make_engine(url)
    dialect = probe.dialect.name
    probe.dispose()
    if dialect == "sqlite":
        return Engines(read=_sqlite_engine(url, immediate=False), write=_sqlite_engine(url, immediate=True))
    return Engines(read=_pinged_when_idle(make_engine(url)), write=_pinged_when_idle(make_engine(url)))


def _ping_after() -> float:
    return float(os.environ.get(PING_ENV, "") or PING_AFTER_S)


def _pinged_when_idle(engine: Engine, after: float | None = None) -> Engine:
    """SQLAlchemy's pre-ping (`pool_pre_ping`: a `SELECT 1` round trip on every checkout, ~5 a request), for the
    connections that sat idle in the pool longer than `after` seconds only: those are the ones a server restart
    or an idle timeout can have closed. A dead one is replaced at checkout (DisconnectionError: the pool retries
    with a new connection), as with pre-ping. A connection back in the pool for less than that is handed out
    as it is; if the server went away in that moment, its first statement fails, which invalidates the pool
    (the ingest and evaluation retries then run on new connections). `after` 0: ping on every checkout."""
    after = _ping_after() if after is None else after

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record):
        record.info["carepath_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy):
        since = record.info.get("carepath_checked_in")
        if since is not None and time.monotonic() - since < after:
            return  # in use a moment ago
        if since is None and after > 0:
            return  # connected just now
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            raise DisconnectionError(f"pooled connection found dead: {err}") from err

    return engine
