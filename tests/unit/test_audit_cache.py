"""The audit figures kept between requests (engine.app.audit_cache, issue 16): served again while the stored
evaluations are unchanged, counted again when this process stores an evaluation (even at the same clock
time, with the same row ids) or when another process's store shows in the database (a later evaluated_at),
and always the figures the SQL sums give at that moment; when counting takes long, counted again in the
background while the last figures are served, marked as being counted again."""
from __future__ import annotations

import datetime as dt
import json
import threading

import sqlalchemy as sa
from sqlmodel import Session

from engine.app.audit import figures
from engine.app import audit_cache
from engine.app.audit_cache import counted_figures
from engine.app.audit_sql import live_figures
from engine.app.service import reevaluate_many
from engine.registry.measure_results import note_stored, stores_committed
from engine.registry.db import make_engine, upgrade
from engine.registry.ingest import ingest_records
from engine.synthetic.demo import demo_records
from tests.unit.cached import shipped_library

AS_OF = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 20, 9, 0)


def _figs(live) -> dict:
    return {k: figures(c, live.area.get(k[:2])) for k, c in live.per_unit.items()}


def _live(engine, kind="practice") -> dict:
    with Session(engine) as s:
        return _figs(live_figures(s, kind, "t2dm-annual-care"))


def test_kept_until_an_evaluation_is_stored(tmp_path, monkeypatch):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade(engine)
    records = demo_records(AS_OF)
    ingest_records(engine, records, source="demo")
    lib = shipped_library()
    nhs = sorted(r.patient.nhs_number for r in records)
    reevaluate_many(engine, nhs, lib, as_of=AS_OF, now=NOW)

    with engine.connect() as c:  # the store path keeps each result's tier level as a column (the worklist's)
        stored = c.execute(sa.text("SELECT tier_level, result FROM patient_evaluation")).all()
    levels = [(json.loads(r) if isinstance(r, str) else r).get("tier") for _, r in stored]
    assert [t for t, _ in stored] == [(t or {}).get("level") for t in levels] and any(levels)

    first = counted_figures(engine, "practice", "t2dm-annual-care", NOW)
    assert not first.cached and first.counted_at == NOW and _figs(first.figures) == _live(engine)
    again = counted_figures(engine, "practice", "t2dm-annual-care", NOW + dt.timedelta(minutes=5))
    assert again.cached and again.counted_at == NOW and again.figures is first.figures
    other = counted_figures(engine, "mdt", "t2dm-annual-care", NOW)  # each unit kind has its own figures
    assert not other.cached and set(k[2] for k in other.figures.per_unit) <= {"central-1", "central-2", "(none)"}

    # this process stores a changed evaluation at the same clock time: counted again, the new figures
    later = dt.datetime(2026, 11, 20, 9, 5)
    before = stores_committed()
    reevaluate_many(engine, nhs[:3], lib, as_of=AS_OF + dt.timedelta(days=400), now=NOW)
    assert stores_committed() != before  # (SQLite may give the new rows the deleted ones' ids: not relied on)
    moved = counted_figures(engine, "practice", "t2dm-annual-care", later)
    assert not moved.cached and moved.counted_at == later
    assert _figs(moved.figures) == _live(engine) != _figs(first.figures)

    # another process (raw SQL here: no session of this process commits a store) moves a patient to another
    # practice and stores their evaluation again, later: the database's mark shows it
    with engine.begin() as c:
        pid = c.execute(sa.text("SELECT id FROM patient WHERE nhs_number = :n"), {"n": nhs[0]}).scalar_one()
        c.execute(sa.text("UPDATE patient SET practice = 'A81099' WHERE id = :p"), {"p": pid})
        c.execute(sa.text("UPDATE patient_evaluation SET evaluated_at = :t WHERE patient_id = :p"),
                  {"t": dt.datetime(2026, 11, 21, 8, 0), "p": pid})
    recounted = counted_figures(engine, "practice", "t2dm-annual-care", later)
    assert not recounted.cached
    assert any(k[2] == "A81099" for k in recounted.figures.per_unit) and _figs(recounted.figures) == _live(engine)
    assert counted_figures(engine, "practice", "t2dm-annual-care", later).cached

    # a count that takes long (here: any) is done again in the background; meanwhile the last figures are served
    monkeypatch.setattr(audit_cache, "BACKGROUND_AFTER", -1.0)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE patient SET practice = 'A81098' WHERE id = :p"), {"p": pid})
        c.execute(sa.text("UPDATE patient_evaluation SET evaluated_at = :t WHERE patient_id = :p"),
                  {"t": dt.datetime(2026, 11, 22, 8, 0), "p": pid})
    stale = counted_figures(engine, "practice", "t2dm-annual-care", dt.datetime(2026, 11, 22, 9, 0))
    assert stale.recounting and stale.figures is recounted.figures and stale.counted_at == later
    for t in threading.enumerate():
        if t.name == "audit-recount":
            t.join(60)
    fresh = counted_figures(engine, "practice", "t2dm-annual-care", dt.datetime(2026, 11, 22, 9, 5))
    assert fresh.cached and not fresh.recounting and fresh.counted_at == dt.datetime(2026, 11, 22, 9, 0)
    assert any(k[2] == "A81098" for k in fresh.figures.per_unit) and _figs(fresh.figures) == _live(engine)
    engine.dispose()


def test_a_store_rolled_back_changes_nothing(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    before = stores_committed()
    with Session(engine) as s:
        s.execute(sa.text("SELECT 1"))  # a store's transaction ...
        note_stored(s)
        s.rollback()  # ... rolled back
        s.commit()
    assert stores_committed() == before
    with Session(engine) as s:
        note_stored(s)
        s.commit()
    assert stores_committed() != before
    engine.dispose()
