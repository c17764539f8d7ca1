"""Issue 14, item 1: `kill -9` while a large delivery is being evaluated must not lose anyone.

A REAL server (uvicorn in a subprocess, SQLite registry in tmp_path, fixed clock) takes a delivery
of 200 generated patients and is SIGKILLed three times: in the middle of evaluating in the request,
in the middle of the background drain its start began, and again after the same delivery is sent
once more. After every kill each stored patient is either evaluated or still marked pending (the
outbox is written with the facts); a last start drains the rest. The stored tasks, task history,
flags and evaluations are then exactly those of an uninterrupted run (same code, same clock, no
kill) - nobody lost, nobody doubled.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from engine.app.service import _protocol_digest, drain
from engine.synthetic.generate import generate
from engine.language.library import load_library
from engine.registry import db
from engine.registry.ingest import ingest_records
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskEventRow, TaskRow
from engine.registry.pending import DataProblemRow, PendingEvaluationRow
from engine.registry.tables import PatientRow
from tests.api.support import copy_protocols

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 23, 9, 0)
N = 200


T0 = time.monotonic()


def _t(what: str) -> None:
    print(f"{time.monotonic() - T0:7.2f}s {what}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, db_path: Path, protocols: Path, tmp: Path, inline_limit: int | None = None):
        self.port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CAREPATH_CRASH_DB": f"sqlite:///{db_path}", "CAREPATH_CRASH_PACE": "0.04",
               "CAREPATH_CRASH_PROTOCOLS": str(protocols), "CAREPATH_CRASH_NOW": NOW.isoformat()}
        if inline_limit is not None:
            env["CAREPATH_INLINE_EVALUATION_LIMIT"] = str(inline_limit)
        self.log = open(tmp / f"server-{self.port}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "tests.api.crash_server:app",
                                      "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, f"server exited: {(tmp / f'server-{self.port}.log').read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        r = httpx.post(self.url + "/auth/token", data={"username": "admin", "password": "admin-demo-pw"}, timeout=60)
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def post_in_background(self, body: dict) -> dict:
        out: dict = {}

        def run():
            try:
                out["response"] = httpx.post(self.url + "/ingest/records", json=body, headers=self.headers, timeout=120)
            except httpx.HTTPError as e:  # the server was killed under it
                out["error"] = e

        out["thread"] = threading.Thread(target=run, daemon=True)
        out["thread"].start()
        return out

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def _state(db_path: Path) -> tuple[set, set, set]:
    """(stored, evaluated, pending) NHS numbers, read straight from the file."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        stored = {r[0] for r in con.execute("SELECT nhs_number FROM patient")}
        evaluated = {r[0] for r in con.execute("SELECT DISTINCT p.nhs_number FROM patient p JOIN patient_evaluation e "
                                               "ON e.patient_id = p.id")}
        pending = {r[0] for r in con.execute("SELECT p.nhs_number FROM patient p JOIN pending_evaluation q "
                                             "ON q.patient_id = p.id")}
        return stored, evaluated, pending
    except sqlite3.OperationalError:  # tables not made yet
        return set(), set(), set()
    finally:
        con.close()


