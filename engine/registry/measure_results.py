"""Per-patient measure results as rows (`patient_measure`), so audit figures are SQL sums.

The stored evaluation (`patient_evaluation.result`, JSON) stays the record of what was decided and why;
`patient_measure` holds only its measures' counts per population step, one row per measure, written
in the same transaction by the store path (engine.app.service._store_evaluation calls
`replace_measures`) and filled for evaluations stored before it existed by migration 0011 (`backfill`).

A measure's counts: for a patient-based measure 0 or 1 per step; for an episode-based one (CMS22)
the number of the patient's episodes in each step (`counts` of the stored result). A measure with `value:`
(issue 19) keeps the patient's number in `value` when they are counted (denominator, not excluded, not
"cannot determine"); NULL otherwise or when a number it needs is missing. Migration 0015 fills it for the
evaluations stored before it (`backfill_values`).
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from engine.registry.outputs import PatientMeasureRow

STEPS = ("initial_population", "denominator", "exclusions", "exceptions", "numerator")


def step_counts(m: Any) -> dict[str, int]:
    """A measure result (stored dict, or an object with the same attributes) as counts per population step:
    one patient, or its episodes when the measure is episode-based."""
    get = m.get if isinstance(m, dict) else lambda k, d=None: getattr(m, k, d)
    counts = get("counts")
    if get("basis") == "episode" and counts:
        return {"initial_population": counts.get("initial_population", 0), "denominator": counts.get("denominator", 0),
                "exclusions": counts.get("exclusion", 0), "exceptions": counts.get("exception", 0),
                "numerator": counts.get("numerator", 0)}
    return {"initial_population": int(bool(get("initial_population"))), "denominator": int(bool(get("denominator"))),
            "exclusions": int(bool(get("exclusion"))), "exceptions": int(bool(get("exception"))),
            "numerator": int(bool(get("numerator")))}


def measure_rows(patient_id: int, protocol: str, version: str, measures: Iterable[dict] | None) -> list[dict]:
    """The `patient_measure` rows of one stored evaluation's measures (dicts, as stored). A result that cannot
    be determined (a declared codelist not supplied) counts in no step, only as `cannot_determine`, with the
    missing codelists (as engine.app.audit.Counts.add counts it)."""
    out = []
    for m in measures or ():
        missing = m.get("cannot_determine")
        counts = dict.fromkeys(STEPS, 0) if missing else step_counts(m)
        out.append(dict(patient_id=patient_id, protocol=protocol, version=version, measure=m["measure"],
                        title=m.get("title") or m["measure"], **counts, cannot_determine=int(bool(missing)),
                        missing_codelists=",".join(sorted(set(missing))) if missing else None,
                        value=measure_value(m, counts, missing)))
    return out


def measure_value(m: dict, counts: dict, missing) -> float | None:
    """The patient's number of a measure with `value:` when they are counted (in the denominator and not
    excluded, not "cannot determine"); None otherwise, or when the number is missing (never 0 in its place)."""
    v = m.get("value")
    if v is None or missing or not counts["denominator"] or counts["exclusions"]:
        return None
    return float(v)


# ---- stores committed in this process (engine.app.audit_cache keeps the audit figures until the next) --------
_STORED = "carepath.evaluations_stored"  # Session.info flag: this transaction stored an evaluation
_commits = itertools.count(1)
_generation = [0]


def note_stored(session: Session) -> None:
    """This session's transaction stores an evaluation: when it commits, `stores_committed` moves on."""
    session.info[_STORED] = True


def stores_committed() -> int:
    """A number that changes whenever a transaction of this process that stored an evaluation commits."""
    return _generation[0]


@sa.event.listens_for(OrmSession, "after_commit")
def _after_commit(session) -> None:
    if session.info.pop(_STORED, False):
        _generation[0] = next(_commits)


@sa.event.listens_for(OrmSession, "after_soft_rollback")
def _after_rollback(session, previous_transaction) -> None:
    if not session.in_transaction():  # the whole transaction rolled back (not a savepoint inside it)
        session.info.pop(_STORED, None)


def replace_measures(session: Session, patient_id: int, protocol: str, version: str, measures: Iterable[dict] | None) -> None:
    """Make the patient's rows for `protocol` those of `measures` (the evaluation being stored). The caller commits."""
    note_stored(session)
    t = PatientMeasureRow.__table__
    session.execute(sa.delete(t).where(t.c.patient_id == patient_id, t.c.protocol == protocol))
    rows = measure_rows(patient_id, protocol, version, measures)
    if rows:
        session.execute(sa.insert(t), rows)


COLUMNS_0011 = ("patient_id", "protocol", "version", "measure", "title", *STEPS, "cannot_determine", "missing_codelists")


def backfill(conn: Connection, batch: int = 2000) -> int:
    """Fill `patient_measure` from every stored evaluation (migration 0011; also a repair: it first empties the
    table). Reads only the `measures` part of each stored result (a JSON path the database extracts).
    The table is named by its columns as migration 0011 made them, not by the model, so the migration keeps
    working if the model changes later. Returns the rows written."""
    t = sa.table("patient_measure", *(sa.column(c) for c in COLUMNS_0011))
    e = sa.table("patient_evaluation", sa.column("id", sa.Integer), sa.column("patient_id", sa.Integer),
                 sa.column("protocol", sa.String), sa.column("version", sa.String), sa.column("result", sa.JSON))
    conn.execute(sa.delete(t))
    written, last = 0, 0
    while True:
        got = conn.execute(sa.select(e.c.id, e.c.patient_id, e.c.protocol, e.c.version, e.c.result["measures"])
                           .where(e.c.id > last).order_by(e.c.id).limit(batch)).all()
        if not got:
            return written
        rows = [{c: r[c] for c in COLUMNS_0011} for _, pid, protocol, version, measures in got
                for r in measure_rows(pid, protocol, version, measures if isinstance(measures, list) else None)]
        if rows:
            conn.execute(sa.insert(t), rows)
        written += len(rows)
        last = got[-1][0]


def backfill_values(conn: Connection, batch: int = 2000) -> int:
    """Set `patient_measure.value` from every stored evaluation's measures (migration 0015): the value each
    stored result already holds, for the patients it counts. Returns the rows given a value."""
    e = sa.table("patient_evaluation", sa.column("id", sa.Integer), sa.column("patient_id", sa.Integer),
                 sa.column("protocol", sa.String), sa.column("result", sa.JSON))
    t = sa.table("patient_measure", sa.column("patient_id"), sa.column("protocol"), sa.column("measure"),
                 sa.column("value"))
    update = (sa.update(t).where(t.c.patient_id == sa.bindparam("p"), t.c.protocol == sa.bindparam("proto"),
                                 t.c.measure == sa.bindparam("m")).values(value=sa.bindparam("v")))
    written, last = 0, 0
    while True:
        got = conn.execute(sa.select(e.c.id, e.c.patient_id, e.c.protocol, e.c.result["measures"])
                           .where(e.c.id > last).order_by(e.c.id).limit(batch)).all()
        if not got:
            return written
        rows = [{"p": r["patient_id"], "proto": r["protocol"], "m": r["measure"], "v": r["value"]}
                for _, pid, protocol, measures in got
                for r in measure_rows(pid, protocol, "", measures if isinstance(measures, list) else None)
                if r["value"] is not None]
        if rows:
            conn.execute(update, rows)
        written += len(rows)
        last = got[-1][0]
