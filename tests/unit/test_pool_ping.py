"""The service's PostgreSQL pools (api/db.py `_pinged_when_idle`): a connection that sat idle in the pool is
pinged at checkout and replaced when the server closed it; one back in the pool a moment ago is handed out
without the round trip. PostgreSQL only: SQLite has no server to lose."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from api import db as api_db


@pytest.fixture
def engines(request, monkeypatch):
    monkeypatch.setenv(api_db.PING_ENV, "0.2")
    got = api_db.make_engines(request.getfixturevalue("postgres_base_url"))
    yield got
    got.dispose()


def _pid(engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_an_idle_connection_the_server_closed_is_replaced_at_checkout(engines):
    engine = engines.write
    pid = _pid(engine)
    with engines.read.connect() as other:
        assert other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    time.sleep(0.3)  # idle longer than the ping interval
    assert _pid(engine) != pid  # a new connection, no error


def test_a_connection_used_a_moment_ago_is_not_pinged(engines, monkeypatch):
    engine = engines.read
    pings = []
    real = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or real(conn))
    pid = _pid(engine)
    assert _pid(engine) == pid and pings == []  # straight back out of the pool: no round trip
    time.sleep(0.3)
    assert _pid(engine) == pid and pings == [1]  # idle: pinged, alive, kept
