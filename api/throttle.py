"""Password guessing: a progressive delay per username and per client address, never a lockout.

Every login attempt is first counted as a failure, atomically, on two keys (`login_throttle` rows):
`user:<username>` and `addr:<client address>`; only then is the password checked, and a right
password takes its count back. So 40 parallel guesses cannot all be checked before the count
catches up: the row is updated under a write lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL
`SELECT ... FOR UPDATE`), one attempt after another.

- The first `free` failures of a key cost nothing. From then on each failure starts a delay,
  `base * 2**(failures - free)` seconds, capped at `cap`; an attempt inside the delay is refused
  (429, Retry-After) without checking the password, and is not counted.
- When the delay has passed, the next attempt is checked: the right password always works then,
  and clears the username's count. (Nobody can lock an account for good: at worst a guesser gets
  one try per `cap` seconds, and so does the user.)
- A key's count is forgotten `window` after its last failure.
- The address key counts failures across every username (password spraying); unknown usernames
  are counted like real ones, so the answers do not reveal which usernames exist.

The client address is the TCP peer (`request.client.host`): behind a reverse proxy, run uvicorn
with `--proxy-headers --forwarded-allow-ips=<proxy>` so it is the browser's address.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, select

from engine.registry.access import LoginThrottleRow


@dataclass(frozen=True)
class ThrottlePolicy:
    user_free: int = 5            # failures per username before delays start
    addr_free: int = 30           # failures per client address (any usernames) before delays start
    base_seconds: float = 2.0     # the first delay; doubles with each further failure
    cap_seconds: float = 300.0    # the longest delay
    window: dt.timedelta = dt.timedelta(minutes=15)  # a key is forgotten this long after its last failure

    def free(self, key: str) -> int:
        return self.addr_free if key.startswith("addr:") else self.user_free

    def delay(self, key: str, failures: int) -> float:
        over = failures - self.free(key)
        if over < 0:
            return 0.0
        return min(self.cap_seconds, self.base_seconds * 2 ** min(over, 30))


def keys_for(username: str, address: str | None) -> list[str]:
    return sorted({f"user:{username[:190]}", f"addr:{(address or 'unknown')[:190]}"})  # sorted: one lock order


def _ensure_rows(s: Session, keys: list[str]) -> None:
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - carepath runs on SQLite and PostgreSQL only
        raise RuntimeError(f"login throttling needs SQLite or PostgreSQL, not {dialect}")
    for key in keys:
        s.execute(insert(LoginThrottleRow.__table__).values(key=key, failures=0).on_conflict_do_nothing(index_elements=["key"]))


def reserve(engine, policy: ThrottlePolicy, keys: list[str], now: dt.datetime) -> float:
    """Count one attempt as a failure on every key, unless a key is inside its delay: then nothing
    is counted and the seconds still to wait are returned (0 when the attempt may go ahead)."""
    with Session(engine) as s:
        _ensure_rows(s, keys)
        rows = [s.exec(select(LoginThrottleRow).where(LoginThrottleRow.key == k).with_for_update()).one() for k in keys]
        for r in rows:
            blocked = r.blocked_until is not None and r.blocked_until > now
            if not blocked and r.last_failure_at is not None and now - r.last_failure_at > policy.window:
                r.failures, r.blocked_until = 0, None
        wait = max([(r.blocked_until - now).total_seconds() for r in rows
                    if r.blocked_until is not None and r.blocked_until > now] or [0.0])
        if wait <= 0:
            for r in rows:
                r.failures += 1
                r.last_failure_at = now
                d = policy.delay(r.key, r.failures)
                r.blocked_until = now + dt.timedelta(seconds=d) if d else None
        for r in rows:
            s.add(r)
        if wait <= 0 and any(r.failures == 1 for r in rows):  # a new key: forget keys idle for a day
            s.execute(delete(LoginThrottleRow).where(LoginThrottleRow.last_failure_at < now - dt.timedelta(days=1),
                                                     LoginThrottleRow.key.not_in(keys)))
        s.commit()
        return wait


def succeeded(engine, policy: ThrottlePolicy, keys: list[str], now: dt.datetime) -> None:
    """The password was right: the username's count is cleared; the address gives back this attempt."""
    with Session(engine) as s:
        for k in keys:
            r = s.exec(select(LoginThrottleRow).where(LoginThrottleRow.key == k).with_for_update()).first()
            if r is None:
                continue
            if k.startswith("user:"):
                r.failures, r.blocked_until = 0, None
            else:
                r.failures = max(0, r.failures - 1)
                if r.failures < policy.free(k):
                    r.blocked_until = None
            s.add(r)
        s.commit()


def retry_after(wait: float) -> int:
    return max(1, math.ceil(wait))
