"""Two deliveries for one patient at the same moment through POST /ingest/records, with evaluation
outside the write transaction (issue 17 item 1): the second delivery lands while the first one's
evaluation is running, and the evaluation stored at the end is the one of the final facts (SQLite
and PostgreSQL)."""
from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import Session

from engine.app import service
from engine.registry.ingest import load_record
from engine.registry.outputs import PatientEvaluationRow
from sqlmodel import select
from tests.api.test_api_concurrency import NHS, delivery


def test_two_concurrent_ingests_end_with_the_evaluation_of_the_final_facts(fresh_api, monkeypatch):
    real, first_read = service.evaluate, threading.Event()

    def slow(*args, **kwargs):  # hold the first evaluation between its read and its write
        if not first_read.is_set():
            first_read.set()
            time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "evaluate", slow)
    headers = fresh_api.h("admin")

    def send(i):
        if i == 0:
            return fresh_api.client.post("/ingest/records", headers=headers, json=delivery(5))
        first_read.wait(30)  # the first delivery is stored and being evaluated: land now
        return fresh_api.client.post("/ingest/records", headers=headers, json=delivery(0))

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(send, range(2)))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert fresh_api.state.drainer.wait(60)
    with Session(fresh_api.state.engines.read) as s:
        record = load_record(s, NHS)
        stored = {r.protocol: r.result for r in s.exec(select(PatientEvaluationRow))}
    now = fresh_api.state.now()
    lib = fresh_api.state.library
    want = service.evaluation_inputs(record, lib.in_force(now.date()), lib.agreements_in_force(now.date()), now.date())
    assert {p: r[service.INPUTS_KEY] for p, r in stored.items()} == want  # every result is of the final facts
    plan = fresh_api.get(f"/patients/{NHS}/care-plan").json()
    assert plan["evaluation_pending"] is False
    hba1c = next(i for p in plan["protocols"] for i in p["care_plan"] if i["activity"] == "hba1c")
    assert hba1c["last_done"] == (dt.date.today() - dt.timedelta(days=10)).isoformat()  # the second delivery's
