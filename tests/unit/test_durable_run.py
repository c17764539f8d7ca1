"""The per-patient durable-rules engine in worker processes: same answers as in-process, failures isolated."""
from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path

import pytest

from engine.engines.derive import Context, Deriver
from engine.evaluation.evaluator import fired_conditions
from engine.ir.lowering import lowered_for
from engine.ir.lowering import summary_fact
from engine.engines.durable.pool import run_facts, run_records
from engine.synthetic.generate import generate
from tests.unit.cached import shipped_library

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 4, 30)
KEYS = ("t2dm-annual-care@1.1.0", "hypertension@1.0.0", "asthma@1.0.0")


@pytest.fixture(scope="module")
def protocols():
    lib = shipped_library()
    by_key = {p.key: p for p in lib.protocols}
    return [by_key[k] for k in KEYS]


@pytest.fixture(scope="module")
def records():
    return list(generate(160, seed=11, as_of=AS_OF))  # 16 of them with diabetes; 4 chunks of 40 below


@pytest.fixture(scope="module")
def in_process(protocols, records):
    out = {}
    for p in protocols:
        ctx = Context.as_of(AS_OF, p.period)
        for rec in records:
            out[(rec.patient.nhs_number, p.key)] = fired_conditions(rec, p, ctx, "durable")[0]
    return out


def test_workers_give_the_in_process_answers(protocols, records, in_process):
    res = run_records(records, protocols, AS_OF, workers=2, chunk_size=40, check=True)
    assert res.failures == [] and res.worker_deaths == []
    assert res.evaluations == len(records) * len(protocols)
    assert res.fired == in_process
    assert res.reference_mismatches == 0
    assert sum(1 for (_, k), f in res.fired.items() if "population" in f and k.startswith("t2dm")) > 5  # not all empty
    assert len(res.samples) == 2 and all(s and s[0][1] > 0 for s in res.samples.values())  # each worker's VmRSS


def _nhs(records) -> set[str]:
    return {r.patient.nhs_number for r in records}


def _raise_for(bad_nhs: str, bad_key: str):
    def hook(nhs: str, key: str) -> None:
        if nhs == bad_nhs and key == bad_key:
            raise ZeroDivisionError("injected")
    return hook


def test_an_exception_is_reported_with_patient_and_protocol(protocols, records, in_process):
    some = records[:150]
    bad = some[123].patient.nhs_number
    res = run_records(some, protocols, AS_OF, workers=2, chunk_size=25, hook=_raise_for(bad, KEYS[1]))
    assert res.failures == [{"nhs_number": bad, "protocol": KEYS[1], "error": "ZeroDivisionError: injected"}]
    assert res.worker_deaths == []
    assert res.fired == {k: v for k, v in in_process.items() if k[0] in _nhs(some) and k != (bad, KEYS[1])}


def test_bad_summary_facts_fail_alone(protocols, records, in_process):
    """Genuinely bad input, no hook: a fact durable-rules cannot take (a date object where a day number
    belongs: not JSON-serialisable) and a fact with fields missing (durable-rules would silently not match)."""
    p = protocols[0]
    lowered, ctx = lowered_for(p), Context.as_of(AS_OF, p.period)
    facts = [(r.patient.nhs_number, p.key, summary_fact(lowered, Deriver(p, r, ctx))) for r in records[:60]]
    facts[7][2][next(iter(facts[7][2]))] = dt.date(2026, 1, 1)
    del facts[9][2]["f0"]
    res = run_facts(facts, [p], workers=2, chunk_size=16, check=True)
    assert [(f["nhs_number"], f["protocol"]) for f in res.failures] == [(facts[7][0], p.key), (facts[9][0], p.key)]
    assert "not JSON serializable" in res.failures[0]["error"]  # the cause, not durable-rules' failed clean-up
    assert "lacks 1 field(s): f0" in res.failures[1]["error"]
    good = {(n, k) for i, (n, k, _) in enumerate(facts) if i not in (7, 9)}
    assert res.fired == {k: in_process[k] for k in good}
    assert res.reference_mismatches == 0 and res.worker_deaths == []


def _kill_for(bad_nhs: str, bad_key: str):
    def hook(nhs: str, key: str) -> None:
        if nhs == bad_nhs and key == bad_key:
            os.kill(os.getpid(), signal.SIGKILL)  # as a segfault in the C engine would end the worker
    return hook


def test_a_killed_worker_is_reported_and_the_run_completes(protocols, records, in_process):
    some = records[:150]
    bad = some[77].patient.nhs_number
    res = run_records(some, protocols, AS_OF, workers=2, chunk_size=25, hook=_kill_for(bad, KEYS[2]))
    assert res.failures == [{"nhs_number": bad, "protocol": KEYS[2],
                             "error": "worker process died (killed by signal SIGKILL)"}]
    assert res.fired == {k: v for k, v in in_process.items() if k[0] in _nhs(some) and k != (bad, KEYS[2])}
    assert res.evaluations == len(some) * len(protocols)
    # bisected: the 25-patient chunk, then halves ... down to one patient, then to its one protocol
    assert 2 <= len(res.worker_deaths) <= 10 and all("SIGKILL" in d["reason"] for d in res.worker_deaths)


def _hang_for(bad_nhs: str):
    def hook(nhs: str, key: str) -> None:
        if nhs == bad_nhs:
            time.sleep(3600)
    return hook


def test_a_hanging_evaluation_is_killed_after_the_timeout(protocols, records):
    p = protocols[1]
    sample = records[:4]
    bad = sample[1].patient.nhs_number
    t0 = time.monotonic()
    res = run_records(sample, [p], AS_OF, workers=2, chunk_size=2, timeout=1.5, hook=_hang_for(bad))
    assert time.monotonic() - t0 < 15
    assert [(f["nhs_number"], f["protocol"]) for f in res.failures] == [(bad, p.key)]
    assert "without an answer" in res.failures[0]["error"]
    assert len(res.fired) == 3
