"""Database URL, engines and schema migrations for the registry.

SQLite by default (``sqlite:///var/carepath.db``, relative to the working directory); PostgreSQL
via ``DATABASE_URL`` (``postgresql://...`` is served by psycopg 3). The schema is only ever
created or changed by the Alembic migrations in ``migrations/``: call `upgrade()`.
"""
from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

DEFAULT_URL = "sqlite:///var/carepath.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _normalise(url: str) -> str:
    u = make_url(url)
    # Plain postgres URLs would pick psycopg2, which carepath does not install.
    if u.drivername in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" and not u.database.startswith("file:"):
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    return u.render_as_string(hide_password=False)


def database_url() -> str:
    """``DATABASE_URL`` or the SQLite default; the SQLite file's folder is created if missing."""
    return _normalise(os.environ.get("DATABASE_URL") or DEFAULT_URL)


def make_engine(url: str | None = None, **kwargs) -> Engine:
    engine = create_engine(_normalise(url or database_url()), **kwargs)
    if engine.dialect.name == "sqlite":
        # SQLite ignores foreign keys unless asked, per connection.
        @event.listens_for(engine, "connect")
        def _fk_on(dbapi_conn, _record):  # pragma: no branch
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", _normalise(url).replace("%", "%%"))
    return cfg


def upgrade(engine_or_url: Engine | str | None = None, revision: str = "head") -> None:
    """Bring the schema up to `revision` (default: the latest) in one transaction."""
    own = not isinstance(engine_or_url, Engine)
    engine = make_engine(engine_or_url) if own else engine_or_url
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if own:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
