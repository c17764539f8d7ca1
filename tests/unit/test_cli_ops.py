"""`carepath db current | upgrade | backup` (cli/ops.py)."""
from __future__ import annotations

import sqlite3

from typer.testing import CliRunner

from cli.main import app
from engine.registry import db


def test_db_current_upgrade(db_url):
    r = CliRunner().invoke(app, ["db", "current", "--database-url", db_url])
    assert r.exit_code == 1 and "schema revision none" in r.output and "behind" in r.output
    db.upgrade(db_url, "0005")
    r = CliRunner().invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert r.exit_code == 0 and "0005 -> " in r.output
    r = CliRunner().invoke(app, ["db", "current", "--database-url", db_url])
    assert r.exit_code == 0 and "behind" not in r.output


def test_db_backup_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    db.upgrade(url)
    out = tmp_path / "backup.db"
    r = CliRunner().invoke(app, ["db", "backup", str(out), "--database-url", url])
    assert r.exit_code == 0, r.output
    with sqlite3.connect(out) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == db.current_revision(db.make_engine(url))
    assert CliRunner().invoke(app, ["db", "backup", str(out), "--database-url", url]).exit_code == 2  # never overwrites
    r = CliRunner().invoke(app, ["db", "backup", str(tmp_path / "x"), "--database-url", "postgresql+psycopg://u:secret@h/d"])
    assert r.exit_code == 2 and "pg_dump" in r.output and "secret" not in r.output
