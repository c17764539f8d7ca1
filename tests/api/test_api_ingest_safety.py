"""Issue 14 (items 1, 2 and 9's `system: [null, null]`): ingest that cannot lose evaluations, one bad
patient never failing anyone else, and implausible input refused with a pointer.

Run on SQLite and PostgreSQL (`fresh_api` follows `db_url`). The crash-and-restart proof with a real
server process is tests/api/test_api_ingest_crash.py.
"""
from __future__ import annotations

import copy
import datetime as dt

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

import api.routers.ingest as ingest_router
from engine.synthetic.demo import demo_records
from engine.registry.outputs import PatientEvaluationRow
from engine.registry.pending import DataProblemRow, PendingEvaluationRow
from engine.registry.tables import FactRow, IngestBatch, PatientRow
from tests.api.test_api_ingest import HBA1C, NEW_NHS, SCT, T2DM, bundle_of, counts, fact, new_patient


def _records(*recs) -> dict:
    return {"source": "safety", "records": [r.model_dump(mode="json") if hasattr(r, "model_dump") else r for r in recs]}


def _refused(api, path: str, body: dict, pointer: str, user: str = "admin"):
    before = counts(api)
    r = api.post(path, user=user, json=body)
    assert r.status_code == 422, (r.status_code, r.text[:500])
    pointers = [e["pointer"] for e in r.json()["errors"]]
    assert any(p.startswith(pointer) for p in pointers), (pointer, r.json())
    assert counts(api) == before  # nothing stored
    return r.json()


def _pending(api) -> int:
    with Session(api.state.engines.read) as s:
        return s.exec(select(func.count()).select_from(PendingEvaluationRow)).one()


# ---- item 9: type confusion -> 422 with a pointer, never 500 ---------------------------------------
TYPE_CONFUSION = [
    (("facts", 0, "codes", 0, "system"), [None, None]),
    (("facts", 0, "codes", 0, "system"), {"a": 1}),
    (("facts", 0, "codes", 0, "system"), 12),
    (("facts", 0, "codes", 0, "code"), [None, None]),
    (("facts", 0, "codes", 0), [None, None]),
    (("facts", 0, "codes"), {"system": "sct", "code": "1"}),
    (("facts", 0, "start"), [None, None]),
    (("facts", 0, "start"), {"year": 2020}),
    (("facts", 0, "value"), [1, 2]),
    (("facts", 0, "attrs"), [None, None]),
    (("facts", 0, "value_codes"), [None, None]),
    (("patient", "nhs_number"), [None, None]),
    (("patient", "nhs_number"), {"a": None}),
    (("patient", "birth_date"), [None, None]),
    (("patient", "source_ids"), [None, None]),
    (("patient", "given_name"), [None, None]),
    (("facts",), {"0": None}),
]


def test_type_confusion_in_records_is_a_422_with_a_pointer(fresh_api):
    good = new_patient(fact("dx", T2DM, 800, kind="condition")).model_dump(mode="json")
    for path, value in TYPE_CONFUSION:
        bad = copy.deepcopy(good)
        holder = bad
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = value
        pointer = "/records/0/" + "/".join(map(str, path))
        _refused(fresh_api, "/ingest/records", _records(bad), pointer)


# ---- item 2: implausible dates, control characters, over-long text -------------------------------
def _with(rec: dict, path: tuple, value) -> dict:
    bad = copy.deepcopy(rec)
    holder = bad
    for part in path[:-1]:
        holder = holder[part]
    holder[path[-1]] = value
    return bad


