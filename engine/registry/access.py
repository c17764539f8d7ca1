"""Service tables (migration 0003): users, the access log, audit snapshots, MDT case-conference
outcomes, protocol publications and the service's signing key.

- `app_user`: one row per person; a role (clinical-lead, mdt-member, practice-staff, auditor,
  admin) and an optional scope (MDT, practice, locality) that limits which patients they see.
  Passwords are stored as argon2id hashes only. `token_version` is bumped on a password change or
  when the user is disabled, which invalidates every token and session issued before.
- `access_log`: append-only; every read of patient data and every change, who, when, which
  patients (NHS numbers), and refused attempts. Tamper-evident: each row is hash-chained to the
  one before it (engine/registry/logchain.py, `carepath audit verify-log`).
- `audit_snapshot`: measure counts per unit (practice / MDT / locality / area) as of a reporting
  date, for trends. One row per (as_of, protocol, measure, unit_kind, unit); re-taking a snapshot
  for the same date replaces it.
- `mdt_outcome`: what an MDT case conference decided about a patient.
- `protocol_publication`: who published which protocol version when (the file itself is the
  source of truth; see api/protocols_store.py).
- `service_key`: a random key generated once per database, used to sign tokens and to
  pseudonymise NHS numbers for auditors when CAREPATH_SECRET_KEY is not set.

Migration 0006 (issue 14):
- `auth_session`: one row per login (bearer token or session cookie). The token carries a random
  session id; only its SHA-256 is stored. Logout revokes that row; a session also ends when idle
  longer than the idle timeout or past its absolute expiry.
- `login_throttle`: failed-login counters, one row per key (`user:<name>` or `addr:<client address>`),
  updated atomically before a password is checked, so parallel guesses cannot all slip through.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from engine.registry.tables import _fk, _json, _when, utcnow

ROLES = ("clinical-lead", "mdt-member", "practice-staff", "auditor", "admin")


class UserRow(SQLModel, table=True):
    __tablename__ = "app_user"
    __table_args__ = (sa.UniqueConstraint("username", name="uq_app_user_username"),)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    full_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(200)))
    role: str = Field(sa_column=sa.Column(sa.String(30), nullable=False))
    mdt: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    practice: str | None = Field(default=None, sa_column=sa.Column(sa.String(6)))
    locality: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    password_hash: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    active: bool = Field(default=True, sa_column=sa.Column(sa.Boolean, nullable=False))
    token_version: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    created_at: dt.datetime = _when(default_factory=utcnow)
    updated_at: dt.datetime = _when(default_factory=utcnow)
    last_login_at: dt.datetime | None = _when(nullable=True, default=None)
    # migration 0012: the care roles this person works in (gp, practice-nurse, ...): who may complete which task
    clinical_roles: Any = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False, server_default="[]"))


class AccessLogRow(SQLModel, table=True):
    __tablename__ = "access_log"
    __table_args__ = (sa.Index("ix_access_log_at", "at"), sa.Index("ix_access_log_username", "username"))

    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = _when(default_factory=utcnow)
    user_id: int | None = None  # no foreign key: the log outlives anything it mentions
    username: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    role: str | None = Field(default=None, sa_column=sa.Column(sa.String(30)))
    action: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))  # read | write | login | denied
    method: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    path: str = Field(sa_column=sa.Column(sa.String(500), nullable=False))
    resource: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    status: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    patients: Any = _json(default_factory=list)  # NHS numbers read or changed
    detail: Any = _json(default_factory=dict)
    # Hash chain (migration 0007, engine/registry/logchain.py): row_hash = SHA-256(prev_hash + content);
    # set by logchain.seal() when the row is written (api.deps.log_access).
    prev_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    row_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))


class AuditSnapshotRow(SQLModel, table=True):
    __tablename__ = "audit_snapshot"
    __table_args__ = (sa.UniqueConstraint("as_of", "protocol", "measure", "unit_kind", "unit", name="uq_audit_snapshot"),)

    id: int | None = Field(default=None, primary_key=True)
    as_of: dt.date
    taken_at: dt.datetime = _when(default_factory=utcnow)
    taken_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    measure: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    unit_kind: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))  # practice | mdt | locality | area
    unit: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    initial_population: int = 0
    denominator: int = 0
    exclusions: int = 0
    numerator: int = 0
    exceptions: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))  # 0009
    # patients whose result needs a codelist the site has not supplied: in no count above (0014)
    cannot_determine: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))


class MdtOutcomeRow(SQLModel, table=True):
    __tablename__ = "mdt_outcome"
    __table_args__ = (sa.Index("ix_mdt_outcome_mdt", "mdt", "meeting_date"),)

    id: int | None = Field(default=None, primary_key=True)
    mdt: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    patient_id: int = _fk("patient.id", "fk_mdt_outcome_patient")
    meeting_date: dt.date
    outcome: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    actions: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # existing tasks the outcome reassigned or closed (engine.app.mdt_actions.apply_task_changes)
    task_changes: Any = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False, server_default="[]"))
    recorded_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    recorded_at: dt.datetime = _when(default_factory=utcnow)


class ProtocolPublicationRow(SQLModel, table=True):
    __tablename__ = "protocol_publication"
    __table_args__ = (sa.UniqueConstraint("protocol", "version", name="uq_protocol_publication"),)

    id: int | None = Field(default=None, primary_key=True)
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    path: str = Field(sa_column=sa.Column(sa.String(500), nullable=False))
    content_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    published_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    published_at: dt.datetime = _when(default_factory=utcnow)
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    # migration 0013: two-person publish — published_by is the author, approved_by the second person
    approved_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))


class ServiceKeyRow(SQLModel, table=True):
    __tablename__ = "service_key"

    name: str = Field(sa_column=sa.Column(sa.String(50), primary_key=True))
    value: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    created_at: dt.datetime = _when(default_factory=utcnow)


class AuthSessionRow(SQLModel, table=True):
    __tablename__ = "auth_session"
    __table_args__ = (sa.Index("ix_auth_session_user", "user_id"),)

    id_hash: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))  # sha256 hex of the token's session id
    user_id: int = _fk("app_user.id", "fk_auth_session_user")
    kind: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))  # bearer | cookie
    client: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    created_at: dt.datetime = _when(default_factory=utcnow)
    last_seen_at: dt.datetime = _when(default_factory=utcnow)
    expires_at: dt.datetime = _when()
    revoked_at: dt.datetime | None = _when(nullable=True, default=None)


class LoginThrottleRow(SQLModel, table=True):
    __tablename__ = "login_throttle"

    key: str = Field(sa_column=sa.Column(sa.String(200), primary_key=True))  # user:<name> | addr:<address>
    failures: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    last_failure_at: dt.datetime | None = _when(nullable=True, default=None)
    blocked_until: dt.datetime | None = _when(nullable=True, default=None)


class ImpactRunRow(SQLModel, table=True):
    """A background impact preview of a draft protocol (migration 0008): who started it, its progress
    (patients done of total, written every few patients) and, once done, the result
    (engine.app.impact.Report.as_dict). Status: queued | running | done | failed | interrupted (a run that
    was queued or running when the service stopped; marked on the next start)."""
    __tablename__ = "impact_run"
    __table_args__ = (sa.Index("ix_impact_run_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    from_version: str | None = Field(default=None, sa_column=sa.Column(sa.String(40)))
    to_version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    content_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))  # "file:<version>" | "text"
    as_of: dt.date
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    total: int = 0
    done: int = 0
    created_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    created_at: dt.datetime = _when(default_factory=utcnow)
    updated_at: dt.datetime = _when(default_factory=utcnow)
    finished_at: dt.datetime | None = _when(nullable=True, default=None)
    result: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))


class ProtocolDraftRow(SQLModel, table=True):
    """A protocol version submitted for publication (migration 0013): publishing needs a second person.
    The author submits the text; a different user with the publish permission (a clinical lead) approves
    it, which publishes it (engine.app.approvals). Status: awaiting-approval | published | withdrawn."""
    __tablename__ = "protocol_draft"
    __table_args__ = (sa.Index("ix_protocol_draft_status", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    protocol: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    version: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    content_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    yaml: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    note: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))
    submitted_by: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    submitted_at: dt.datetime = _when(default_factory=utcnow)
    decided_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    decided_at: dt.datetime | None = _when(nullable=True, default=None)
