"""Passwords, tokens, roles, permissions and patient scoping.

- Passwords: argon2id (argon2-cffi) hashes only; a hash made with older parameters is re-hashed
  at the next successful login.
- Tokens: itsdangerous-signed `{"u": user id, "v": token_version, "s": session id}` with a
  timestamp; valid for `token_ttl` seconds. The same token is the bearer token (`POST /auth/token`)
  and the value of the session cookie (`POST /auth/login`). The session id names a server-side
  session (`auth_session`, api/sessions.py): logout revokes it, and it ends after the idle timeout.
  Bumping the user's `token_version` (password change, disable, `logout?everywhere=true`) revokes
  every token issued before.
- Permissions: a fixed table of what each role may do (`PERMISSIONS`); the role matrix test walks
  every endpoint against it.
- Scope: which patients a user may see. A user may carry an MDT, a practice and/or a locality;
  a patient is visible when it matches any of them. A clinical lead with none of them sees the
  whole area; a practice-staff / MDT-member account without its practice / MDT sees nobody.
  Auditors never see identifiable patients: their drill-downs are pseudonymised.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import false, or_

from engine.registry.access import ROLES, UserRow
from engine.registry.tables import PatientRow

CLINICAL_LEAD, MDT_MEMBER, PRACTICE_STAFF, AUDITOR, ADMIN = ROLES
CLINICAL = {CLINICAL_LEAD, MDT_MEMBER, PRACTICE_STAFF}

PERMISSIONS: dict[str, set[str]] = {
    "patient:read": CLINICAL,             # care plans, patient tasks / flags, FHIR per patient
    "patient:reevaluate": CLINICAL,
    "worklist:read": CLINICAL,
    "task:act": CLINICAL,                 # accept / complete / decline / reassign / reopen
    "mdt:read": {CLINICAL_LEAD, MDT_MEMBER},
    "mdt:write": {CLINICAL_LEAD, MDT_MEMBER},
    "ingest": {CLINICAL_LEAD, PRACTICE_STAFF, ADMIN},
    "ingest:bulk": {ADMIN},               # POST /ingest/bulk (NDJSON, any patient: the integration account)
    "audit:read": {CLINICAL_LEAD, PRACTICE_STAFF, AUDITOR},  # aggregates (no patient identifiers)
    "audit:drilldown": {CLINICAL_LEAD, PRACTICE_STAFF, AUDITOR},  # auditors get pseudonyms only
    "audit:snapshot": {CLINICAL_LEAD, AUDITOR},
    "protocol:read": set(ROLES),
    "protocol:validate": {CLINICAL_LEAD, ADMIN},
    "protocol:impact": {CLINICAL_LEAD},   # shows example patients
    "protocol:publish": {CLINICAL_LEAD},
    "users:manage": {ADMIN},
    "accesslog:read": {ADMIN, AUDITOR},
    "metrics:read": {ADMIN},              # GET /metrics (or the CAREPATH_METRICS_TOKEN, api/operations.py)
}

from engine.app.passwords import hash_password, verify_password  # noqa: E402,F401


class Tokens:
    def __init__(self, secret: str, ttl_seconds: int):
        self.ttl = ttl_seconds
        self._s = URLSafeTimedSerializer(secret, salt="carepath-token")

    def issue(self, user: UserRow, session_id: str = "") -> str:
        return self._s.dumps({"u": user.id, "v": user.token_version, "s": session_id})

    def read(self, token: str) -> tuple[int, int, str] | None:
        """(user id, token version, session id), or None when the token is forged, mangled or expired."""
        if not isinstance(token, str) or len(token) > 1000:
            return None
        try:
            data = self._s.loads(token, max_age=self.ttl)
        except (SignatureExpired, BadSignature, UnicodeError, ValueError, TypeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), int) or not isinstance(data.get("v"), int):
            return None
        sid = data.get("s")
        return data["u"], data["v"], sid if isinstance(sid, str) else ""


class Pseudonymiser:
    """Stable, keyed pseudonyms for NHS numbers (HMAC-SHA256): the same patient always gets the same
    pseudonym from one service, and it cannot be reversed without the key."""

    def __init__(self, key: str):
        self._key = key.encode()

    def __call__(self, nhs_number: str) -> str:
        return "P-" + hmac.new(self._key, nhs_number.encode(), hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class Scope:
    """Which patients a user may see."""

    everyone: bool = False
    mdt: str | None = None
    practice: str | None = None
    locality: str | None = None

    @classmethod
    def of(cls, user: UserRow) -> "Scope":
        if user.role in (ADMIN,):
            return cls()  # admins manage the service, they do not read patient records
        if user.role == AUDITOR:
            return cls(everyone=True)  # aggregates and pseudonymised drill-down only (enforced by endpoints)
        if user.role == CLINICAL_LEAD and not (user.mdt or user.practice or user.locality):
            return cls(everyone=True)
        return cls(mdt=user.mdt, practice=user.practice, locality=user.locality)

    def clause(self):
        """A SQL condition on PatientRow for the patients in scope."""
        if self.everyone:
            return None
        parts = []
        if self.mdt:
            parts.append(PatientRow.mdt == self.mdt)
        if self.practice:
            parts.append(PatientRow.practice == self.practice)
        if self.locality:
            parts.append(PatientRow.locality == self.locality)
        return or_(*parts) if parts else false()

    def allows(self, patient: PatientRow) -> bool:
        if self.everyone:
            return True
        return bool((self.mdt and patient.mdt == self.mdt) or (self.practice and patient.practice == self.practice)
                    or (self.locality and patient.locality == self.locality))

    def allows_values(self, mdt: str | None, practice: str | None, locality: str | None) -> bool:
        if self.everyone:
            return True
        return bool((self.mdt and mdt == self.mdt) or (self.practice and practice == self.practice)
                    or (self.locality and locality == self.locality))
