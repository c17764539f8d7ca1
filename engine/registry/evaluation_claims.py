"""Who is evaluating which marked patient now: a claim per patient for the outbox drains, so that
several drains (one per service worker, each started at the worker's start; the command line's
`carepath ingest --ndjson`) share a backlog instead of each evaluating all of it (issue 17).

`claim_patient(engine, patient_id)` is a context manager yielding True when this drain may evaluate
the patient, False while another drain is evaluating them (skip: that drain clears the mark or, if the
record kept changing, keeps it and goes round again).

- PostgreSQL: a transaction-level advisory lock, `pg_try_advisory_xact_lock(CLASS_ID, patient_id)`,
  taken on a connection of its own whose transaction stays open (holding no row lock, writing nothing)
  while the patient is evaluated, and rolled back after: the lock is held across worker processes and
  machines, and is released by PostgreSQL if the process dies. The two-integer key space does not
  overlap the one-bigint key of the access log's append lock (engine/registry/logchain.py).
- SQLite: one service process only (`carepath serve --workers N` refuses N > 1), so the claims are kept
  in this process (threads: the background drain, another drain started by a test or a command).
  Drains in two processes on one SQLite file are not coordinated (they only duplicate work; the
  evaluation's own check of the record keeps the outputs right).

Claiming does not replace the evaluation's optimistic check (engine/app/service.py `_write`): it only
stops two drains doing the same work at once.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import Engine

from engine.registry.dialect import is_postgresql

CLASS_ID = 0x63617265  # "care": the advisory-lock class of a patient's evaluation claim (fits int4)

_local: set[tuple[str, int]] = set()
_local_lock = threading.Lock()


@contextmanager
def claim_patient(engine: Engine, patient_id: int) -> Iterator[bool]:
    """True (and the claim held until the block ends) unless another drain holds it now."""
    if is_postgresql(engine):
        with engine.connect() as conn:
            got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(CLASS_ID, patient_id))).scalar())
            try:
                yield got
            finally:
                conn.rollback()  # ends the transaction: the lock goes with it
        return
    key = (engine.url.render_as_string(hide_password=True), patient_id)
    with _local_lock:
        got = key not in _local
        if got:
            _local.add(key)
    try:
        yield got
    finally:
        if got:
            with _local_lock:
                _local.discard(key)
