"""Registry tables (SQLModel). The schema is created and changed only by the Alembic migrations in
`engine/registry/migrations/`; a test checks the migrated schema matches this metadata.

One `patient` row per NHS number, whichever systems its data came from; `patient_source_id` maps
each source system's own patient id (e.g. a FHIR Patient.id) to that one patient. Every `fact`
keeps its source system, source id and care setting, so a care-plan line can be traced back to the
record that caused it. `ingest_batch` records each delivery.

Later tables (tasks, flags, outputs) belong in later migrations.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> dt.datetime:
    """Naive UTC, like every datetime in the registry (facts are normalised to naive UTC too)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _fk(target: str, name: str, **kw: Any) -> Any:
    return Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey(target, name=name, ondelete="CASCADE"), nullable=False, **kw))


def _when(nullable: bool = False, **kw: Any) -> Any:
    # Explicitly without time zone: SQLModel would pick TIMESTAMP WITH TIME ZONE on PostgreSQL,
    # which shifts naive values by the server's zone and returns aware datetimes.
    return Field(sa_column=sa.Column(sa.DateTime(timezone=False), nullable=nullable), **kw)


def _json(**kw: Any) -> Any:
    return Field(sa_column=sa.Column(sa.JSON, nullable=False), **kw)


class PatientRow(SQLModel, table=True):
    __tablename__ = "patient"
    __table_args__ = (sa.UniqueConstraint("nhs_number", name="uq_patient_nhs_number"),)

    id: int | None = Field(default=None, primary_key=True)
    nhs_number: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    birth_date: dt.date
    sex: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    practice: str | None = Field(default=None, sa_column=sa.Column(sa.String(6), index=True))
    locality: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    mdt: str | None = Field(default=None, sa_column=sa.Column(sa.String(100), index=True))
    death_date: dt.date | None = None
    registered_on: dt.date | None = None
    given_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    family_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    created_at: dt.datetime = _when(default_factory=utcnow)
    updated_at: dt.datetime = _when(default_factory=utcnow)


class PatientSourceId(SQLModel, table=True):
    """A source system's own id for a patient; one (system, id) belongs to exactly one patient."""

    __tablename__ = "patient_source_id"
    __table_args__ = (sa.UniqueConstraint("source_system", "source_id", name="uq_patient_source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patient.id", "fk_patient_source_id_patient", index=True)
    source_system: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    source_id: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))


class IngestBatch(SQLModel, table=True):
    """One delivery (a bundle, an extract) and what became of it."""

    __tablename__ = "ingest_batch"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    received_at: dt.datetime = _when(default_factory=utcnow)
    content_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), index=True))
    patients: int = 0
    facts_added: int = 0
    facts_updated: int = 0
    facts_unchanged: int = 0
    unsupported: dict = _json(default_factory=dict)  # resource type -> count, as reported by the importer
    skipped: list = _json(default_factory=list)  # importer's reasons for entries it could not use


class FactRow(SQLModel, table=True):
    __tablename__ = "fact"
    __table_args__ = (
        # The idempotency key: re-sending a source's fact updates it instead of duplicating it.
        sa.UniqueConstraint("patient_id", "source_system", "source_id", name="uq_fact_source"),
        sa.CheckConstraint('"end" IS NULL OR "end" >= start', name="ck_fact_period"),
        sa.Index("ix_fact_patient_kind", "patient_id", "kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    patient_id: int = _fk("patient.id", "fk_fact_patient")
    source_system: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    source_id: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    start: dt.datetime = _when()
    end: dt.datetime | None = _when(nullable=True, default=None)
    value: float | None = None
    unit: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    status: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    care_setting: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    exception_type: str | None = Field(default=None, sa_column=sa.Column(sa.String(32)))
    codes: list = _json()
    value_codes: list = _json(default_factory=list)
    attrs: dict = _json(default_factory=dict)
    content_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))  # of the fact's content: cheap "unchanged" test
    ingested_at: dt.datetime = _when(default_factory=utcnow)  # when last added or changed
    batch_id: int = Field(sa_column=sa.Column(sa.Integer, sa.ForeignKey("ingest_batch.id", name="fk_fact_ingest_batch"), nullable=False, index=True))
