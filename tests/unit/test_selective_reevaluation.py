"""Selective re-evaluation (engine.app.service: a protocol whose inputs did not change keeps its
stored result) leaves exactly the stored tasks, task events, flags and evaluations that full
re-evaluation leaves.

Two registries get the same generated patient and then the same random steps: new facts (codes from
every value set of every protocol in protocols/, and unknown codes; any kind, date, value, unit,
status, attributes), changed facts (same id, new content), demographic changes, people acting on
tasks, re-evaluation with nothing new, the clock moving on (same day and next day). After each
step one registry re-evaluates selectively and the other in full, with the same clock; every stored
row must agree, the `raised_at` / `due` of a stored result's tasks too (they are the task rows'; a
reused result used to keep the times of whenever it was computed, issue 17 item 5).

    CAREPATH_SELECTIVE_EXAMPLES=200 pytest tests/unit/test_selective_reevaluation.py   # a longer soak
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from engine.app import service
from engine.app.service import reevaluate, task_action
from engine.synthetic.generate import generate, person
from engine.records.model import CareSetting, Fact, FactKind, PatientRecord
from engine.registry import db
from engine.registry.ingest import ingest_records, load_record
from engine.registry.outputs import FlagRow, PatientEvaluationRow, TaskEventRow, TaskRow
from tests.unit.cached import shipped_library

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 20)
EXAMPLES = int(os.environ.get("CAREPATH_SELECTIVE_EXAMPLES", "20"))


@pytest.fixture(scope="module")
def library():
    lib = shipped_library()
    assert not lib.errors
    assert len(lib.in_force(AS_OF)) >= 8
    return lib


@pytest.fixture(scope="module")
def people():
    # People with something to evaluate: a condition on at least one register, or aged 65+ (frailty).
    # (chosen on the generator's raw person, then only those built as records: the same people, cheaper)
    chosen = [i for i in range(400) if (p := person(i, 5, AS_OF)).deceased is None and len(p.facts) >= 30][:40]
    out = [next(generate(1, seed=5, as_of=AS_OF, start=i)) for i in chosen]
    assert all(r.patient.death_date is None and len(r.facts) >= 30 for r in out)
    assert len(out) >= 20
    return out


@pytest.fixture(scope="module")
def codes(library):
    seen, out = set(), []
    for p in library.in_force(AS_OF):
        for vs in p.valuesets.values():
            kinds = sorted(vs.kinds) or [None]
            for system, code in sorted(vs.codes)[:40]:
                if (system, code) not in seen:
                    seen.add((system, code))
                    out.append((system or "http://snomed.info/sct", code, kinds[0]))
    return out


@pytest.fixture(scope="module")
def template():
    folder = Path(tempfile.mkdtemp(prefix="selective-"))
    path = folder / "template.db"
    e = db.make_engine(f"sqlite:///{path}")
    db.upgrade(e)
    e.dispose()
    yield path
    shutil.rmtree(folder, ignore_errors=True)


UNITS = [None, "mmol/mol", "%", "mmol/L", "mm[Hg]", "kg/m2", "mL/min/{1.73_m2}", "mg/mmol", "furlongs"]
STATUSES = [None, "final", "active", "completed", "entered-in-error", "cancelled", "resolved"]


@st.composite
def new_fact(draw, codes, n: int):
    system, code, kind = draw(st.sampled_from(codes)) if draw(st.integers(0, 9)) else ("http://snomed.info/sct", "123456789", None)
    if kind is None or draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from([k.value for k in FactKind]))
    start = dt.datetime.combine(AS_OF, dt.time(8)) - dt.timedelta(days=draw(st.integers(-5, 1100)), minutes=draw(st.integers(0, 600)))
    end = None if draw(st.booleans()) else start + dt.timedelta(days=draw(st.integers(0, 400)))
    value = draw(st.none() | st.sampled_from([0.0, 5.5, 7.9, 27.0, 48.0, 58.0, 59.0, 75.0, 140.0, 150.0, 91.0, 30.0]))
    attrs = draw(st.sampled_from([{}, {"do_not_perform": True}, {"encounter_class": "EMER"}, {"verification": "refuted"}]))
    return Fact(id=f"new-{n}", kind=kind, codes=[{"system": system, "code": code}], start=start, end=end, value=value,
                unit=draw(st.sampled_from(UNITS)), status=draw(st.sampled_from(STATUSES)),
                source_system=draw(st.sampled_from(["gp-system", "pathology-lims", "acute-pas"])),
                care_setting=draw(st.sampled_from([c.value for c in CareSetting])), attrs=attrs,
                exception_type=draw(st.sampled_from(["declined", "unsuitable", "invited-no-response"])) if kind == "exception" else None)


def steps(codes):
    one = st.one_of(
        st.tuples(st.just("add"), st.lists(new_fact(codes, 0), min_size=1, max_size=3)),
        st.tuples(st.just("change"), st.integers(0, 10_000), st.sampled_from(["value", "status", "date", "code"]),
                  new_fact(codes, 0)),
        st.tuples(st.just("demographics"), st.sampled_from(["death", "birth", "practice", "name"])),
        st.tuples(st.just("task"), st.integers(0, 10_000), st.sampled_from(["complete", "decline", "reopen", "accept"])),
        st.tuples(st.just("nothing")),
        st.tuples(st.just("clock"), st.sampled_from([dt.timedelta(hours=3), dt.timedelta(days=1), dt.timedelta(days=40)])),
    )
    return st.lists(one, min_size=1, max_size=5)


def snapshot(engine) -> dict:
    def rows(model, order):
        with Session(engine) as s:
            return [r.model_dump() for r in s.exec(select(model).order_by(*order))]

    evals = rows(PatientEvaluationRow, [PatientEvaluationRow.protocol])  # task times included (issue 17 item 5)
    return {"tasks": rows(TaskRow, [TaskRow.id]), "events": rows(TaskEventRow, [TaskEventRow.id]),
            "flags": rows(FlagRow, [FlagRow.id]), "evaluations": evals}


def run_steps(template, library, rec: PatientRecord, plan, counter) -> None:
    folder = Path(tempfile.mkdtemp(prefix="selective-run-"))
    engines = {}
    try:
        for name in ("selective", "full"):
            shutil.copy(template, folder / f"{name}.db")
            engines[name] = db.make_engine(f"sqlite:///{folder / name}.db")
        nhs = rec.patient.nhs_number
        now = dt.datetime.combine(AS_OF, dt.time(9, 15))
        record = rec.model_copy(deep=True)
        seq = 0

        def deliver(records):
            for e in engines.values():
                ingest_records(e, [r.model_copy(deep=True) for r in records], source="test")

        def evaluate_both():
            for name, e in engines.items():
                with Session(e) as s:
                    reevaluate(s, nhs, library, as_of=now.date(), now=now, selective=name == "selective")
                    s.commit()
            a, b = snapshot(engines["selective"]), snapshot(engines["full"])
            assert a == b

        deliver([record])
        evaluate_both()
        for step in plan:
            kind = step[0]
            if kind == "add":
                facts = []
                for f in step[1]:
                    seq += 1
                    facts.append(f.model_copy(update={"id": f"new-{seq}"}))
                deliver([PatientRecord(patient=record.patient, facts=facts)])
            elif kind == "change":
                with Session(engines["full"]) as s:
                    stored = load_record(s, nhs).facts
                old = stored[step[1] % len(stored)]
                what, donor = step[2], step[3]
                upd = {"value": {"value": donor.value, "unit": donor.unit}, "status": {"status": donor.status},
                       "date": {"start": donor.start, "end": None}, "code": {"codes": donor.codes, "kind": donor.kind, "exception_type": donor.exception_type}}[what]
                deliver([PatientRecord(patient=record.patient, facts=[old.model_copy(update=upd)])])
            elif kind == "demographics":
                p = record.patient
                upd = {"death": {"death_date": AS_OF - dt.timedelta(days=3)}, "birth": {"birth_date": p.birth_date - dt.timedelta(days=400)},
                       "practice": {"practice": "A81002" if p.practice != "A81002" else "A81003"},
                       "name": {"given_name": (p.given_name or "") + "x"}}[step[1]]
                record = PatientRecord(patient=p.model_copy(update=upd), facts=[])
                deliver([record])
            elif kind == "task":
                ids = []
                with Session(engines["full"]) as s:
                    ids = [t.id for t in s.exec(select(TaskRow).order_by(TaskRow.id))]
                if ids:
                    tid = ids[step[1] % len(ids)]
                    for e in engines.values():
                        with Session(e) as s:
                            try:
                                task_action(s, tid, step[2], "someone", reason="test", now=now,
                                            outcome="done" if step[2] == "complete" else None)
                                s.commit()
                            except service.TaskActionError:
                                s.rollback()
            elif kind == "clock":
                now = now + step[1]
            evaluate_both()
        counter["examples"] += 1
    finally:
        for e in engines.values():
            e.dispose()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reuse_counter():
    return {"examples": 0, "reused": 0}


def test_selective_equals_full(template, library, people, codes, reuse_counter, monkeypatch):
    original = service._reusable

    def spy(*a, **k):
        got = original(*a, **k)
        reuse_counter["reused"] += got is not None
        return got

    monkeypatch.setattr(service, "_reusable", spy)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(idx=st.integers(0, len(people) - 1), plan=steps(codes))
    def check(idx, plan):
        run_steps(template, library, people[idx], plan, reuse_counter)

    check()
    assert reuse_counter["reused"] > 0  # the selective path was exercised, not just the fallback


def test_one_new_hba1c_reuses_protocols_that_cannot_see_it(template, library, people, monkeypatch):
    """A new HbA1c: the diabetes protocol is evaluated again, a protocol without HbA1c codes is not."""
    evaluated: list[str] = []
    original = service.evaluate

    def spy(record, protocols, *a, **k):
        evaluated.extend(p.id for p in protocols)
        return original(record, protocols, *a, **k)

    monkeypatch.setattr(service, "evaluate", spy)
    folder = Path(tempfile.mkdtemp(prefix="selective-one-"))
    try:
        shutil.copy(template, folder / "r.db")
        e = db.make_engine(f"sqlite:///{folder / 'r.db'}")
        rec = people[0]
        now = dt.datetime.combine(AS_OF, dt.time(9))
        ingest_records(e, [rec], source="test")
        for _ in range(2):
            with Session(e) as s:
                reevaluate(s, rec.patient.nhs_number, library, as_of=AS_OF, now=now)
                s.commit()
        in_force = [p.id for p in library.in_force(AS_OF)]
        assert evaluated == in_force + []  # the second time nothing changed: every result reused
        evaluated.clear()
        hba1c = next(p for p in library.in_force(AS_OF) if p.id == "t2dm-annual-care").valuesets
        vs = next(v for n, v in hba1c.items() if "hba1c" in n.lower())
        system, code = sorted(vs.codes)[0]
        new = Fact(id="bench-new", kind="observation", codes=[{"system": system, "code": code}],
                   start=dt.datetime.combine(AS_OF, dt.time(8)), value=61.0, unit="mmol/mol", status="final",
                   source_system="pathology-lims")
        ingest_records(e, [PatientRecord(patient=rec.patient, facts=[new])], source="test")
        with Session(e) as s:
            reevaluate(s, rec.patient.nhs_number, library, as_of=AS_OF, now=now)
            s.commit()
        assert "t2dm-annual-care" in evaluated
        assert len(evaluated) < len(in_force)
        e.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_reads_index_is_matches_fact(library, people, codes):
    """service._Reads.sees (one index per protocol) says exactly what its value sets' matches_fact say."""
    facts = [f for r in people for f in r.facts]
    for system, code, kind in codes:  # every code of every value set, with every kind, and without its system
        for k in FactKind:
            facts.append(Fact(id="x", kind=k, codes=[{"system": system, "code": code}], start=dt.datetime(2026, 1, 1),
                              exception_type="declined" if k == FactKind.exception else None))
        facts.append(Fact(id="y", kind=kind or "other", codes=[{"system": "", "code": code}], start=dt.datetime(2026, 1, 1),
                          exception_type="declined" if kind == "exception" else None))
    for proto in library.protocols:
        reads = service._Reads(proto)
        sets = list(proto.valuesets.values())
        for f in facts:
            assert reads.sees(f) == any(vs.matches_fact(f) is not None for vs in sets), (proto.key, f)
