"""Sessions (issue 14 item 6): logout ends that session server side, an idle timeout next to the
absolute lifetime, Secure session cookies by default, no-store on API answers."""
from __future__ import annotations

import datetime as dt
import re
import uuid

from api.app import COOKIE_NAME, create_app
from tests.api.support import AMINA


def _bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def test_logout_ends_that_bearer_session_only(fresh_api):
    c = fresh_api.client
    mine, other = fresh_api.login("mdt.member"), fresh_api.login("mdt.member")
    assert c.get("/auth/me", headers=_bearer(mine)).status_code == 200
    assert c.post("/auth/logout", headers=_bearer(mine)).status_code == 204
    r = c.get("/auth/me", headers=_bearer(mine))
    assert r.status_code == 401 and "logged out" in r.json()["detail"]  # before: worked for up to 8 hours
    assert c.get("/auth/me", headers=_bearer(other)).status_code == 200  # another login of the same user goes on
    log = fresh_api.get("/access-log", user="admin", params={"username": "mdt.member", "action": "write"}).json()["items"]
    assert log[0]["detail"] == {"revoked": "this session"}


def test_logout_ends_the_cookie_session(fresh_api):
    c = fresh_api.client
    r = c.post("/auth/login", data={"username": "practice.staff", "password": "practice.staff-demo-pw"})
    assert r.status_code == 200
    cookie = c.cookies.get(COOKIE_NAME)
    assert cookie and c.get("/auth/me").status_code == 200
    c.cookies.clear()
    c.cookies.set(COOKIE_NAME, cookie)  # the value alone, replayed, works while the session lives
    assert c.get("/auth/me").status_code == 200
    assert c.post("/auth/logout").status_code == 204
    c.cookies.clear()
    # the same cookie value, replayed (e.g. copied before logout), no longer works
    c.cookies.set(COOKIE_NAME, cookie)
    assert c.get("/auth/me").status_code == 401
    c.cookies.clear()
    assert c.get("/auth/me", headers=_bearer(cookie)).status_code == 401
    c.cookies.clear()


def test_web_logout_ends_the_session(fresh_api):
    c = fresh_api.client
    page = c.get("/app/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/app/login", data={"username": "mdt.member", "password": "mdt.member-demo-pw", "csrf_token": csrf},
               follow_redirects=False)
    assert r.status_code == 303
    cookie = c.cookies.get(COOKIE_NAME)
    home = c.get("/app/")
    assert home.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)
    r = c.post("/app/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/app/login"
    assert c.get("/auth/me", headers=_bearer(cookie)).status_code == 401
    c.cookies.clear()


def test_idle_timeout_and_absolute_lifetime(fresh_api):
    c, clock = fresh_api.client, fresh_api.clock
    idle = fresh_api.state.idle_timeout
    assert idle == 30 * 60
    tok = fresh_api.login("auditor")
    for _ in range(3):  # used every 25 minutes: stays alive past the idle timeout
        clock.offset += dt.timedelta(minutes=25)
        assert c.get("/auth/me", headers=_bearer(tok)).status_code == 200
    clock.offset += dt.timedelta(seconds=idle + 1)  # then left alone for longer than the idle timeout
    r = c.get("/auth/me", headers=_bearer(tok))
    assert r.status_code == 401 and "inactivity" in r.json()["detail"]
    # the absolute lifetime holds however busy the session is
    tok = fresh_api.login("auditor")
    for _ in range(8 * 60 // 20):
        clock.offset += dt.timedelta(minutes=20)
        if c.get("/auth/me", headers=_bearer(tok)).status_code != 200:
            break
    r = c.get("/auth/me", headers=_bearer(tok))
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_tokens_without_a_session_are_refused(fresh_api):
    """A token signed with the right key but naming no server-side session (e.g. from before 0006)."""
    from sqlmodel import Session, select

    from engine.registry.access import UserRow
    state = fresh_api.state
    with Session(state.engines.read) as s:
        user = s.exec(select(UserRow).where(UserRow.username == "admin")).one()
    for sid in ("", "made-up-" + uuid.uuid4().hex):
        assert fresh_api.client.get("/auth/me", headers=_bearer(state.tokens.issue(user, sid))).status_code == 401


def test_session_cookie_is_secure_by_default(fresh_api, tmp_path, monkeypatch):
    r = fresh_api.client.post("/auth/login", data={"username": "auditor", "password": "auditor-demo-pw"})
    cookie = r.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    logout = fresh_api.client.post("/auth/logout")
    assert "Secure" in logout.headers["set-cookie"] and "Max-Age=0" in logout.headers["set-cookie"]
    fresh_api.client.cookies.clear()
    # explicitly off (plain HTTP on loopback, as `carepath serve --host 127.0.0.1` sets it)
    monkeypatch.setenv("CAREPATH_COOKIE_SECURE", "0")
    app = create_app(fresh_api.url, fresh_api.protocols_dir, secret_key="k-" + uuid.uuid4().hex, migrate=False)
    assert app.state.carepath.cookie_secure is False
    monkeypatch.delenv("CAREPATH_COOKIE_SECURE")
    app = create_app(fresh_api.url, fresh_api.protocols_dir, secret_key="k-" + uuid.uuid4().hex, migrate=False)
    assert app.state.carepath.cookie_secure is True
    app.state.carepath.engines.dispose()


def test_serve_on_loopback_turns_secure_off_only_there(monkeypatch):
    import cli.main as cli

    seen = {}
    for name in ("DATABASE_URL", "CAREPATH_PROTOCOLS"):  # serve() sets them: restored after the test
        monkeypatch.setenv(name, "unused")
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: seen.setdefault("secure", __import__("os").environ.get(
        "CAREPATH_COOKIE_SECURE")))
    for host, expected in (("127.0.0.1", "0"), ("0.0.0.0", None)):
        monkeypatch.delenv("CAREPATH_COOKIE_SECURE", raising=False)
        seen.clear()
        cli.serve(host=host, port=8999, database_url="sqlite:///unused.db", protocols=cli.DEFAULT_PROTOCOLS, workers=1, log_format="text")
        assert seen["secure"] == expected, host


def test_api_answers_are_not_cached(seeded_api):
    for path in (f"/patients/{AMINA}/care-plan", "/worklist", "/auth/me"):
        r = seeded_api.get(path, user="clinical.lead")
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache", path
    assert seeded_api.client.get("/auth/me").headers["cache-control"] == "no-store"  # refusals too
    assert "no-store" not in seeded_api.client.get("/openapi.json").headers.get("cache-control", "")
    css = seeded_api.client.get("/static/carepath.css")
    assert css.status_code == 200 and "no-store" not in css.headers.get("cache-control", "")


def test_a_busy_database_does_not_hold_up_reads(fresh_api, tmp_path):
    """Recording a session's use needs a write; with SQLite's writer busy (a long ingest) the read goes
    ahead without it instead of waiting up to the 30 s busy timeout."""
    if not fresh_api.url.startswith("sqlite"):
        return
    import time

    from sqlalchemy import text
    c, clock = fresh_api.client, fresh_api.clock
    tok = fresh_api.login("auditor")
    clock.offset += dt.timedelta(minutes=5)  # due for recording
    with fresh_api.state.engines.write.connect() as writer:  # BEGIN IMMEDIATE: holds the write lock
        writer.execute(text("SELECT 1"))
        started = time.monotonic()
        assert c.get("/auth/me", headers=_bearer(tok)).status_code == 200
        assert time.monotonic() - started < 5
        writer.rollback()
    assert c.get("/auth/me", headers=_bearer(tok)).status_code == 200  # recorded now
