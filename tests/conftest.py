"""Shared fixtures.

`db_url` runs a test against SQLite (always) and PostgreSQL (when CAREPATH_TEST_POSTGRES_URL is
set, as .ci/run does). Each PostgreSQL test gets a schema of its own, dropped afterwards, so
tests are isolated and never touch anything else in that database.
"""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

POSTGRES_ENV = "CAREPATH_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'carepath.db'}"
        return
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"PostgreSQL not configured: set {POSTGRES_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:55432/carepath_test)")
    schema = "test_" + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    # libpq `options` puts the schema first on the search_path of every connection from this URL.
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
