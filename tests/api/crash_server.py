"""The service as a real server process for tests/api/test_api_ingest_crash.py:

    CAREPATH_CRASH_DB=sqlite:///... CAREPATH_CRASH_PROTOCOLS=dir CAREPATH_CRASH_NOW=2026-11-23T09:00:00 \
        python -m uvicorn --factory tests.api.crash_server:app --port P

A fixed clock, so every run (interrupted or not) stamps the same times and outputs compare exactly;
the demo users with the tests' cheap password hashing (tests/cheap_hashes.py)."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from sqlmodel import Session

from api.app import create_app
from engine.app.users import ensure_demo_users

import tests.cheap_hashes  # noqa: E402,F401  (argon2's cheapest parameters)


def _paced(seconds: float) -> None:
    """Each patient's evaluation takes at least this long: the test kills the server part way through a
    drain, and on a fast machine the drain of the rest could otherwise finish between the test seeing
    the count it waits for and the kill (pacing changes no output: the clock is fixed)."""
    import time

    from engine.app import service
    one = service.evaluate_one

    def paced(*args, **kwargs):
        started = time.monotonic()
        try:
            return one(*args, **kwargs)
        finally:
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))

    service.evaluate_one = paced


def app():
    if float(os.environ.get("CAREPATH_CRASH_PACE", "0")) > 0:
        _paced(float(os.environ["CAREPATH_CRASH_PACE"]))
    now = dt.datetime.fromisoformat(os.environ["CAREPATH_CRASH_NOW"])
    application = create_app(os.environ["CAREPATH_CRASH_DB"], Path(os.environ["CAREPATH_CRASH_PROTOCOLS"]),
                             secret_key="crash-test-secret", clock=lambda: now)
    with Session(application.state.carepath.engines.write) as s:
        ensure_demo_users(s)
    return application