def test_implausible_dates_are_refused_with_a_pointer_in_records(fresh_api):
    good = new_patient(fact("dx", T2DM, 800, kind="condition"), fact("a1", HBA1C, 30, 80, "mmol/mol")).model_dump(mode="json")
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=5 * 365 + 30)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    tomorrow_plus = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    for path, value in [
        (("facts", 1, "start"), "0001-01-01T00:00:00+00:00"),   # the bundle: year 0 in derive.py
        (("facts", 1, "start"), "0001-01-01T00:00:00+05:00"),   # year 0 already in UTC
        (("facts", 1, "start"), "9999-12-31T23:00:00-05:00"),   # year 10000 in UTC
        (("facts", 1, "start"), "1899-12-31T00:00:00"),
        (("facts", 1, "start"), future),
        (("facts", 1, "end"), "9999-12-31T00:00:00"),
        (("patient", "birth_date"), "9999-12-31"),
        (("patient", "birth_date"), "0001-01-01"),
        (("patient", "birth_date"), tomorrow_plus),
        (("patient", "death_date"), "1950-01-01"),               # before birth (1961)
        (("patient", "death_date"), "9999-12-31"),
        (("patient", "registered_on"), "0001-01-01"),
    ]:
        _refused(fresh_api, "/ingest/records", _records(_with(good, path, value)), "/records/0/" + "/".join(map(str, path)))
    # the plausible edges still go in: a death today, a fact dated tomorrow (time zones)
    ok = _with(_with(good, ("patient", "death_date"), dt.date.today().isoformat()),
               ("facts", 1, "start"), (dt.date.today() + dt.timedelta(days=1)).isoformat())
    assert fresh_api.post("/ingest/records", user="admin", json=_records(ok)).status_code == 200


def test_control_characters_and_overlong_text_are_refused_with_a_pointer(fresh_api):
    good = new_patient(fact("dx", T2DM, 800, kind="condition")).model_dump(mode="json")
    for path, value in [
        (("patient", "family_name"), "Evans\x00"),
        (("patient", "given_name"), "Nia\u202eevil"),                 # right-to-left override
        (("patient", "given_name"), "N" * 100_000),
        (("patient", "family_name"), "Ev\tans"),                      # no tabs in a name
        (("patient", "mdt"), "central\u2066-1"),
        (("patient", "source_ids"), {"gp\x00": "1"}),
        (("facts", 0, "codes", 0, "code"), "4405\x004006"),
        (("facts", 0, "codes", 0, "code"), "4" * 5000),
        (("facts", 0, "codes", 0, "display"), "Type 2\x07 diabetes"),
        (("facts", 0, "id"), "dx\x1b[31m"),
        (("facts", 0, "id"), "d" * 1000),
        (("facts", 0, "unit"), "u" * 1000),
        (("facts", 0, "attrs"), {"note": "ok\u202e"}),
        (("facts", 0, "source_system"), "gp\u0085"),                  # C1 control
    ]:
        _refused(fresh_api, "/ingest/records", _records(_with(good, path, value)), "/records/0/" + "/".join(map(str, path[:3])))
    # free text may hold tabs and new lines; names may be written in any script
    ok = _with(_with(good, ("facts", 0, "codes", 0, "display"), "Type 2\tdiabetes\nmellitus"), ("patient", "family_name"), "عبد الله")
    assert fresh_api.post("/ingest/records", user="admin", json=_records(ok)).status_code == 200


def _entry(bundle: dict, rtype: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == rtype)


def test_implausible_fhir_bundle_is_refused_with_a_pointer(fresh_api):
    rec = new_patient(fact("dx", T2DM, 800, kind="condition"), fact("a1", HBA1C, 30, 80, "mmol/mol"))
    b = bundle_of(rec, "transaction")
    obs, pat = _entry(b, "Observation"), _entry(b, "Patient")
    for where, value in [
        (("entry", obs, "resource", "effectiveDateTime"), "0001-01-01T00:00:00+00:00"),
        (("entry", obs, "resource", "effectiveDateTime"), "9999-12-31T00:00:00+00:00"),
        (("entry", pat, "resource", "birthDate"), "9999-12-31"),
        (("entry", pat, "resource", "birthDate"), "0001-01-01"),
        (("entry", pat, "resource", "name"), [{"family": "E" * 100_000}]),
        (("entry", pat, "resource", "name"), [{"family": "Ev\u202eans"}]),
    ]:
        _refused(fresh_api, "/ingest/fhir", _with(b, where, value), "/" + "/".join(map(str, where)))
    bad = copy.deepcopy(b)
    bad["entry"][obs]["resource"]["code"]["coding"][0]["code"] = "9997\u202e91000000106"
    _refused(fresh_api, "/ingest/fhir", bad, f"/entry/{obs}/resource")


