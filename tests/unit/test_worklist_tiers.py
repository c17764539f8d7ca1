"""The worklist page's risk tiers: the highest `tier.level` of any protocol's stored result, patients without one
left out, a `tier` of null or no `tier` at all ignored. The level is a column of the stored evaluation
(`tier_level`), kept by the store path and filled by migration 0017 from the stored JSON of evaluations stored
before it (a JSON path, which SQLite and PostgreSQL spell differently: so on both)."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import command
from sqlmodel import Session, select

from engine.registry import db
from engine.registry.db import upgrade
from engine.registry.outputs import PatientEvaluationRow, TaskRow
from engine.registry.tables import PatientRow
from api.web.worklist import _tiers


def test_the_highest_stored_tier_level_per_patient(engine):
    upgrade(engine)
    with Session(engine) as s:
        ps = []
        for i in range(3):
            p = PatientRow(nhs_number=f"999000000{i}", birth_date=dt.date(1950, 1, 1), sex="female")
            s.add(p); s.flush(); ps.append(p)
            s.add(TaskRow(key=f"k{i}", patient_id=p.id, protocol="x", version="1", source="s", kind="activity", title="t",
                          priority="routine", status="open", role="gp", raised_at=dt.datetime(2026, 1, 1), due=dt.datetime(2026, 2, 1),
                          why="w", evidence=[], condition_active=True, updated_at=dt.datetime(2026, 1, 1)))
        def ev(p, proto, result):
            s.add(PatientEvaluationRow(patient_id=p.id, protocol=proto, version="1", reference_date=dt.date(2026, 1, 1),
                                       on_register=True, result=result))
        ev(ps[0], "a", {"tier": {"level": 3}}); ev(ps[0], "b", {"tier": {"level": 1}}); ev(ps[0], "c", {"tier": None})
        ev(ps[1], "c", {"tier": None}); ev(ps[1], "d", {"x": 1})
        ev(ps[2], "a", {"tier": {"level": 2}})
        s.commit()
        pids = [p.id for p in ps]
    # stored before migration 0017 (no tier_level column): the migration picks the levels out of the JSON
    cfg = db.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0016")
    assert "tier_level" not in {c["name"] for c in sa.inspect(engine).get_columns("patient_evaluation")}
    upgrade(engine)
    with Session(engine) as s:
        q = select(TaskRow, PatientRow).join(PatientRow, PatientRow.id == TaskRow.patient_id).where(TaskRow.status == "open")
        assert _tiers(s, q) == {pids[0]: 3, pids[2]: 2}
