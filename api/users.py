"""User management shared by the API (`/users`) and the CLI (`carepath users ...`)."""
from __future__ import annotations

from sqlmodel import Session, select

from api.security import hash_password
from engine.registry.access import ROLES, UserRow
from engine.registry.tables import utcnow

DEMO_PASSWORD_SUFFIX = "-demo-pw"
# username -> (role, full name, scope); password is "<username>-demo-pw" (documented in the README).
DEMO_USERS = {
    "clinical.lead": ("clinical-lead", "Dr Clara Lead", {}),
    "mdt.member": ("mdt-member", "Sam Member (Central 1 MDT)", {"mdt": "central-1"}),
    "practice.staff": ("practice-staff", "Pat Staff (A81001)", {"practice": "A81001"}),
    "auditor": ("auditor", "Alex Auditor", {}),
    "admin": ("admin", "Ada Admin", {}),
}


class UserError(ValueError):
    pass


def add_user(session: Session, username: str, password: str, role: str, *, full_name: str | None = None,
             mdt: str | None = None, practice: str | None = None, locality: str | None = None) -> UserRow:
    username = username.strip().lower()
    if role not in ROLES:
        raise UserError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    if len(password) < 8:
        raise UserError("password must have at least 8 characters")
    if session.exec(select(UserRow).where(UserRow.username == username)).first() is not None:
        raise UserError(f"user {username!r} already exists")
    row = UserRow(username=username, password_hash=hash_password(password), role=role, full_name=full_name, mdt=mdt,
                  practice=practice.upper() if practice else None, locality=locality)
    session.add(row)
    session.flush()
    return row


def update_user(session: Session, row: UserRow, *, password: str | None = None, role: str | None = None,
                active: bool | None = None, **scope) -> UserRow:
    revoke = False
    if password is not None:
        if len(password) < 8:
            raise UserError("password must have at least 8 characters")
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
