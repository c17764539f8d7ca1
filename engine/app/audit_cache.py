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

A mark that differs counts the figures again (the next request pays for it); the page says when the
figures it shows were counted. Kept in this process only (each server worker counts for itself).
"""
from __future__ import annotations

import datetime as dt
import threading
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


def registry_mark(s: Session) -> tuple:
    """What the live figures are counted from: this process's committed stores, and three index look-ups
    on the stored evaluations."""
    m, e = PatientMeasureRow.__table__, PatientEvaluationRow.__table__
    last = s.execute(sa.select(sa.select(sa.func.max(m.c.id)).scalar_subquery(),
                               sa.select(sa.func.max(e.c.id)).scalar_subquery(),
                               sa.select(sa.func.max(e.c.evaluated_at)).scalar_subquery())).one()
    return (stores_committed(), *last)


_caches: "weakref.WeakKeyDictionary[Engine, OrderedDict]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # one count at a time: concurrent requests for the same figures wait, then share them


def counted_figures(engine: Engine, unit_kind: str, protocol: str | None, now: dt.datetime) -> Counted:
    """The live figures (engine.app.audit_sql.live_figures) for `unit_kind` and `protocol`, from this
    engine's cache when the stored evaluations have not changed since they were counted."""
    with _lock:
        with Session(engine) as s:
            mark = registry_mark(s)
            cache = _caches.setdefault(engine, OrderedDict())
            key = (unit_kind, protocol or None)
            hit = cache.get(key)
            if hit is not None and hit[0] == mark:
                cache.move_to_end(key)
                return Counted(hit[1], hit[2], True)
            figures = live_figures(s, unit_kind, protocol)
        cache[key] = (mark, figures, now)
        cache.move_to_end(key)
        while len(cache) > KEEP:
            cache.popitem(last=False)
        return Counted(figures, now, False)