def _wait_for(db_path: Path, done, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not done(*_state(db_path)):
        assert time.monotonic() < deadline, f"timed out; stored/evaluated/pending = {[len(x) for x in _state(db_path)]}"
        time.sleep(0.01)


def _nothing_lost(db_path: Path) -> tuple[set, set, set]:
    stored, evaluated, pending = _state(db_path)
    assert stored - evaluated <= pending, f"stored but neither evaluated nor pending: {sorted(stored - evaluated - pending)[:5]}"
    return stored, evaluated, pending


def _outputs(url: str) -> dict:
    """Every stored output, keyed by NHS number and task/flag key: row ids left out."""
    engine = db.make_engine(url)
    try:
        with Session(engine) as s:
            nhs = dict(s.exec(select(PatientRow.id, PatientRow.nhs_number)).all())
            tasks = {t.id: t for t in s.exec(select(TaskRow))}

            def row(obj, *drop):
                d = obj.model_dump(mode="json", exclude={"id", "patient_id", "task_id", *drop})
                return json.dumps(d, sort_keys=True)

            return {
                "tasks": sorted((nhs[t.patient_id], row(t)) for t in tasks.values()),
                "task_events": sorted((nhs[tasks[e.task_id].patient_id], tasks[e.task_id].key, row(e))
                                      for e in s.exec(select(TaskEventRow))),
                "flags": sorted((nhs[f.patient_id], row(f)) for f in s.exec(select(FlagRow))),
                "evaluations": sorted((nhs[e.patient_id], row(e)) for e in s.exec(select(PatientEvaluationRow))),
                "pending": list(s.exec(select(PendingEvaluationRow))),
                "problems": list(s.exec(select(DataProblemRow))),
            }
    finally:
        engine.dispose()


def test_sigkill_during_a_large_ingest_loses_no_evaluation(tmp_path):
    protocols = copy_protocols(tmp_path / "protocols")
    library = load_library([protocols])
    # Generated people, with only the facts the protocol reads: the shared 2-core machine spends
    # its time on storing and evaluating, and the other facts would change nothing compared here.
    reads = [_protocol_digest(p)[1] for p in library.protocols]
    records = [r.model_copy(update={"facts": [f for f in r.facts if any(x.sees(f) for x in reads)]})
               for r in generate(N, seed=14, as_of=NOW.date(), start=100)]
    body = {"source": "crash-test bundle", "records": [r.model_dump(mode="json") for r in records]}
    everyone = {r.patient.nhs_number for r in records}

    _t('# the uninterrupted run')
    # the uninterrupted run: the same ingest and drain, in this process, same clock
    ref_url = f"sqlite:///{tmp_path / 'reference.db'}"
    db.upgrade(ref_url)
    ref = db.make_engine(ref_url)
    ingest_records(ref, records, source=body["source"])
    result = drain(ref, library, lambda: NOW)
    assert set(result.evaluated) == everyone and not result.problems
    ref.dispose()

    _t('path = tmp_path / "crash.db"')
    path = tmp_path / "crash.db"
    # 1. killed while the request itself evaluates (inline limit above the delivery's size)
    server = Server(path, protocols, tmp_path, inline_limit=1000)
    req = server.post_in_background(body)
    _wait_for(path, lambda stored, evaluated, pending: len(evaluated) >= 25)
    server.kill()
    req["thread"].join(30)
    assert "error" in req  # the client saw the connection drop, no answer
    stored, evaluated, pending = _nothing_lost(path)
    assert stored == everyone and len(evaluated) < N and pending == stored - evaluated

    _t('# 2. restarted')
    # 2. restarted: its start drains the rest in the background; killed half way
    server = Server(path, protocols, tmp_path)
    _wait_for(path, lambda stored, evaluated, pending: len(evaluated) >= 100)
    server.kill()
    stored, evaluated, pending = _nothing_lost(path)
    assert pending and len(evaluated) < N

    _t('# 3. the sender')
    # 3. the sender, having had no answer, sends the same delivery again; killed once more
    server = Server(path, protocols, tmp_path)
    r = httpx.post(server.url + "/ingest/records", json=body, headers=server.headers, timeout=120)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["duplicate_of_batch"] == 1 and answer["facts_added"] == 0
    assert set(answer["evaluated"]) | set(answer["pending"]) <= everyone and not answer["data_problems"]
    assert {p["evaluation"] for p in answer["patients"]} <= {"evaluated", "pending", "up-to-date"}
    _wait_for(path, lambda stored, evaluated, pending: len(evaluated) >= 165)
    server.kill()
    _nothing_lost(path)

    _t('# 4. a last start')
    # 4. a last start drains whoever is left
    server = Server(path, protocols, tmp_path)
    _wait_for(path, lambda stored, evaluated, pending: not pending)
    server.stop()
    stored, evaluated, pending = _nothing_lost(path)
    assert stored == evaluated == everyone and not pending

    _t('got, want = _outputs')
    got, want = _outputs(f"sqlite:///{path}"), _outputs(ref_url)
    assert not got["pending"] and not got["problems"]
    for kind in ("tasks", "task_events", "flags", "evaluations"):
        assert len(got[kind]) == len(want[kind]) and got[kind] == want[kind], kind
    assert len({n for n, _ in want["evaluations"]}) == N and len(want["tasks"]) > 20  # something to compare
