"""Live audit figures as SQL sums over `patient_measure` (issue 16).

`patient_measure` holds each stored evaluation's measures as counts per population step, kept by the
store path (engine.registry.measure_results); the counts per unit are one GROUP BY here, on SQLite and
PostgreSQL alike, instead of decoding every stored evaluation's JSON in Python (`engine.app.audit.aggregate`
over `stored_rows`, which gives the same figures: tests/unit/test_audit_sql.py).

A (protocol, measure) whose patients' stored evaluations in a unit are of several versions lists every
version; its title is that of the newest of them (one version: its title, as the per-patient computation).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from engine.app.audit import AREA, UNIT_KINDS, Counts
from engine.registry.measure_results import STEPS
from engine.registry.outputs import PatientEvaluationRow, PatientMeasureRow
from engine.registry.tables import PatientRow

NONE_UNIT = "(none)"  # patients without a practice / MDT / locality, as engine.app.audit.aggregate labels them


def version_key(version: str) -> tuple:
    """1.10.0 after 1.9.0: numeric parts compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+]", version))


@dataclass
class LiveFigures:
    per_unit: dict  # (protocol, measure, unit) -> Counts
    area: dict  # (protocol, measure) -> Counts
    patients: int  # patients with a stored evaluation (of `protocol`, when given)
    evaluated_from: dt.date | None
    evaluated_to: dt.date | None


def live_figures(s: Session, unit_kind: str, protocol: str | None = None) -> LiveFigures:
    """Counts per unit of `unit_kind` (practice, mdt, locality or area) and for the area, keyed like
    engine.app.audit.aggregate, from the stored evaluations of every protocol (or of `protocol`)."""
    if unit_kind not in UNIT_KINDS:
        raise ValueError(f"unknown unit kind {unit_kind!r}")
    m = PatientMeasureRow.__table__
    sums = [sa.func.sum(m.c[name]).label(name) for name in (*STEPS, "cannot_determine")]
    sums += [sa.func.sum(m.c.value).label("value_sum"), sa.func.count(m.c.value).label("value_patients")]
    keys = [m.c.protocol, m.c.measure, m.c.version, m.c.title, m.c.missing_codelists]
    if unit_kind == AREA:
        q = sa.select(*keys, *sums)
        group = keys
    else:
        col = PatientRow.__table__.c[unit_kind]
        unit = sa.func.coalesce(sa.func.nullif(col, ""), NONE_UNIT).label("unit")
        q = sa.select(*keys, *sums, unit).join(PatientRow.__table__, PatientRow.__table__.c.id == m.c.patient_id)
        group = [*keys, unit]
    if protocol:
        q = q.where(m.c.protocol == protocol)
    per_unit: dict[tuple, Counts] = {}
    area: dict[tuple, Counts] = {}
    newest: dict[int, tuple] = {}  # id(Counts) -> (version key, title) of the newest version counted in it
    for row in s.execute(q.group_by(*group)).mappings():
        k = (row["protocol"], row["measure"])
        u = AREA if unit_kind == AREA else row["unit"]
        rank = (version_key(row["version"]), row["title"])
        for store, key, kind, unit_name in ((per_unit, (*k, u), unit_kind, u), (area, k, AREA, AREA)):
            c = store.get(key)
            if c is None:
                c = store[key] = Counts(k[0], row["version"], k[1], row["title"], kind, unit_name)
            if id(c) not in newest or rank > newest[id(c)]:
                newest[id(c)] = rank
                c.version, c.title = row["version"], row["title"]
            c.versions.add(row["version"])
            for name in (*STEPS, "cannot_determine"):
                setattr(c, name, getattr(c, name) + int(row[name] or 0))
            if row["value_patients"]:
                c.value_sum += float(row["value_sum"])
                c.value_patients += int(row["value_patients"])
            if row["missing_codelists"]:
                c.missing_codelists.update(row["missing_codelists"].split(","))
    e = PatientEvaluationRow.__table__
    q = sa.select(sa.func.count(sa.distinct(e.c.patient_id)), sa.func.min(e.c.reference_date), sa.func.max(e.c.reference_date))
    if protocol:
        q = q.where(e.c.protocol == protocol)
    patients, first, last = s.execute(q).one()
    return LiveFigures(per_unit, area, patients or 0, first, last)
