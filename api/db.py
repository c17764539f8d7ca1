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

from dataclasses import dataclass

from sqlalchemy import Engine, event

from engine.registry.db import make_engine

SQLITE_BUSY_TIMEOUT_S = 30


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
    return Engines(read=make_engine(url, pool_pre_ping=True), write=make_engine(url, pool_pre_ping=True))
