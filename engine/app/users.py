"""User management shared by the API (`/users`) and the CLI (`carepath users ...`): one set of
rules for usernames and passwords, whichever way a user is made or changed.

Usernames: 2-100 characters, lower-case letters, digits, '.', '_' and '-', starting with a letter
or digit (`USERNAME_PATTERN`, also the API schema's).

Passwords (OWASP ASVS 4.0 L2, 2.1.1-2.1.9): at least 12 characters, up to 128 (any characters,
spaces and Unicode included, no composition rules), and not easy to guess: zxcvbn (Dropbox's
estimator; its dictionaries include the most common passwords from public breach corpora) must
score it at least 3 of 4, with the username and the service's name as known words. The demo
users' passwords (`<username>-demo-pw`) pass this policy; they are public, so never use the demo
users outside a demo.
"""
from __future__ import annotations

import re
import unicodedata

from sqlmodel import Session, select

from engine.app.passwords import hash_password
from engine.app.task_outcomes import CLINICAL_ROLE_PATTERN
from engine.registry.access import ROLES, UserRow
from engine.registry.tables import utcnow

DEMO_PASSWORD_SUFFIX = "-demo-pw"
# username -> (role, full name, scope); password is "<username>-demo-pw" (documented in the README).
# The care roles (clinical_roles) decide which tasks each may complete (engine.app.task_outcomes).
DEMO_USERS = {
    "clinical.lead": ("clinical-lead", "Dr Clara Lead", {"clinical_roles": ["gp"]}),
    "second.lead": ("clinical-lead", "Dr Sam Second (approves protocol versions)", {"clinical_roles": ["gp"]}),
    "mdt.member": ("mdt-member", "Sam Member (Central 1 MDT)", {"mdt": "central-1", "clinical_roles": ["care-coordinator"]}),
    "practice.staff": ("practice-staff", "Pat Staff (A81001)",
                       {"practice": "A81001", "clinical_roles": ["practice-nurse", "healthcare-assistant"]}),
    "auditor": ("auditor", "Alex Auditor", {}),
    "admin": ("admin", "Ada Admin", {}),
}


class UserError(ValueError):
    pass


USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,99}$"
MIN_PASSWORD, MAX_PASSWORD = 12, 128
MIN_SCORE = 3  # zxcvbn: 3 = "safely unguessable: moderate protection from offline slow-hash scenario"
CONTEXT_WORDS = ["carepath", "care path", "clinical", "demo", "password", "nhs"]


def username_problem(username: str) -> str | None:
    if not re.fullmatch(USERNAME_PATTERN, username or ""):
        return ("a username has 2 to 100 characters: lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter or digit")
    return None


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why this password is refused for a new or changed password, or None."""
    if not isinstance(password, str):
        return "the password must be text"
    password = unicodedata.normalize("NFC", password)
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password may have at most {MAX_PASSWORD} characters"
    if any(unicodedata.category(c) == "Cc" for c in password):
        return "the password may not contain control characters"
    if not password.strip():
        return "the password may not be only spaces"
    if username and password.strip().lower() == username.strip().lower():
        return "the password may not be the username"
    from zxcvbn import zxcvbn

    words = CONTEXT_WORDS + ([username, *re.split(r"[._-]", username)] if username else [])
    # zxcvbn refuses (4.5) or is slow on (4.4) long input: the first 72 characters are scored, the rest only help
    result = zxcvbn(password[:72], user_inputs=[w for w in words if w])
    if result["score"] < MIN_SCORE:
        hint = result["feedback"].get("warning") or "it is a common password or close to one"
        return f"the password is too easy to guess ({hint.rstrip('.')}): use a longer phrase of unrelated words"
    return None


def add_user(session: Session, username: str, password: str, role: str, *, full_name: str | None = None,
             mdt: str | None = None, practice: str | None = None, locality: str | None = None,
             clinical_roles: list[str] | None = None) -> UserRow:
    username = username.strip()
    if problem := username_problem(username):
        raise UserError(problem)
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if problem := password_problem(password, username):
        raise UserError(problem)
    if session.exec(select(UserRow).where(UserRow.username == username)).first() is not None:
        raise UserError(f"user {username!r} already exists")
    row = UserRow(username=username, password_hash=hash_password(password), role=role, full_name=full_name, mdt=mdt,
                  practice=practice.upper() if practice else None, locality=locality,
                  clinical_roles=_clinical_roles(clinical_roles or []))
    session.add(row)
    session.flush()
    return row


def _clinical_roles(roles: list[str]) -> list[str]:
    out = []
    for r in roles:
        r = r.strip().lower()
        if not re.fullmatch(CLINICAL_ROLE_PATTERN, r):
            raise UserError(f"a care role is a lower-case word or words joined by '-', e.g. practice-nurse (not {r!r})")
        if r not in out:
            out.append(r)
    return out


def update_user(session: Session, row: UserRow, *, password: str | None = None, role: str | None = None,
                active: bool | None = None, clinical_roles: list[str] | None = None, **scope) -> UserRow:
    revoke = False
    if clinical_roles is not None:
        row.clinical_roles = _clinical_roles(clinical_roles)
    if password is not None:
        if problem := password_problem(password, row.username):
            raise UserError(problem)
        row.password_hash = hash_password(password)
        revoke = True
    if role is not None:
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}")
        revoke = revoke or role != row.role
        row.role = role
    if active is not None:
        revoke = revoke or (row.active and not active)
        row.active = active
    for key, value in scope.items():  # full_name, and the scope: mdt / practice / locality ("" clears)
        if value is not None:
            value = (value.upper() if key == "practice" else value) or None
            revoke = revoke or (key != "full_name" and getattr(row, key) != value)
            setattr(row, key, value)
    if revoke:
        row.token_version += 1  # tokens issued before the change stop working
    row.updated_at = utcnow()
    session.add(row)
    return row


def ensure_demo_users(session: Session) -> list[str]:
    """Create the demo users that do not exist yet; returns the usernames created."""
    made = []
    for username, (role, name, scope) in DEMO_USERS.items():
        if session.exec(select(UserRow).where(UserRow.username == username)).first() is None:
            add_user(session, username, username + DEMO_PASSWORD_SUFFIX, role, full_name=name, **scope)
            made.append(username)
    session.commit()
    return made
