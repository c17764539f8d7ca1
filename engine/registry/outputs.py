"""Stored outputs: worklist tasks with their lifecycle, flags, and each patient's latest evaluation.

A task is identified by its `key` (patient | protocol | activity or rule). Several rows may share a
key over time: when a task closes and later becomes due again (next year's HbA1c), a new row opens.
`condition_active` remembers whether the evaluation still asks for the task, so a task a clinician
closed (completed / declined) is never re-created while the same need persists.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel, select

from engine.registry.tables import _fk, _json, _when, utcnow

OPEN_STATUSES = ("open", "accepted")
CLOSED_STATUSES = ("completed", "declined", "resolved")


class TaskRow(SQLModel, table=True):
    __tablename__ = "task"
    __table_args__ = (
        sa.Index("ix_task_key", "key"),
        sa.Index("ix_task_status_due", "status", "due"),
        sa.Index("ix_task_patient", "patient_id"),
        # Worklists filter by role (and status): without it a role's worklist reads every open task (migration 0004).
        sa.Index("ix_task_role_status", "role", "status"),
        # Every column the worklist page filters and counts by (api.web.worklist facets): its dozen counts read
        # this index alone, not the task rows with their why and evidence (10-25 times faster; migration 0017).
        sa.Index("ix_task_worklist", "status", "due", "patient_id", "provider", "priority", "role", "protocol", "team"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    patient_id: int = _fk("patient.id", "fk_task_patient")
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    title: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    priority: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    status: str = Field(sa_column=sa.Column(sa.String(12), nullable=False))
    raised_at: dt.datetime = _when()
    due: dt.datetime = _when()
    provider: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    team: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    role: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    response: str | None = Field(default=None, sa_column=sa.Column(sa.String(40)))
    agreement: str | None = Field(default=None, sa_column=sa.Column(sa.String(140)))
    why: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    evidence: Any = _json(default_factory=list)
    condition_active: bool = Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False))
    closed_at: dt.datetime | None = _when(nullable=True, default=None)
    closed_reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    updated_at: dt.datetime = _when(default_factory=utcnow)
    # migration 0012: the coded outcome of a completion (engine.app.task_outcomes) and who closed it
    outcome: str | None = Field(default=None, sa_column=sa.Column(sa.String(30)))
    closed_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))


def patient_tasks_query(patient_id: int, include_closed: bool = False):
    """The select for one patient's tasks: the open ones (open / accepted), or every task with
    `include_closed`. Unordered: add the order_by you need."""
    q = select(TaskRow).where(TaskRow.patient_id == patient_id)
    return q if include_closed else q.where(TaskRow.status.in_(OPEN_STATUSES))


class TaskEventRow(SQLModel, table=True):
    """The history of a task: every status change and reassignment, who did it and why."""

    __tablename__ = "task_event"
    __table_args__ = (sa.Index("ix_task_event_task", "task_id"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = _fk("task.id", "fk_task_event_task")
    at: dt.datetime = _when(default_factory=utcnow)
    action: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    actor: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    from_status: str | None = Field(default=None, sa_column=sa.Column(sa.String(12)))
    to_status: str | None = Field(default=None, sa_column=sa.Column(sa.String(12)))
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text))


class FlagRow(SQLModel, table=True):
    __tablename__ = "flag"
    __table_args__ = (sa.UniqueConstraint("key", name="uq_flag_key"), sa.Index("ix_flag_patient", "patient_id"))

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    patient_id: int = _fk("patient.id", "fk_flag_patient")
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    code: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    level: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    text: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    why: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    evidence: Any = _json(default_factory=list)
    active: bool = Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False))
    raised_at: dt.datetime = _when()
    cleared_at: dt.datetime | None = _when(nullable=True, default=None)


class PatientEvaluationRow(SQLModel, table=True):
    """The latest evaluation of one protocol for one patient (care plan, goals, measures, why)."""

    __tablename__ = "patient_evaluation"
    __table_args__ = (sa.UniqueConstraint("patient_id", "protocol", name="uq_patient_evaluation"),
                      # the latest store, one index look-up: the audit's cached figures' mark (engine.app.audit_cache)
                      sa.Index("ix_patient_evaluation_evaluated_at", "evaluated_at"),
                      # the worklist's risk tiers of its patients read from the index alone (api.web.worklist._tiers)
                      sa.Index("ix_patient_evaluation_patient_tier", "patient_id", "tier_level"))

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patient.id", "fk_patient_evaluation_patient")
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    reference_date: dt.date
    evaluated_at: dt.datetime = _when(default_factory=utcnow)
    on_register: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    result: Any = _json(default_factory=dict)
    # the stored result's risk tier level (`result.tier.level`, a stratification protocol's), NULL when it has none:
    # a column so the worklist need not read every stored result's JSON for it (migration 0017)
    tier_level: int | None = Field(default=None, sa_column=sa.Column(sa.Integer))


class PatientMeasureRow(SQLModel, table=True):
    """One measure of one patient's latest stored evaluation of a protocol, as counts per population step
    (0 / 1 for a patient-based measure; the episodes in each step for an episode-based one, CMS22).
    Kept with `patient_evaluation` by the store path (engine.registry.measure_results.replace_measures)
    so the audit figures are SQL sums (issue 16: aggregating the stored JSON took 10-20 s at 20,000
    patients). Migration 0011 fills it from the evaluations stored before it existed."""

    __tablename__ = "patient_measure"
    # No index on (protocol, measure): the audit's sums read every row, and SQLite reading them through such
    # an index (a random row access each) took twice as long as a plain scan (bench pages, 20,000 patients).
    __table_args__ = (sa.Index("ix_patient_measure_patient_protocol", "patient_id", "protocol"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patient.id", "fk_patient_measure_patient")
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    measure: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    title: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    initial_population: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    denominator: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    exclusions: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    exceptions: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    numerator: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    # 1 when the result cannot be determined (a declared codelist not supplied): every step count is then 0 and
    # `missing_codelists` names the codelists, comma-separated and sorted (engine.app.audit.Counts.add)
    cannot_determine: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    missing_codelists: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # a measure with `value:` (issue 19): the patient's number (e.g. emergency admissions in the period) when
    # they are in the denominator and not excluded; NULL when the measure has no value, the patient is not
    # counted, or a number it needs is missing (never 0 in its place). Migration 0015.
    value: float | None = Field(default=None, sa_column=sa.Column(sa.Float))
