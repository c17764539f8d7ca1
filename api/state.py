"""The service's application state: settings, the database engines, the protocol library (reloaded when
its files change), signing and pseudonym keys. Routers and pages read it with `api.deps.get_state`;
`api.app.create_app` builds it. Its own module, so routers never import the app that includes them."""
from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from api.db import Engines
from api.security import Pseudonymiser, Tokens
from api.throttle import ThrottlePolicy
from engine.language.library import Library, library_fingerprint, load_library
from engine.registry.access import ServiceKeyRow
from engine.registry.tables import utcnow

DEFAULT_TOKEN_TTL = 8 * 3600       # absolute session lifetime (CAREPATH_TOKEN_TTL)
DEFAULT_IDLE_TIMEOUT = 30 * 60     # a session unused this long ends (CAREPATH_IDLE_TIMEOUT)
COOKIE_NAME = "carepath_session"


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0, not {value!r}")


class LibraryHolder:
    """The protocol library, reloaded when any protocol file or codelist it reads changes (library_fingerprint: a
    codelist a site supplies with `carepath codelists import` takes effect without restarting the service)."""

    def __init__(self, root: Path, check_every: float = 1.0):
        self.root = Path(root)
        self.check_every = check_every
        self._lock = threading.Lock()
        self._fingerprint: tuple | None = None
        self._checked = 0.0
        self._library: Library | None = None

    def get(self, force: bool = False) -> Library:
        now = time.monotonic()
        if not force and self._library is not None and now - self._checked < self.check_every:
            return self._library
        with self._lock:
            fp = library_fingerprint([self.root])  # shared definitions above the folder and the site codelists too
            self._checked = time.monotonic()
            if force or self._library is None or fp != self._fingerprint:
                self._library = load_library([self.root])
                self._fingerprint = fp
            return self._library

    def reload(self) -> Library:
        return self.get(force=True)


@dataclass
class AppState:
    engines: Engines
    database_url: str
    protocols: LibraryHolder
    protocols_dir: Path
    tokens: Tokens
    pseudonymise: Pseudonymiser
    clock: Callable[[], dt.datetime] = utcnow
    cookie_secure: bool = True
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    login_policy: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    publish_lock: threading.Lock = field(default_factory=threading.Lock)
    drainer: Any = None  # engine.app.service.Drainer: the evaluation outbox's background drain

    @property
    def library(self) -> Library:
        return self.protocols.get()

    def now(self) -> dt.datetime:
        return self.clock()


def _service_key(engines: Engines, name: str) -> str:
    """A random key kept in the database, made on first use (same for every worker process)."""
    with Session(engines.write) as s:
        row = s.get(ServiceKeyRow, name)
        if row is None:
            s.add(ServiceKeyRow(name=name, value=secrets.token_urlsafe(48)))
            try:
                s.commit()
            except IntegrityError:  # another process made it first
                s.rollback()
        row = s.exec(select(ServiceKeyRow).where(ServiceKeyRow.name == name)).one()
        return row.value
