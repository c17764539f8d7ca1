"""`carepath db ...`: the registry's schema and backups, for operators (docs/operations.md).

    carepath db current [--database-url URL]        the schema's revision and the code's head (exit 1 if behind)
    carepath db upgrade [--database-url URL]        run the Alembic migrations up to the head (the service does it on start too)
    carepath db backup FILE [--database-url URL]    SQLite: a consistent copy while the service runs (online backup API);
                                                    PostgreSQL: use pg_dump (printed)
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

db_app = typer.Typer(help="The registry database: schema revision, migrations, backup.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
URL_OPTION = typer.Option(None, "--database-url", envvar="DATABASE_URL", help="Registry database (default sqlite:///var/carepath.db)")


def _head() -> str:
    from alembic.script import ScriptDirectory

    from engine.registry.db import alembic_config
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@db_app.command("current")
def current(database_url: Optional[str] = URL_OPTION):
    """The schema's Alembic revision and the newest this code ships; exit 1 when they differ."""
    from engine.registry.db import current_revision, database_url as default_url, make_engine

    engine = make_engine(database_url or default_url())
    try:
        rev = current_revision(engine)
    finally:
        engine.dispose()
    head = _head()
    console.print(f"schema revision {rev or 'none'}, code head {head}"
                  + ("" if rev == head else " (behind: carepath db upgrade)"), highlight=False)
    raise typer.Exit(0 if rev == head else 1)


@db_app.command("upgrade")
def upgrade(database_url: Optional[str] = URL_OPTION,
            revision: str = typer.Option("head", "--revision", help="Target revision (default: the newest)")):
    """Run the migrations (one transaction). Safe to repeat; the service also runs them when it starts."""
    from engine.registry.db import current_revision, database_url as default_url, make_engine, upgrade as run_upgrade

    engine = make_engine(database_url or default_url())
    try:
        before = current_revision(engine)
        run_upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    console.print(f"schema revision {before or 'none'} -> {after}", highlight=False)


@db_app.command("backup")
def backup(out: Path = typer.Argument(..., help="The backup file to write (must not exist)"),
           database_url: Optional[str] = URL_OPTION):
    """SQLite: copy the registry to OUT with SQLite's online backup API (a consistent snapshot, safe while
    the service writes). PostgreSQL: prints the pg_dump command to use instead (exit 2)."""
    from sqlalchemy.engine import make_url

    from engine.registry.db import database_url as default_url

    url = make_url(database_url or default_url())
    if url.get_backend_name() != "sqlite":
        err.print(f"{url.get_backend_name()}: back up with the database's own tools, e.g. "
                  f"pg_dump --format=custom --file {out} '{url.set(drivername='postgresql').render_as_string(hide_password=True)}' "
                  "(see docs/operations.md)", highlight=False)
        raise typer.Exit(2)
    if not url.database or not Path(url.database).is_file():
        err.print(f"no SQLite registry at {url.database}", highlight=False)
        raise typer.Exit(2)
    if out.exists():
        err.print(f"{out} exists; give a new file name", highlight=False)
        raise typer.Exit(2)
    src = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
    dst = sqlite3.connect(out)
    try:
        src.backup(dst)
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if ok != "ok":
        err.print(f"{out}: integrity check failed: {ok}", highlight=False)
        raise typer.Exit(1)
    console.print(f"backed up {url.database} to {out} ({out.stat().st_size} bytes, integrity ok)", highlight=False)
