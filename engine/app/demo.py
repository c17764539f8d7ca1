"""The demo registry: demo patients with a history (evaluated three weeks ago, then today), a generated
population evaluated beside them, demo users and audit snapshots at a few reporting dates (`carepath demo`)."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from engine.language.library import load_library


def seed_registry(records, out: Path, records_as_of: dt.date, population: int = 0, library=None) -> str | None:
    """Ingest the demo records (and `population` generated people, evaluated) into the SQLite registry
    (idempotent: re-running adds nothing)."""
    try:
        from engine.registry.db import make_engine, upgrade
        from engine.registry.ingest import ingest_records
    except ImportError:
        return None
    import os
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{(out / 'carepath.db').resolve()}"
    engine = make_engine(url)
    upgrade(engine)
    summary = ingest_records(engine, records, source="demo")
    from engine.synthetic.demo import HISTORY, demo_now
    from engine.app.service import reevaluate_many
    lib = library or load_library([Path("protocols")])
    # A registry with a past: evaluated three weeks ago (tasks raised then, some now past their agreed
    # response time, so worklists show SLA lateness), then again today.
    nhs = {r.patient.nhs_number for r in records}
    new = {n for n, c in summary.patients.items() if c.created}  # a second `carepath demo` adds no history
    earlier = records_as_of - HISTORY
    first = reevaluate_many(engine, new, lib, as_of=earlier, now=dt.datetime.combine(earlier, dt.time(9, 0)))
    now = demo_now(records_as_of)
    diffs = reevaluate_many(engine, nhs, lib, as_of=records_as_of, now=now)
    opened = sum(len(d.tasks_opened) for d in first + diffs)
    generated = seed_population(engine, population, records_as_of, library or lib) if population else ""
    from sqlmodel import Session

    from engine.app.users import DEMO_PASSWORD_SUFFIX, ensure_demo_users
    with Session(engine) as s:
        made = ensure_demo_users(s)
    users = (f"; demo users {', '.join(made)} (password: <username>{DEMO_PASSWORD_SUFFIX})" if made else "")
    # audit snapshots at a few reporting dates, so the web audit dashboard has a trend to show
    from engine.app.audit import take_snapshot
    from engine.synthetic.demo import reporting_dates
    with Session(engine) as s:
        for day in reporting_dates(records_as_of):
            take_snapshot(s, lib, day, "carepath demo", now)
        s.commit()
    return f"{url} ({summary}; {opened} new task(s) on the worklists{generated}{users})"


def seed_population(engine, n: int, as_of: dt.date, library) -> str:
    """Add n generated people (engine/synthetic/generate.py, seed 1, from person 100 on: the first
    generated NHS numbers are the demo patients') to the registry and store every MDT's outputs, so
    worklists, case conferences and audits show a population; skipped if loaded."""
    from sqlmodel import Session, select

    from engine.app.registry_load import bulk_load, populate_outputs
    from engine.registry.tables import IngestBatch, PatientRow

    key = f"demo-population-{n}-s1-{as_of.isoformat()}"
    with Session(engine) as s:
        done = s.exec(select(IngestBatch).where(IngestBatch.content_hash == key)).first()
    if done is not None and done.patients == n:
        return f"; generated population of {n} already loaded"
    if done is not None:
        raise ValueError(f"an earlier generated population load into {engine.url} did not finish: "
                                 "remove the demo registry (var/carepath.db) and run carepath demo again")
    bulk_load(engine, n, seed=1, as_of=as_of, start=100, workers=os.cpu_count() or 1, content_hash=key,
              source=f"synthetic population ({key})")
    with Session(engine) as s:
        mdts = sorted(m for m in s.exec(select(PatientRow.mdt).distinct()) if m)
    from engine.synthetic.demo import demo_now
    tasks = sum(populate_outputs(engine, m, library=library, as_of=as_of, now=demo_now(as_of),
                                 workers=os.cpu_count() or 1)["tasks_opened"] for m in mdts)
    return f"; generated population of {n} people in {len(mdts)} MDTs with {tasks} task(s)"
