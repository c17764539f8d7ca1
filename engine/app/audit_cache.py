"""The live audit figures, counted once and kept until what they are counted from changes (issue 16).

The audit page and `/audit/measures` sum every stored evaluation's measures (engine.app.audit_sql): one
GROUP BY over `patient_measure` joined to the patients, which grows with the registry (~0.5 s at 5,000
people on a loaded machine, seconds with a 50,000-patient MDT evaluated). The figures change only when a
stored evaluation changes, so they are kept per database engine, unit kind and protocol, under a *mark*:

- `stores_committed()` (engine.registry.measure_results): moves on whenever a transaction of this process
  that stored an evaluation commits (completing a task, an ingest or re-evaluation through this service);
- for other processes' writes (an ingest from the command line, another server worker), what the database
  says in three index look-ups: the highest `patient_measure` id (a store whose measures changed deletes the
  patient's rows and inserts new ones), the highest `patient_evaluation` id (a patient's first evaluation)
  and the latest `patient_evaluation.evaluated_at` (every store stamps its row: this catches SQLite re-using
  the highest ids after a delete, and a patient re-evaluated after moving practice or MDT whose measures did
  not change, counted again in their new unit). Nothing deletes patients or their evaluations; migrations
  that refill `patient_measure` run before the service starts.

A mark that differs counts the figures again: in the request when counting is quick; when the last count
took more than a second (tens of thousands of stored evaluations), in a background thread while requests
are served the figures last counted, marked as being counted again. The page says when the figures it
shows were counted. Kept in this process only (each server worker counts for itself).
"""
from __future__ import annotations

import datetime as dt
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session

from engine.app.audit_sql import LiveFigures, live_figures
from engine.registry.measure_results import stores_committed
from engine.registry.outputs import PatientEvaluationRow, PatientMeasureRow

KEEP = 16  # (unit kind, protocol) figures kept per engine: 4 unit kinds x the protocols looked at


@dataclass(frozen=True)
class Counted:
    figures: LiveFigures
    counted_at: dt.datetime  # when these figures were counted (the service's clock)
    cached: bool  # True when served from the cache (counted by an earlier request)
    recounting: bool = False  # the stored evaluations changed since: being counted again in the background


def registry_mark(s: Session) -> tuple:
    """What the live figures are counted from: this process's committed stores, and three index look-ups
    on the stored evaluations."""
    m, e = PatientMeasureRow.__table__, PatientEvaluationRow.__table__
    last = s.execute(sa.select(sa.select(sa.func.max(m.c.id)).scalar_subquery(),
                               sa.select(sa.func.max(e.c.id)).scalar_subquery(),
                               sa.select(sa.func.max(e.c.evaluated_at)).scalar_subquery())).one()
    return (stores_committed(), *last)


BACKGROUND_AFTER = 1.0  # seconds: figures whose last count took longer are counted again in the background


@dataclass
class _Entry:
    mark: tuple
    figures: LiveFigures
    counted_at: dt.datetime
    seconds: float  # how long the count took


_caches: "weakref.WeakKeyDictionary[Engine, OrderedDict]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # guards the caches and the sets below (held briefly, never while counting)
_counting: dict = {}  # (id(engine), key) -> a lock held while those figures are counted: one count at a time
_recounting: set = set()  # (id(engine), key) being counted again in the background now


def _counting_lock(engine: Engine, key: tuple) -> threading.Lock:
    with _lock:
        return _counting.setdefault((id(engine), key), threading.Lock())


def _count(engine: Engine, key: tuple, now: dt.datetime) -> _Entry:
    t0 = time.perf_counter()
    with Session(engine) as s:
        mark = registry_mark(s)  # before counting: a store committed meanwhile makes the next request count again
        figures = live_figures(s, *key)
    entry = _Entry(mark, figures, now, time.perf_counter() - t0)
    with _lock:
        cache = _caches.setdefault(engine, OrderedDict())
        cache[key] = entry
        cache.move_to_end(key)
        while len(cache) > KEEP:
            cache.popitem(last=False)
    return entry


def _recount(engine: Engine, key: tuple, now: dt.datetime) -> None:
    try:
        with _counting_lock(engine, key):
            _count(engine, key, now)
    finally:
        with _lock:
            _recounting.discard((id(engine), key))


def _cached(engine: Engine, key: tuple) -> _Entry | None:
    with _lock:
        hit = _caches.get(engine, {}).get(key)
        if hit is not None:
            _caches[engine].move_to_end(key)
        return hit


def counted_figures(engine: Engine, unit_kind: str, protocol: str | None, now: dt.datetime) -> Counted:
    """The live figures (engine.app.audit_sql.live_figures) for `unit_kind` and `protocol`, from this
    engine's cache when the stored evaluations have not changed since they were counted. When they have
    changed and the last count took more than BACKGROUND_AFTER seconds (a large registry), the figures last
    counted are served, marked `recounting`, while a background thread counts them again; otherwise (and
    the first time) they are counted now."""
    key = (unit_kind, protocol or None)
    with Session(engine) as s:
        mark = registry_mark(s)
    hit = _cached(engine, key)
    if hit is not None and hit.mark == mark:
        return Counted(hit.figures, hit.counted_at, True)
    if hit is not None and hit.seconds > BACKGROUND_AFTER:
        with _lock:
            start = (id(engine), key) not in _recounting
            _recounting.add((id(engine), key))
        if start:
            threading.Thread(target=_recount, args=(engine, key, now), name="audit-recount", daemon=True).start()
        return Counted(hit.figures, hit.counted_at, True, recounting=True)
    with _counting_lock(engine, key):
        hit = _cached(engine, key)  # counted by another request while this one waited?
        if hit is not None and hit.mark == mark:
            return Counted(hit.figures, hit.counted_at, True)
        entry = _count(engine, key, now)
    return Counted(entry.figures, entry.counted_at, False)
