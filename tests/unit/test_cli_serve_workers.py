"""`carepath serve --workers N`: N > 1 is for PostgreSQL only (issue 17 item 1)."""
from __future__ import annotations

from typer.testing import CliRunner

from cli.main import app, workers_problem


def test_several_workers_on_sqlite_are_refused_with_a_reason(tmp_path):
    url = f"sqlite:///{tmp_path / 'carepath.db'}"
    out = CliRunner().invoke(app, ["serve", "--workers", "2", "--database-url", url])
    assert out.exit_code == 2
    assert "--workers 2 needs PostgreSQL" in out.output and "Use --workers 1 with SQLite" in out.output
    assert not (tmp_path / "carepath.db").exists()  # refused before anything was started or created


def test_workers_rule():
    assert workers_problem("sqlite:///var/carepath.db", 1) is None
    assert workers_problem("postgresql://carepath@db/carepath", 4) is None
    assert workers_problem("postgresql+psycopg://carepath@db/carepath", 2) is None
    assert "needs PostgreSQL" in workers_problem("sqlite:///var/carepath.db", 2)
