"""Alembic environment: used by `engine.registry.db.upgrade()` (which hands over a connection) and
by the alembic CLI (`alembic -c engine/registry/alembic.ini upgrade head`, URL from DATABASE_URL)."""
from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import engine.registry.access  # noqa: F401  (users, access log, audit snapshots ...: migration 0003)
import engine.registry.bulk  # noqa: F401  (bulk NDJSON loads and their refused lines: migration 0010)
import engine.registry.outputs  # noqa: F401  (registers the output tables)
import engine.registry.pending  # noqa: F401  (evaluation outbox, data problems: migration 0005)
import engine.registry.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from engine.registry.db import database_url, make_engine

config = context.config
target_metadata = SQLModel.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode lets later migrations work there too.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url") or database_url(), target_metadata=target_metadata,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    connectable = make_engine(config.get_main_option("sqlalchemy.url") or database_url())
    try:
        with connectable.begin() as conn:
            _run(conn)
    finally:
        connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
