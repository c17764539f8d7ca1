"""Which database a session, engine or connection talks to: the one test the registry, the use cases
and the adapters make before taking a PostgreSQL-only path (row locks, advisory locks, INSERT ... ON
CONFLICT from the PostgreSQL dialect, one-statement data-modifying WITH)."""
from __future__ import annotations

from typing import Union

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

Bind = Union[Session, Engine, Connection]


def is_postgresql(bind: Bind) -> bool:
    """True when `bind` (a Session, or an Engine or Connection) is on PostgreSQL, False on SQLite."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    return bind.dialect.name == "postgresql"
