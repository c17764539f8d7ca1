"""Browser tests: the web pages in a real headless Chromium (the OS package, /usr/bin/chromium),
driven by Playwright, against the app served by uvicorn on a free loopback port with a temporary
SQLite registry seeded like `carepath demo`. Screenshots go to test-output/browser/.

No browser is ever downloaded (`playwright install` is never run): when Chromium is missing the
tests FAIL and say how to install it (CI's .ci/run installs it from the OS packages).
"""
from __future__ import annotations

import os
import re

import pytest

from engine.registry.tables import utcnow
from tests.browser.support import (CHROMIUM_ARGS, CLOCK_AHEAD, SHOTS, Clock, chromium_path, copy_database, copy_protocols,
                                   seed, start_server)

PASSWORD_SUFFIX = "-demo-pw"


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = chromium_path()
    if path is None:
        where = os.environ.get("CAREPATH_CHROMIUM") or "/usr/bin/chromium"
        pytest.fail(f"Chromium is not installed (looked for {where}). The browser tests drive the OS's "
                    "headless Chromium and never download one: install it with "
                    "`sudo apt-get install -y chromium chromium-driver` (.ci/run does this on CI).", pytrace=False)
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover
        pytest.fail("the playwright package is missing: pip install -e '.[test]'", pytrace=False)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def seed_time():
    """When the demo registry was seeded: its records are dated back from this day (a reading "6 months
    ago"), so a test that names a record's date counts from here, not from a date written in the test."""
    return utcnow()


@pytest.fixture(scope="session")
def seeded(tmp_path_factory, seed_time):
    """The demo registry, seeded once: (SQLite file, protocol folder with a draft next version)."""
    tmp = tmp_path_factory.mktemp("browser-seed")
    protocols = copy_protocols(tmp / "protocols")
    db = tmp / "carepath.db"
    seed(f"sqlite:///{db}", protocols, seed_time.date(), seed_time)
    return db, protocols


@pytest.fixture
def server(seeded, tmp_path):
    """A service of its own for each test, on a fresh copy of the seeded registry, on a free port.
    Tests complete and decline tasks, record outcomes, take snapshots and read the access log: with a
    registry each, no test sees another's changes, whatever the order or the xdist worker. (Copying
    the small SQLite file and starting the app takes well under a second.)"""
    db, protocols = seeded
    url = copy_database(db, tmp_path / "carepath.db")
    srv = start_server(url, protocols, Clock(CLOCK_AHEAD), migrate=False)
    yield srv
    srv.stop()


class Pages:
    """Opens pages as a user: one browser context (cookie jar) per login."""

    def __init__(self, browser, server):
        self.browser, self.server, self.contexts = browser, server, []

    def anonymous(self):
        ctx = self.browser.new_context(base_url=self.server.url, viewport={"width": 1440, "height": 1000},
                                       accept_downloads=True, locale="en-GB", timezone_id="Europe/London")
        ctx.set_default_timeout(15_000)
        self.contexts.append(ctx)
        return ctx.new_page()

    def login(self, username: str, password: str | None = None):
        page = self.anonymous()
        page.goto("/app/login")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password or username + PASSWORD_SUFFIX)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r".*/app/$"))
        return page

    def close(self):
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def pages(browser, server):
    p = Pages(browser, server)
    yield p
    p.close()
