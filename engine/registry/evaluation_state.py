"""What one patient's evaluation reads of the registry, in as few statements as the database allows
(issue 17, P2: one new record at 100 requests/s).

An evaluation (engine.app.service) reads twice: before evaluating, the record with what its reuse test
needs (`read_state`: the patient row, source ids, facts, the outbox mark, the stored results and the
current state of each task), and in the write transaction, under the patient's lock, what its re-check
needs (`locked_state`: the record's digest, the stored evaluations' heads, the current task and flag
rows; not the flag rows of the results it reuses, which it does not reconcile). On PostgreSQL each is
two statements (the first: the patient row with the other tables' rows as JSON arrays of scalar
subqueries, one snapshot, then the facts; the second: the lock, then the same kind of one-row read).
Elsewhere (SQLite) the same answers come from one statement per table, as before.

The answers are plain values, never ORM objects: the task and flag rows are `RowState`s, which the
service's reconciliation changes and writes back with plain statements. The record's
digest is `engine.registry.ingest.record_digest`'s, computed by the same function from the same
columns, whichever way they were read.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Collection, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, select

from engine.registry import pending
from engine.registry.dialect import is_postgresql
from engine.records.model import PatientRecord
from engine.registry.ingest import DEMOGRAPHICS, _fact, _patient, _record_digest
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskRow
from engine.registry.tables import FactRow, PatientRow, PatientSourceId

INPUTS_KEY = "_inputs"  # in patient_evaluation.result: the digest of what the result rests on


class Link(NamedTuple):
    id: int
    source_system: str
    source_id: str


class StoredResult(NamedTuple):
    """A stored evaluation row, whole (what the reuse test reads)."""
    id: int
    protocol: str
    version: str
    reference_date: dt.date
    result: Any


class TaskState(NamedTuple):
    """The current (latest) task row of a key, as far as the reuse test looks at it."""
    key: str
    status: str
    condition_active: bool


@dataclass
class StoredHead:
    """A stored evaluation row without its result: its id, version, reference date, inputs digest
    (`result._inputs`) and measures (`result.measures`, read by JSON path; `is_object`: the stored
    result is a JSON object at all)."""
    id: int
    version: str
    reference_date: dt.date
    inputs: str | None
    measures: Any = None
    is_object: bool = True

    def stands_for(self, version: str, as_of: dt.date, digest: str) -> bool:
        """Evaluated with this version of the protocol, as of this date, from inputs with this digest."""
        return self.version == version and self.reference_date == as_of and self.inputs == digest


class RowState:
    """A task or flag row as plain values, changed in place by reconciling: `changed` holds the columns
    set to a value other than the one read (what an UPDATE of the row must write)."""

    __slots__ = ("_values", "changed")

    def __init__(self, values: dict):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "changed", {})

    def __getattr__(self, name: str):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value) -> None:
        if name not in self._values or self._values[name] != value:
            self._values[name] = value
            self.changed[name] = value


def _typed(table: sa.Table, values: dict) -> dict:
    """A row read as JSON (`row_to_json`) with its date and time columns as Python values again."""
    for c in table.columns:
        v = values.get(c.name)
        if isinstance(v, str):
            if isinstance(c.type, sa.DateTime):
                values[c.name] = dt.datetime.fromisoformat(v)
            elif isinstance(c.type, sa.Date):
                values[c.name] = dt.date.fromisoformat(v)
    return values


def task_rows(session: Session, patient_id: int) -> dict[str, RowState]:
    """key -> the patient's latest task row of that key."""
    t = TaskRow.__table__
    latest = select(sa.func.max(t.c.id)).where(t.c.patient_id == patient_id).group_by(t.c.key)
    return {r.key: RowState(dict(r._mapping)) for r in session.execute(select(t).where(t.c.id.in_(latest)))}


def flag_rows(session: Session, patient_id: int, leave_out: Collection[str] = ()) -> dict[str, RowState]:
    """key -> the patient's flag row of that key, but for the flags of the protocols in `leave_out`."""
    f = FlagRow.__table__
    query = select(f).where(f.c.patient_id == patient_id)
    if leave_out:
        query = query.where(f.c.protocol.not_in(sorted(leave_out)))
    return {r.key: RowState(dict(r._mapping)) for r in session.execute(query)}


