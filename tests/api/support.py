"""API test support: the service under test, its users and clock (fixtures in conftest.py)."""
from __future__ import annotations

import datetime as dt
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from engine.app.users import DEMO_PASSWORD_SUFFIX, add_user, ensure_demo_users
from engine.synthetic.demo import demo_records
from engine.registry.tables import utcnow
from tests.pg_support import POSTGRES_ENV, schema_url  # noqa: F401  (POSTGRES_ENV: re-exported)

ROOT = Path(__file__).resolve().parents[2]

# username -> (role, scope); passwords are "<username>-demo-pw"
EXTRA_USERS = {
    "mdt.other": ("mdt-member", {"mdt": "central-2"}),
    "practice.other": ("practice-staff", {"practice": "A81003"}),
    "lead.central": ("clinical-lead", {"locality": "central"}),
    "staff.noscope": ("practice-staff", {}),
}
ROLE_USER = {"clinical-lead": "clinical.lead", "mdt-member": "mdt.member", "practice-staff": "practice.staff",
             "auditor": "auditor", "admin": "admin"}
AMINA = "9434765919"   # A81001, central-1: high HbA1c, overdue checks
GEORGE = "4010232137"  # A81002, central-1: frail, eGFR 27 (red flag)
FRANK = "9990000034"   # A81003, central-2: active foot ulcer, MDT escalation


def copy_protocols(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "protocols" / "t2dm-annual-care.yaml", dst / "t2dm-annual-care.yaml")
    (dst / "agreements").mkdir()
    shutil.copy(ROOT / "protocols" / "agreements" / "central-locality-roles.yaml", dst / "agreements")
    shutil.copytree(ROOT / "protocols" / "valuesets", dst / "valuesets")
    return dst




def _pg_schema(base: str):
    """A schema of its own in the PostgreSQL database `base` (generator: dropped when resumed)."""
    return schema_url(base, "api_")


class Clock:
    """The service's clock: real time unless a test moves it (`offset`) or stops it (`frozen`: for
    tests of waits measured in seconds, which a slow machine would otherwise let run out)."""

    def __init__(self):
        self.offset = dt.timedelta()
        self.frozen: dt.datetime | None = None

    def __call__(self) -> dt.datetime:
        return (self.frozen or utcnow()) + self.offset


@dataclass
class Api:
    client: TestClient
    clock: Clock
    protocols_dir: Path
    url: str
    _tokens: dict = field(default_factory=dict)

    @property
    def state(self):
        return self.client.app.state.carepath

    def token(self, username: str) -> str:
        # One login per user until the service's clock is moved: a session used across a move may have been
        # ended by the idle timeout (as it should be) — and a login at the moved time ends the others that have
        # been idle too long then, so after a test moves the clock and back, every user logs in again.
        key = (username, self.clock.offset)
        if self._tokens.get("__offset__") != self.clock.offset:
            self._tokens.clear()
            self._tokens["__offset__"] = self.clock.offset
        if key not in self._tokens:
            self._tokens[key] = self.login(username)
        return self._tokens[key]

    def login(self, username: str) -> str:
        """A new session (bearer token) for a demo / test user."""
        r = self.client.post("/auth/token", data={"username": username, "password": username + DEMO_PASSWORD_SUFFIX})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def h(self, username: str) -> dict:
        return {"Authorization": f"Bearer {self.token(username)}"}

    def as_role(self, role: str) -> dict:
        return self.h(ROLE_USER[role])

    def get(self, path: str, user: str = "clinical.lead", **kw):
        return self.client.get(path, headers=self.h(user), **kw)

    def post(self, path: str, user: str = "clinical.lead", **kw):
        return self.client.post(path, headers=self.h(user), **kw)


def make_api(url: str, protocols_dir: Path, seed: bool = True) -> Api:
    clock = Clock()
    app = create_app(url, protocols_dir, secret_key="test-secret-" + uuid.uuid4().hex, clock=clock)
    with Session(app.state.carepath.engines.write) as s:
        ensure_demo_users(s)
        for username, (role, scope) in EXTRA_USERS.items():
            add_user(s, username, username + DEMO_PASSWORD_SUFFIX, role, **scope)
        s.commit()
    client = TestClient(app, base_url="https://testserver")  # session cookies are Secure by default
    client.__enter__()
    api = Api(client=client, clock=clock, protocols_dir=protocols_dir, url=url)
    if seed:
        records = [r.model_dump(mode="json") for r in demo_records(clock().date())]
        r = api.post("/ingest/records", user="admin", json={"source": "demo", "records": records})
        assert r.status_code == 200, r.text
    return api


def close_api(api: Api) -> None:
    api.client.__exit__(None, None, None)


