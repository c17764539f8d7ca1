"""API test fixtures.

`backend` (session scope) is SQLite and PostgreSQL (a schema of its own, dropped afterwards, in
the database of `postgres_base_url`, tests/conftest.py: CAREPATH_TEST_POSTGRES_URL or the embedded
server), like the registry's `db_url`. `api` is one service per backend, seeded through the API
itself with the demo population and users, shared by the read-mostly tests; tests that publish
protocols or need an empty registry use `fresh_api`.
Each service gets its own copy of the shipped diabetes protocol, role agreement and value sets.
"""
from __future__ import annotations

import pytest

from tests.api.support import _pg_schema, close_api, copy_protocols, make_api


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request, tmp_path_factory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('api-db') / 'carepath.db'}"
        return
    yield from _pg_schema(request.getfixturevalue("postgres_base_url"))


@pytest.fixture(scope="session")
def api(backend, tmp_path_factory):
    a = make_api(backend, copy_protocols(tmp_path_factory.mktemp("protocols")))
    yield a
    close_api(a)


@pytest.fixture
def fresh_api(db_url, tmp_path):
    """A service of its own (empty registry unless the test seeds it, own protocol folder)."""
    a = make_api(db_url, copy_protocols(tmp_path / "protocols"), seed=False)
    yield a
    close_api(a)


@pytest.fixture
def seeded_api(db_url, tmp_path):
    a = make_api(db_url, copy_protocols(tmp_path / "protocols"), seed=True)
    yield a
    close_api(a)