@dataclass
class ReadState:
    patient: Any  # the patient row (attributes: id, nhs_number and the demographics)
    links: list[Link]
    facts: list  # plain rows of the fact table, in id order
    digest: str
    seq: int | None
    stored: dict[str, StoredResult] = field(default_factory=dict)
    tasks: dict[str, TaskState] = field(default_factory=dict)

    def record(self) -> PatientRecord:
        return PatientRecord(patient=_patient(self.patient, self.links), facts=[_fact(f) for f in self.facts])


@dataclass
class LockedState:
    digest: str
    heads: dict[str, StoredHead]
    tasks: dict[str, RowState]  # key -> the latest task row of the key
    flags: dict[str, RowState]  # key -> the flag row


def _date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


_PATIENT = ", ".join(f"p.{c}" for c in ("id", "nhs_number", *DEMOGRAPHICS))
_LINKS = ("(SELECT json_agg(json_build_array(l.id, l.source_system, l.source_id) ORDER BY l.id) "
          "FROM patient_source_id l WHERE l.patient_id = p.id)")

_PG_READ = sa.text(f"""
SELECT {_PATIENT},
  {_LINKS} AS links,
  (SELECT q.seq FROM pending_evaluation q WHERE q.patient_id = p.id) AS seq,
  (SELECT json_agg(json_build_array(e.id, e.protocol, e.version, e.reference_date, e.result))
     FROM patient_evaluation e WHERE e.patient_id = p.id) AS stored,
  (SELECT json_agg(json_build_array(t.key, t.status, t.condition_active)) FROM task t
     WHERE t.id IN (SELECT max(x.id) FROM task x WHERE x.patient_id = p.id GROUP BY x.key)) AS tasks
FROM patient p WHERE p.nhs_number = :nhs
""").columns(links=sa.JSON, stored=sa.JSON, tasks=sa.JSON)

_PG_LOCKED = sa.text(f"""
SELECT {_PATIENT},
  {_LINKS} AS links,
  (SELECT json_agg(json_build_array(f.id, f.source_system, f.source_id, f.content_hash) ORDER BY f.id)
     FROM fact f WHERE f.patient_id = p.id) AS facts,
  (SELECT json_agg(json_build_array(e.id, e.protocol, e.version, e.reference_date, e.result ->> '{INPUTS_KEY}',
                                    json_typeof(e.result) = 'object', e.result -> 'measures'))
     FROM patient_evaluation e WHERE e.patient_id = p.id) AS heads,
  (SELECT json_agg(row_to_json(t)) FROM task t
     WHERE t.id IN (SELECT max(x.id) FROM task x WHERE x.patient_id = p.id GROUP BY x.key)) AS tasks,
  (SELECT json_agg(row_to_json(g)) FROM flag g WHERE g.patient_id = p.id AND g.protocol <> ALL(:leave_out)) AS flags
FROM patient p WHERE p.id = :id
""").columns(links=sa.JSON, facts=sa.JSON, heads=sa.JSON, tasks=sa.JSON, flags=sa.JSON).bindparams(
    sa.bindparam("leave_out", type_=postgresql.ARRAY(sa.String)))
_PG_LOCK = sa.text("SELECT id FROM patient WHERE id = :id FOR UPDATE")


def _facts(session: Session, patient_id: int) -> list:
    table = FactRow.__table__
    return list(session.execute(select(table).where(table.c.patient_id == patient_id).order_by(table.c.id)))


def _digest(patient, links, fact_keys) -> str:
    return _record_digest(patient, links, fact_keys)


