"""Server-side sessions (`auth_session`).

Each login (bearer token or session cookie) opens a session: a random id that goes inside the signed
token, stored here only as its SHA-256. A token is accepted only while its session is

- not revoked (`POST /auth/logout` revokes the caller's session; `?everywhere=true`, a password,
  role or scope change and disabling the user revoke all of theirs, via `token_version` too),
- not idle for longer than the idle timeout (`CAREPATH_IDLE_TIMEOUT`, default 30 minutes): each
  use moves `last_seen_at` on (written at most once a minute per session),
- not past its absolute expiry (`CAREPATH_TOKEN_TTL`, default 8 hours, however busy).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from api.db import SQLITE_BUSY_TIMEOUT_S
from engine.registry.access import AuthSessionRow, UserRow

TOUCH_EVERY = dt.timedelta(seconds=60)


def id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(s: Session, user: UserRow, *, kind: str, client: str | None, now: dt.datetime, ttl_seconds: int) -> str:
    """A new session for `user` in the caller's (write) transaction; returns its id (for the token)."""
    sid = secrets.token_urlsafe(32)
    # housekeeping: this user's sessions that ended more than a day ago
    s.execute(delete(AuthSessionRow).where(AuthSessionRow.user_id == user.id, or_(
        AuthSessionRow.expires_at < now - dt.timedelta(days=1), AuthSessionRow.revoked_at < now - dt.timedelta(days=1),
        AuthSessionRow.last_seen_at < now - dt.timedelta(days=1))))
    s.add(AuthSessionRow(id_hash=id_hash(sid), user_id=user.id, kind=kind, client=(client or "")[:100] or None,
                         created_at=now, last_seen_at=now, expires_at=now + dt.timedelta(seconds=ttl_seconds)))
    return sid


@dataclass(frozen=True)
class Checked:
    user: UserRow | None
    session: AuthSessionRow | None
    problem: str | None


def check(state, token: str | None) -> Checked:
    """Is this token good now? (read only: see `touch`)."""
    if not token:
        return Checked(None, None, "not logged in: send Authorization: Bearer <token> or log in for a session cookie")
    parsed = state.tokens.read(token)
    if parsed is None:
        return Checked(None, None, "token invalid or expired: log in again")
    uid, version, sid = parsed
    now = state.now()
    if not sid:
        return Checked(None, None, "token revoked: log in again")
    with Session(state.engines.read) as s:
        # the user and their session in one statement (the session joined only if it is this user's)
        got = s.exec(select(UserRow, AuthSessionRow)
                     .outerjoin(AuthSessionRow, and_(AuthSessionRow.id_hash == id_hash(sid), AuthSessionRow.user_id == UserRow.id))
                     .where(UserRow.id == uid)).first()
        user, row = got if got is not None else (None, None)
        if user is None or not user.active or user.token_version != version:
            return Checked(None, None, "token revoked: log in again")
        if row is None or row.revoked_at is not None:
            return Checked(None, None, "session ended (logged out): log in again")
        if row.expires_at <= now:
            return Checked(None, None, "session expired: log in again")
        if now - row.last_seen_at > dt.timedelta(seconds=state.idle_timeout):
            return Checked(None, None, "session ended after inactivity: log in again")
        s.expunge(user)
        s.expunge(row)
        return Checked(user, row, None)


CHECKED_KEY = "carepath_checked_session"  # in the ASGI scope's state: (token, Checked) of this request


def remember(scope: dict, token: str | None, checked: Checked) -> None:
    """Keep a request's login check for the rest of the same request (api/limits.py checks the login
    before reading the body; the route's dependency then need not read the user and session again)."""
    scope.setdefault("state", {})[CHECKED_KEY] = (token, checked)


def check_request(state, scope: dict, token: str | None) -> Checked:
    """`check`, or the check this request made already for the same token."""
    got = (scope.get("state") or {}).get(CHECKED_KEY)
    if got is not None and got[0] == token and got[1].problem is None:
        return got[1]
    return check(state, token)


def touch(state, row: AuthSessionRow) -> None:
    """Record that the session was used (for the idle timeout), at most once a minute. Never makes a
    read wait behind a long write: on SQLite it gives up after 0.2 s if the database is busy (a later
    request records it), on PostgreSQL it only ever waits for this one row."""
    now = state.now()
    if now - row.last_seen_at < TOUCH_EVERY:
        return
    engine = state.engines.read
    sqlite = engine.dialect.name == "sqlite"
    stmt = (update(AuthSessionRow).where(AuthSessionRow.id_hash == row.id_hash, AuthSessionRow.revoked_at.is_(None),
                                         AuthSessionRow.last_seen_at < now).values(last_seen_at=now))
    with engine.connect() as conn:
        if sqlite:
            conn.exec_driver_sql("PRAGMA busy_timeout=200")
        try:
            conn.execute(stmt)
            conn.commit()
        except OperationalError:  # busy (SQLite): not worth waiting for
            conn.rollback()
        finally:
            if sqlite:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")


def revoke(s: Session, session_hash: str, now: dt.datetime) -> None:
    s.execute(update(AuthSessionRow).where(AuthSessionRow.id_hash == session_hash, AuthSessionRow.revoked_at.is_(None))
              .values(revoked_at=now))


def revoke_all(s: Session, user_id: int, now: dt.datetime) -> None:
    s.execute(update(AuthSessionRow).where(AuthSessionRow.user_id == user_id, AuthSessionRow.revoked_at.is_(None))
              .values(revoked_at=now))
