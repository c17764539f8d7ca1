"""Registry core: patient, patient_source_id, ingest_batch, fact.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Tasks, flags and outputs come in later revisions.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("practice", sa.String(length=6), nullable=True),
        sa.Column("locality", sa.String(length=100), nullable=True),
        sa.Column("mdt", sa.String(length=100), nullable=True),
        sa.Column("death_date", sa.Date(), nullable=True),
        sa.Column("registered_on", sa.Date(), nullable=True),
        sa.Column("given_name", sa.String(length=200), nullable=True),
        sa.Column("family_name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("nhs_number", name="uq_patient_nhs_number"),
    )
    op.create_index("ix_patient_practice", "patient", ["practice"])
    op.create_index("ix_patient_mdt", "patient", ["mdt"])

    op.create_table(
        "patient_source_id",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("source_system", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name="fk_patient_source_id_patient", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_system", "source_id", name="uq_patient_source_id"),
    )
    op.create_index("ix_patient_source_id_patient_id", "patient_source_id", ["patient_id"])

    op.create_table(
        "ingest_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("content_hash", sa.String(length=128), nullable=True),
        sa.Column("patients", sa.Integer(), nullable=False),
        sa.Column("facts_added", sa.Integer(), nullable=False),
        sa.Column("facts_updated", sa.Integer(), nullable=False),
        sa.Column("facts_unchanged", sa.Integer(), nullable=False),
        sa.Column("unsupported", sa.JSON(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ingest_batch_content_hash", "ingest_batch", ["content_hash"])

    op.create_table(
        "fact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("source_system", sa.String(length=100), nullable=False),
        sa.Column("source_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("care_setting", sa.String(length=32), nullable=False),
        sa.Column("exception_type", sa.String(length=32), nullable=True),
        sa.Column("codes", sa.JSON(), nullable=False),
        sa.Column("value_codes", sa.JSON(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.CheckConstraint('"end" IS NULL OR "end" >= start', name="ck_fact_period"),
        sa.ForeignKeyConstraint(["patient_id"], ["patient.id"], name="fk_fact_patient", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["batch_id"], ["ingest_batch.id"], name="fk_fact_ingest_batch"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("patient_id", "source_system", "source_id", name="uq_fact_source"),
    )
    op.create_index("ix_fact_patient_kind", "fact", ["patient_id", "kind"])
    op.create_index("ix_fact_batch_id", "fact", ["batch_id"])


def downgrade() -> None:
    op.drop_table("fact")
    op.drop_table("ingest_batch")
    op.drop_table("patient_source_id")
    op.drop_table("patient")
