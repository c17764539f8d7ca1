"""Browser-test support: a seeded registry, the service on a free loopback port (uvicorn in a
thread), headless Chromium from the OS (never a downloaded browser), screenshots."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from sqlmodel import Session, select

from api.app import create_app
from engine.app.audit import take_snapshot
from engine.app.users import DEMO_PASSWORD_SUFFIX, add_user, ensure_demo_users
from engine.synthetic.demo import demo_records, reporting_dates
from engine.app.service import reevaluate_many
from engine.language.library import load_library
from engine.registry.db import make_engine, upgrade
from engine.registry.ingest import ingest_records
from engine.registry.tables import utcnow

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "browser"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# username -> (role, scope); passwords are "<username>-demo-pw" like the demo users
EXTRA_USERS = {
    "mdt.other": ("mdt-member", {"mdt": "central-2"}),
    "practice.other": ("practice-staff", {"practice": "A81003"}),
}
AMINA = "9434765919"   # A81001, central-1: high HbA1c, overdue checks, red flag
GEORGE = "4010232137"  # A81002, central-1: frail, eGFR 27, admission
FRANK = "9990000034"   # A81003, central-2: active foot ulcer, MDT escalation
CLOCK_AHEAD = dt.timedelta(days=10)  # the service runs 10 days after the demo was loaded: 5-working-day tasks are overdue

# A draft next version of the diabetes pathway (review at a lower HbA1c, a tighter blood pressure target
# under 80), to browse version history and differences, and to preview its impact: Frank (138/82) gains
# a blood pressure review.
DRAFT_EDITS = [
    ("version: 1.0.0", "version: 1.1.0"),
    ("status: active", "status: draft"),
    ("    when: last_hba1c.value >= 58 mmol/mol and not frail", "    when: last_hba1c.value >= 53 mmol/mol and not frail"),
    ("    title: HbA1c 58 mmol/mol or more\n", "    title: HbA1c 53 mmol/mol or more\n"),
    ("    when: age < 80 and (last_systolic.value >= 140 mmHg or last_diastolic.value >= 90 mmHg)",
     "    when: age < 80 and (last_systolic.value >= 130 mmHg or last_diastolic.value >= 80 mmHg)"),
]


def chromium_path() -> str | None:
    """The OS's Chromium (CAREPATH_CHROMIUM to use another binary), or None."""
    override = os.environ.get("CAREPATH_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    for p in CHROMIUM_CANDIDATES:
        if Path(p).exists():
            return p
    return shutil.which("chromium") or shutil.which("chromium-browser")


def copy_protocols(dst: Path, with_draft: bool = True) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    src = (ROOT / "protocols" / "t2dm-annual-care.yaml").read_text(encoding="utf-8")
    (dst / "t2dm-annual-care.yaml").write_text(src, encoding="utf-8")
    (dst / "agreements").mkdir()
    shutil.copy(ROOT / "protocols" / "agreements" / "central-locality-roles.yaml", dst / "agreements")
    shutil.copytree(ROOT / "protocols" / "valuesets", dst / "valuesets")
    if with_draft:
        draft = src
        for old, new in DRAFT_EDITS:
            assert old in draft, old
            draft = draft.replace(old, new, 1)
        (dst / "t2dm-annual-care@1.1.0.yaml").write_text(draft, encoding="utf-8")
    return dst


class Clock:
    def __init__(self, offset: dt.timedelta = dt.timedelta()):
        self.offset = offset

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


def seed(url: str, protocols_dir: Path, as_of: dt.date, now: dt.datetime) -> None:
    """What `carepath demo` does: the demo patients through ingest + re-evaluation, the demo users,
    and (for the trend chart) reporting snapshots at the last three quarter ends and today."""
    engine = make_engine(url)
    upgrade(engine)
    records = demo_records(as_of)
    ingest_records(engine, records, source="demo")
    lib = load_library([protocols_dir])
    reevaluate_many(engine, {r.patient.nhs_number for r in records}, lib, as_of=as_of, now=now)
    with Session(engine) as s:
        ensure_demo_users(s)
        for username, (role, scope) in EXTRA_USERS.items():
            add_user(s, username, username + DEMO_PASSWORD_SUFFIX, role, **scope)
        s.commit()
        for d in reporting_dates(as_of):
            take_snapshot(s, lib, d, "seed", now)
        s.commit()
    engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    app: object
    clock: Clock
    protocols_dir: Path
    _server: uvicorn.Server
    _thread: threading.Thread

    @property
    def state(self):
        return self.app.state.carepath

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def copy_database(template: Path, dst: Path) -> str:
    """A copy of a seeded SQLite registry (with its WAL files, if any), as a database URL."""
    for f in template.parent.glob(template.name + "*"):
        shutil.copy(f, dst.parent / (dst.name + f.name[len(template.name):]))
    return f"sqlite:///{dst}"


def start_server(db_url: str, protocols_dir: Path, clock: Clock, migrate: bool = True) -> Server:
    app = create_app(db_url, protocols_dir, secret_key="browser-test-" + uuid.uuid4().hex, clock=clock, migrate=migrate)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="carepath-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the carepath server did not start")
        time.sleep(0.05)
    return Server(f"http://127.0.0.1:{port}", app, clock, protocols_dir, server, thread)


def navigate_by(page, control) -> None:
    """Click a control that loads another page, and wait until that page has loaded: a read right after a bare
    click could see the old page or a half-parsed new one (on a slow machine: 24 of the 26 rows)."""
    with page.expect_navigation():
        control.click()


def shot(page, name: str) -> Path:
    """Full-page screenshot under test-output/browser/."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    if os.environ.get("CAREPATH_NO_SCREENSHOTS") != "1":
        page.screenshot(path=str(path), full_page=True)
    return path


def access_log(server: Server, **where) -> list:
    """Rows of the service's access log (e.g. resource="care-plan")."""
    from engine.registry.access import AccessLogRow
    with Session(server.state.engines.read) as s:
        q = select(AccessLogRow)
        for k, v in where.items():
            q = q.where(getattr(AccessLogRow, k) == v)
        return list(s.exec(q.order_by(AccessLogRow.id)))
