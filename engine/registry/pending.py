"""Evaluation outbox and data problems (migration 0005).

- `pending_evaluation`: one row per patient whose stored facts are not yet reflected in their stored
  evaluation. Ingest writes it in the SAME transaction as the facts (engine/registry/ingest.py), so
  a crash between storing and evaluating can never leave a patient stored but forgotten: whatever
  is still pending is evaluated by the next drain (the request for small deliveries, a background
  drain for large ones, and the service's start). `seq` is bumped every time the patient is queued
  again; an evaluation removes the row only if `seq` is still the one it saw when it started, so a
  delivery that lands while the patient is being evaluated keeps its mark.
- `data_problem`: an evaluation that failed for one patient (e.g. a fact dated 0001-01-01 stored
  before the plausibility rules existed) is recorded here, with the fact that caused it when it is
  known, instead of failing anyone else's evaluation, the request or an area snapshot. A later
  successful evaluation of the patient resolves it (`resolved_at`).
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Field, Session, SQLModel, select

from engine.registry.dialect import is_postgresql
from engine.registry.tables import _fk, _when, utcnow

EVALUATION_ERROR = "evaluation-error"


class PendingEvaluationRow(SQLModel, table=True):
    __tablename__ = "pending_evaluation"
    __table_args__ = (sa.Index("ix_pending_evaluation_queued", "queued_at"),)

    patient_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("patient.id", name="fk_pending_evaluation_patient",
                                                                          ondelete="CASCADE"), primary_key=True))
    seq: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False))
    queued_at: dt.datetime = _when(default_factory=utcnow)
    batch_id: int | None = None  # the delivery that last queued the patient (no foreign key: informative)


class DataProblemRow(SQLModel, table=True):
    __tablename__ = "data_problem"
    __table_args__ = (sa.Index("ix_data_problem_patient", "patient_id", "resolved_at"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patient.id", "fk_data_problem_patient")
    kind: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    message: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    protocol: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    fact_source_system: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    fact_source_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    fact_problem: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    detected_at: dt.datetime = _when(default_factory=utcnow)
    resolved_at: dt.datetime | None = _when(nullable=True, default=None)


def queue(session: Session, patient_ids: Iterable[int], *, batch_id: int | None = None, now: dt.datetime | None = None) -> None:
    """Mark patients for evaluation (insert, or bump `seq` of an existing mark). The caller commits:
    do it in the transaction that stores what makes the evaluation necessary."""
    ids = sorted(set(patient_ids))
    if not ids:
        return
    now = now or utcnow()
    table = PendingEvaluationRow.__table__
    insert = pg_insert if is_postgresql(session) else sqlite_insert
    for i in range(0, len(ids), 500):
        rows = [dict(patient_id=p, seq=1, queued_at=now, batch_id=batch_id) for p in ids[i:i + 500]]
        # One row as a plain VALUES (the same SQL): SQLAlchemy caches its compiled form, never a multi-row
        # VALUES with ON CONFLICT (compiled again on every delivery otherwise: issue 17, P2).
        stmt = insert(table).values(rows[0] if len(rows) == 1 else rows)
        stmt = stmt.on_conflict_do_update(index_elements=["patient_id"],
                                          set_=dict(seq=table.c.seq + 1, queued_at=stmt.excluded.queued_at,
                                                    batch_id=stmt.excluded.batch_id))
        session.execute(stmt)


def pending_seq(session: Session, patient_id: int) -> int | None:
    return session.exec(select(PendingEvaluationRow.seq).where(PendingEvaluationRow.patient_id == patient_id)).first()


def clear(session: Session, patient_id: int, seq: int | None) -> None:
    """Remove the patient's mark if it is still the one seen (`seq`) when the evaluation started."""
    if seq is None:
        return
    table = PendingEvaluationRow.__table__
    session.execute(sa.delete(table).where(table.c.patient_id == patient_id, table.c.seq == seq))


def settle(session: Session, patient_id: int, seq: int | None, now: dt.datetime, kind: str = EVALUATION_ERROR, *,
           also: sa.Update | None = None) -> None:
    """After a successful evaluation: `clear` the mark it answered and `resolve_problems` of the patient;
    `also` (another UPDATE of the same transaction, touching other tables: the evaluation time of the
    reused results) is written with them. One statement on PostgreSQL (a data-modifying WITH: its parts
    see the same snapshot, so none of them may touch rows another part writes), one each on SQLite."""
    problems = DataProblemRow.__table__
    resolve = (sa.update(problems).where(problems.c.patient_id == patient_id, problems.c.kind == kind,
                                         problems.c.resolved_at.is_(None)).values(resolved_at=now))
    if not is_postgresql(session):
        if also is not None:
            session.execute(also)
        clear(session, patient_id, seq)
        session.execute(resolve)
        return
    if seq is not None:
        marks = PendingEvaluationRow.__table__
        resolve = resolve.add_cte(sa.delete(marks).where(marks.c.patient_id == patient_id, marks.c.seq == seq)
                                  .returning(marks.c.patient_id).cte("cleared"))
    if also is not None:
        resolve = resolve.add_cte(also.cte("also"))
    session.execute(resolve)


def open_problems(session: Session, patient_ids: Iterable[int] | None = None) -> list[DataProblemRow]:
    q = select(DataProblemRow).where(DataProblemRow.resolved_at.is_(None))
    if patient_ids is not None:
        ids = list(set(patient_ids))
        if not ids:
            return []
        q = q.where(DataProblemRow.patient_id.in_(ids))
    return list(session.exec(q.order_by(DataProblemRow.patient_id, DataProblemRow.id)))


def record_problem(session: Session, patient_id: int, *, message: str, kind: str = EVALUATION_ERROR,
                   protocol: str | None = None, fact_source_system: str | None = None, fact_source_id: str | None = None,
                   fact_problem: str | None = None, now: dt.datetime | None = None) -> DataProblemRow:
    """Keep one open problem per patient and kind: the same problem again only moves `detected_at`."""
    now = now or utcnow()
    values = dict(message=message[:4000], protocol=protocol, fact_source_system=fact_source_system,
                  fact_source_id=fact_source_id, fact_problem=(fact_problem or None) and fact_problem[:4000])
    row = None
    for old in open_problems(session, [patient_id]):
        if old.kind != kind:
            continue
        if all(getattr(old, k) == v for k, v in values.items()):
            row = old
        else:
            old.resolved_at = now
            session.add(old)
    if row is None:
        row = DataProblemRow(patient_id=patient_id, kind=kind, **values)
    row.detected_at = now
    session.add(row)
    session.flush()
    return row


def resolve_problems(session: Session, patient_id: int, now: dt.datetime, kind: str = EVALUATION_ERROR) -> None:
    table = DataProblemRow.__table__
    session.execute(sa.update(table).where(table.c.patient_id == patient_id, table.c.kind == kind,
                                           table.c.resolved_at.is_(None)).values(resolved_at=now))
