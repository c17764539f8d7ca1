"""Impact previews in the background (issue 16 item 5: the web preview took 33 s with no progress).

    run = start(state, who, library, draft, as_of, source)   # an `impact_run` row, status queued
    row = get(state, who, run_id)                             # its progress, then its result

A run is evaluated in a worker thread of the service process (one at a time: evaluation is CPU-bound
and the service shares its cores), with engine.app.impact.impact_of_draft, the same preview as
`carepath impact` and POST /protocols/impact. Progress (patients done of total) is written to the row
every PROGRESS_EVERY patients or PROGRESS_SECONDS seconds, whichever comes first; the result
(Report.as_dict) when done. A run that was queued or running when the service stopped can never
finish: `interrupt_unfinished` (called when the service starts) marks it `interrupted`, which the
pages show as "interrupted - start again".

A run is seen only by the clinical lead who started it (it names example patients).
"""
from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from typing import Callable

from sqlalchemy import Engine, update
from sqlmodel import Session, func, select

from engine.app.impact import impact_of_draft
from engine.registry.access import ImpactRunRow
from engine.registry.ingest import iter_records
from engine.registry.tables import PatientRow

log = logging.getLogger(__name__)

PROGRESS_EVERY = 25
PROGRESS_SECONDS = 1.0
UNFINISHED = ("queued", "running")


def interrupt_unfinished(engine: Engine) -> int:
    """On service start: no run of an earlier process can still be going; say so instead of leaving
    it 'running' forever. Returns how many were marked."""
    from sqlalchemy.exc import DBAPIError

    from engine.registry.tables import utcnow
    try:
        with Session(engine) as s:
            n = s.exec(update(ImpactRunRow).where(ImpactRunRow.status.in_(UNFINISHED))
                       .values(status="interrupted", updated_at=utcnow(), error="the service restarted during the run")
                       ).rowcount
            s.commit()
    except DBAPIError:  # a registry not migrated yet (create_app(migrate=False)): nothing to mark
        log.warning("impact_run: could not mark unfinished runs as interrupted", exc_info=True)
        return 0
    return n or 0


class ImpactRunner:
    """The worker thread of one service (AppState)."""

    def __init__(self, state):
        self.state = state
        self.queue: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Called with (run id, patients done) after each patient; tests use it to hold a run mid-way.
        self.after_patient: Callable[[int, int], None] | None = None

    def start(self, who, library, draft, as_of: dt.date, source: str) -> ImpactRunRow:
        old = next((p for p in library.in_force(as_of) if p.id == draft.id), None)
        now = self.state.now()
        with Session(self.state.engines.write) as s:
            row = ImpactRunRow(protocol=draft.id, from_version=old.version if old else None, to_version=draft.version,
                               content_hash=draft.content_hash, source=source[:200], as_of=as_of, status="queued",
                               created_by=who.username, created_at=now, updated_at=now)
            s.add(row)
            s.commit()
            s.refresh(row)
        self.queue.put((row.id, library, draft, as_of))
        with self._lock:
            if self.thread is None or not self.thread.is_alive():
                # a daemon thread: stopping the service does not wait for a run (it is marked interrupted on restart)
                self.thread = threading.Thread(target=self._work, name="impact-run", daemon=True)
                self.thread.start()
        return row

    def _work(self) -> None:
        while True:
            self._run(*self.queue.get())

    def _set(self, run_id: int, **values) -> None:
        values["updated_at"] = self.state.now()
        with Session(self.state.engines.write) as s:
            s.exec(update(ImpactRunRow).where(ImpactRunRow.id == run_id).values(**values))
            s.commit()

    def _run(self, run_id: int, library, draft, as_of: dt.date) -> None:
        try:
            with Session(self.state.engines.read) as s:
                total = s.exec(select(func.count()).select_from(PatientRow)).one()
            self._set(run_id, status="running", total=total, done=0)
            last = {"n": 0, "t": time.monotonic()}

            def progress(n: int) -> None:
                now = time.monotonic()
                if n - last["n"] >= PROGRESS_EVERY or now - last["t"] >= PROGRESS_SECONDS:
                    self._set(run_id, done=n, total=max(total, n))
                    last.update(n=n, t=now)
                hook = self.after_patient
                if hook is not None:
                    hook(run_id, n)

            with Session(self.state.engines.read) as s:
                rep = impact_of_draft(library, draft, iter_records(s), as_of, progress=progress)
            self._set(run_id, status="done", done=rep.patients, total=max(total, rep.patients), result=rep.as_dict(),
                      finished_at=self.state.now())
        except Exception as e:  # the run says it failed; the service goes on
            log.exception("impact run %s failed", run_id)
            try:
                self._set(run_id, status="failed", error=f"{type(e).__name__}: {e}"[:2000], finished_at=self.state.now())
            except Exception:
                log.exception("could not record the failure of impact run %s", run_id)


_lock = threading.Lock()


def runner(state) -> ImpactRunner:
    """The service's runner, made on first use."""
    r = state.__dict__.get("_impact_runner")
    if r is None:
        with _lock:
            r = state.__dict__.get("_impact_runner")
            if r is None:
                r = state.__dict__["_impact_runner"] = ImpactRunner(state)
    return r


def get(state, who, run_id: int) -> ImpactRunRow | None:
    """The run, if this user started it (others are told it does not exist)."""
    with Session(state.engines.read) as s:
        row = s.get(ImpactRunRow, run_id)
        if row is None or row.created_by != who.username:
            return None
        s.expunge(row)
        return row