# ---- item 2: one patient's failed evaluation is that patient's data problem -------------------------
def _legacy_bad_fact(api, nhs: str) -> None:
    """A fact dated 0001-01-01 as the running instance stored it before the record rules existed."""
    with Session(api.state.engines.write) as s:
        p = s.exec(select(PatientRow).where(PatientRow.nhs_number == nhs)).one()
        batch = s.exec(select(IngestBatch.id).order_by(IngestBatch.id.desc())).first()
        s.add(FactRow(patient_id=p.id, source_system="legacy-feed", source_id="Condition/year-one", kind="condition",
                      start=dt.datetime(1, 1, 1), care_setting="gp", codes=[{"system": SCT, "code": T2DM, "display": None}],
                      content_hash="legacy", batch_id=batch))
        s.commit()


def test_a_bad_stored_fact_is_a_data_problem_not_a_500(fresh_api):
    bad = new_patient(fact("a1", HBA1C, 30, 80, "mmol/mol"))
    recs = [bad, *demo_records(fresh_api.clock().date())]
    r = fresh_api.post("/ingest/records", user="admin", json=_records(*recs))
    assert r.status_code == 200
    bad_nhs, other = recs[0].patient.nhs_number, recs[1].patient.nhs_number
    _legacy_bad_fact(fresh_api, bad_nhs)  # a type 2 diabetes diagnosis dated 0001-01-01

    r = fresh_api.post(f"/patients/{bad_nhs}/reevaluate")
    assert r.status_code == 200, r.text
    problem = r.json()["data_problem"]
    assert "year 0 is out of range" in problem["message"]
    assert (problem["fact_source_system"], problem["fact_source_id"]) == ("legacy-feed", "Condition/year-one")
    assert "1900" in problem["fact_problem"]
    assert fresh_api.post(f"/patients/{other}/reevaluate").status_code == 200

    plan = fresh_api.get(f"/patients/{bad_nhs}/care-plan").json()
    [shown] = plan["data_problems"]
    assert shown["fact_source_id"] == "Condition/year-one" and plan["protocols"]  # earlier outputs kept
    assert fresh_api.get(f"/patients/{other}/care-plan").json()["data_problems"] == []

    # the area snapshot leaves the patient out and says so, pseudonymised for the auditor
    r = fresh_api.post("/audit/snapshots", user="auditor", json={"as_of": fresh_api.clock().date().isoformat()})
    assert r.status_code == 201, r.text
    snap = r.json()
    assert snap["patients"] == len(recs) - 1
    [p] = snap["data_problems"]
    assert p["nhs_number"] is None and p["patient"] and p["patient"] != bad_nhs and bad_nhs not in r.text
    assert p["fact_source_id"] == "Condition/year-one"
    assert fresh_api.get("/audit/measures", user="auditor").json()["data_problems"] == 1

    # a delivery for both patients: the other is evaluated, the bad one reported, 200
    recs[0].facts.append(fact("a1-new", HBA1C, 1, 80, "mmol/mol"))
    recs[1].facts.append(fact("a1-new", HBA1C, 1, 80, "mmol/mol"))
    r = fresh_api.post("/ingest/records", user="admin", json=_records(recs[0], recs[1]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["evaluated"] == [other] and [d["nhs_number"] for d in body["data_problems"]] == [bad_nhs]
    assert {p["nhs_number"]: p["evaluation"] for p in body["patients"]} == {bad_nhs: "data-problem", other: "evaluated"}
    assert _pending(fresh_api) == 0

    # fixing the data resolves the problem
    with Session(fresh_api.state.engines.write) as s:
        for f in s.exec(select(FactRow).where(FactRow.source_id == "Condition/year-one")):
            s.delete(f)
        s.commit()
    r = fresh_api.post(f"/patients/{bad_nhs}/reevaluate")
    assert r.status_code == 200 and r.json()["data_problem"] is None
    assert fresh_api.get(f"/patients/{bad_nhs}/care-plan").json()["data_problems"] == []
    with Session(fresh_api.state.engines.read) as s:
        assert all(d.resolved_at for d in s.exec(select(DataProblemRow)))


# ---- item 1: the outbox ------------------------------------------------------------------------------
def test_large_delivery_is_stored_pending_and_drained_in_the_background(fresh_api, monkeypatch):
    monkeypatch.setattr(ingest_router, "INLINE_LIMIT", 2)
    recs = demo_records(fresh_api.clock().date())
    r = fresh_api.post("/ingest/records", user="admin", json=_records(*recs))
    assert r.status_code == 200
    body = r.json()
    nhs = sorted(x.patient.nhs_number for x in recs)
    assert body["evaluated"] == [] and body["pending"] == nhs and body["changes"] == []
    assert {p["evaluation"] for p in body["patients"]} == {"pending"}
    assert fresh_api.state.drainer.wait(120)
    assert _pending(fresh_api) == 0
    with Session(fresh_api.state.engines.read) as s:
        evaluated = set(s.exec(select(PatientRow.nhs_number).join(PatientEvaluationRow,
                                                                   PatientEvaluationRow.patient_id == PatientRow.id)))
    assert evaluated == set(nhs)
    plan = fresh_api.get(f"/patients/{nhs[0]}/care-plan").json()
    assert plan["evaluation_pending"] is False and plan["protocols"]


def test_facts_and_their_evaluation_mark_are_stored_together(fresh_api, monkeypatch):
    """Before the response, the stored patient is either evaluated or marked: never neither."""
    monkeypatch.setattr(ingest_router, "INLINE_LIMIT", 0)
    fresh_api.state.drainer.stop()  # no background drain: look at what the ingest itself left
    rec = new_patient(fact("dx", T2DM, 800, kind="condition"), fact("a1", HBA1C, 30, 80, "mmol/mol"))
    body = fresh_api.post("/ingest/records", user="admin", json=_records(rec)).json()
    assert body["pending"] == [NEW_NHS] and body["evaluated"] == []
    assert _pending(fresh_api) == 1
    plan = fresh_api.get(f"/patients/{NEW_NHS}/care-plan").json()
    assert plan["evaluation_pending"] is True and plan["protocols"] == []
    # the same delivery again drains whoever of it is still pending (here in the request)
    monkeypatch.setattr(ingest_router, "INLINE_LIMIT", 50)
    again = fresh_api.post("/ingest/records", user="admin", json=_records(rec)).json()
    assert again["duplicate_of_batch"] == body["batch_id"] and again["facts_added"] == 0
    assert again["evaluated"] == [NEW_NHS] and again["pending"] == []
    assert _pending(fresh_api) == 0 and fresh_api.get(f"/patients/{NEW_NHS}/care-plan").json()["protocols"]


def test_resending_heals_patients_stored_without_an_evaluation(fresh_api):
    """The issue's instance: patients stored, evaluation lost (before the outbox, no mark either).
    Sending the same delivery again evaluates them."""
    recs = demo_records(fresh_api.clock().date())
    first = fresh_api.post("/ingest/records", user="admin", json=_records(*recs)).json()
    with Session(fresh_api.state.engines.write) as s:  # what a crash left on the old code: facts, no outputs, no mark
        for row in s.exec(select(PatientEvaluationRow)):
            s.delete(row)
        for row in s.exec(select(PendingEvaluationRow)):
            s.delete(row)
        s.commit()
    again = fresh_api.post("/ingest/records", user="admin", json=_records(*recs))
    assert again.status_code == 200
    body = again.json()
    assert body["duplicate_of_batch"] == first["batch_id"] and body["facts_added"] == 0
    assert body["evaluated"] == sorted(r.patient.nhs_number for r in recs)
    with Session(fresh_api.state.engines.read) as s:
        assert len(set(s.exec(select(PatientEvaluationRow.patient_id)))) == len(recs)
