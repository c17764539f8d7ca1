"""Several drains of the outbox share the backlog (issue 17; engine/registry/evaluation_claims.py,
engine/app/service.py `drain`): each worker of the service drains the whole outbox at its start, and
before the claims every one of them evaluated every marked patient. The claim is an advisory lock on
PostgreSQL and an in-process claim on SQLite, hence both databases; the two drains use engines of their
own, as two worker processes would."""
from __future__ import annotations

import collections
import datetime as dt
import threading
from pathlib import Path

import pytest

from api.db import make_engines
from engine.app import service
from engine.app.service import drain, pending_patients
from engine.language.library import load_library
from engine.records.model import Coding, Fact, Patient, PatientRecord
from engine.registry import db
from engine.registry.evaluation_claims import claim_patient
from engine.registry.ingest import ingest_records

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 23, 9, 0)
NHS = ["9434765919", "9434765870", "9000000009", "9990000018", "9990000026"]


@pytest.fixture(scope="module")
def library():
    return load_library([ROOT / "protocols" / "t2dm-annual-care.yaml", ROOT / "protocols" / "agreements"])


@pytest.fixture
def workers(db_url):
    """The engines of two service workers on one registry."""
    db.upgrade(db_url)
    pair = [make_engines(db_url), make_engines(db_url)]
    yield pair
    for e in pair:
        e.dispose()


def record(nhs: str) -> PatientRecord:
    dx = Fact(id="dx", kind="condition", codes=[Coding(system="sct", code="44054006")], start=dt.datetime(2020, 1, 1),
              source_system="gp")
    return PatientRecord(patient=Patient(nhs_number=nhs, birth_date=dt.date(1960, 1, 1), sex="female"), facts=[dx])


def test_two_workers_draining_at_start_evaluate_each_marked_patient_once(workers, library, monkeypatch):
    ingest_records(workers[0].write, [record(n) for n in NHS], source="feed")
    assert sorted(pending_patients(workers[0].read)) == sorted(NHS)
    real, calls, lock = service.evaluate_one, collections.Counter(), threading.Lock()
    both_listed = threading.Barrier(2, timeout=60)
    started: set[int] = set()

    def counted(engine, nhs, *args, **kwargs):
        with lock:
            calls[nhs] += 1
            first = threading.get_ident() not in started
            started.add(threading.get_ident())
        if first:  # both drains have listed the outbox and are at their first patient: as two workers starting together
            both_listed.wait()
        return real(engine, nhs, *args, **kwargs)

    monkeypatch.setattr(service, "evaluate_one", counted)
    results, errors = {}, []

    def run(i: int) -> None:
        try:
            results[i] = drain(workers[i].write, library, lambda: NOW, read_engine=workers[i].read)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert calls == collections.Counter({n: 1 for n in NHS}), "a marked patient was evaluated by both drains"
    assert set(results[0].evaluated) | set(results[1].evaluated) == set(NHS)
    assert not set(results[0].evaluated) & set(results[1].evaluated)
    assert results[0].evaluated and results[1].evaluated  # the backlog was shared out
    assert pending_patients(workers[0].read) == []


def test_a_claim_is_held_until_released_and_never_twice(workers):
    engine_a, engine_b = workers[0].write, workers[1].write
    with claim_patient(engine_a, 7) as first:
        with claim_patient(engine_b, 7) as second, claim_patient(engine_b, 8) as other:
            assert first and not second and other
    with claim_patient(engine_b, 7) as again:
        assert again