def read_state(session: Session, nhs_number: str) -> ReadState | None:
    """The patient's record rows, digest, outbox mark, stored results and current tasks (None: no such patient)."""
    if is_postgresql(session):
        row = session.execute(_PG_READ, {"nhs": nhs_number}).first()
        if row is None:
            return None
        links = [Link(*x) for x in row.links or ()]
        stored = {x[1]: StoredResult(x[0], x[1], x[2], _date(x[3]), x[4]) for x in row.stored or ()}
        tasks = {x[0]: TaskState(*x) for x in row.tasks or ()}
        seq = row.seq
    else:
        row = session.exec(select(PatientRow).where(PatientRow.nhs_number == nhs_number)).first()
        if row is None:
            return None
        links = [Link(x.id, x.source_system, x.source_id) for x in session.exec(
            select(PatientSourceId).where(PatientSourceId.patient_id == row.id).order_by(PatientSourceId.id))]
        seq = pending.pending_seq(session, row.id)
        e = PatientEvaluationRow.__table__
        stored = {r.protocol: StoredResult(r.id, r.protocol, r.version, r.reference_date, r.result) for r in session.execute(
            select(e.c.id, e.c.protocol, e.c.version, e.c.reference_date, e.c.result).where(e.c.patient_id == row.id))}
        tasks = {k: TaskState(k, t.status, t.condition_active) for k, t in task_rows(session, row.id).items()}
    facts = _facts(session, row.id)
    digest = _digest(row, links, ((f.id, f.source_system, f.source_id, f.content_hash) for f in facts))
    return ReadState(row, links, facts, digest, seq, stored, tasks)


def locked_state(session: Session, patient_id: int, leave_out_flags: Collection[str] = ()) -> LockedState | None:
    """Take the patient's write lock, then read the record's digest, the stored evaluations' heads, the
    latest task rows and the flag rows but those of the protocols in `leave_out_flags` (None: no such
    patient). PostgreSQL locks the patient row (one writer of a patient's outputs at a
    time, across worker processes) in the statement that reads the rest; SQLite takes its database
    write lock (a no-op update; the service's write engine already began with BEGIN IMMEDIATE)."""
    if is_postgresql(session):
        # Two statements: the lock first, so the read's snapshot is taken after it is granted (a statement
        # that waited for the lock still reads with the snapshot it began with, before the other writer's
        # commit: its stored rows would be stale).
        if session.execute(_PG_LOCK, {"id": patient_id}).first() is None:
            return None
        row = session.execute(_PG_LOCKED, {"id": patient_id, "leave_out": sorted(leave_out_flags)}).first()
        digest = _digest(row, [Link(*x) for x in row.links or ()], row.facts or ())
        heads = {x[1]: StoredHead(x[0], x[2], _date(x[3]), x[4], x[6], bool(x[5])) for x in row.heads or ()}
        tasks = {x["key"]: RowState(_typed(TaskRow.__table__, x)) for x in row.tasks or ()}
        flags = {x["key"]: RowState(_typed(FlagRow.__table__, x)) for x in row.flags or ()}
        return LockedState(digest, heads, tasks, flags)
    table = PatientRow.__table__
    session.execute(sa.update(table).where(table.c.id == patient_id).values(updated_at=table.c.updated_at))
    row = session.execute(select(table).where(table.c.id == patient_id)).first()
    if row is None:
        return None
    links = session.execute(select(PatientSourceId.id, PatientSourceId.source_system, PatientSourceId.source_id)
                            .where(PatientSourceId.patient_id == patient_id))
    facts = session.execute(select(FactRow.id, FactRow.source_system, FactRow.source_id, FactRow.content_hash)
                            .where(FactRow.patient_id == patient_id).order_by(FactRow.id))
    return LockedState(_digest(row, links, facts), stored_heads(session, patient_id), task_rows(session, patient_id),
                       flag_rows(session, patient_id, leave_out_flags))


def stored_heads(session: Session, patient_id: int) -> dict[str, StoredHead]:
    """protocol -> the head of each stored evaluation of the patient, read without the results themselves."""
    e = PatientEvaluationRow.__table__
    json_type = sa.func.json_typeof if is_postgresql(session) else sa.func.json_type
    rows = session.execute(select(e.c.id, e.c.protocol, e.c.version, e.c.reference_date, e.c.result[INPUTS_KEY].as_string(),
                                  e.c.result["measures"], json_type(e.c.result) == "object")
                           .where(e.c.patient_id == patient_id))
    return {protocol: StoredHead(id_, version, ref, inputs, measures, bool(is_object))
            for id_, protocol, version, ref, inputs, measures, is_object in rows}


