"""Ingest over HTTP: FHIR bundles (transaction / collection) and record batches; re-evaluation of
the affected patients only; 422 with a JSON pointer and nothing stored; repeats add nothing."""
from __future__ import annotations

import copy
import datetime as dt

from sqlalchemy import func
from sqlmodel import Session, select

from engine.synthetic.demo import demo_records
from engine.records.fhir.export import export_patient_bundle
from engine.records.model import Fact, Patient, PatientRecord
from engine.registry.outputs import FlagRow, TaskRow
from engine.registry.tables import FactRow, IngestBatch, PatientRow

SCT = "http://snomed.info/sct"
T2DM, HBA1C, FOOT_ACTIVE = "44054006", "999791000000106", "371087003"
NEW_NHS = "9000000009"


def counts(api) -> dict[str, int]:
    with Session(api.state.engines.read) as s:
        return {t.__tablename__: s.exec(select(func.count()).select_from(t)).one() for t in (PatientRow, FactRow, IngestBatch, TaskRow, FlagRow)}


def new_patient(*facts: Fact, practice="A81001", mdt="central-1") -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=NEW_NHS, birth_date=dt.date(1961, 5, 5), sex="female", practice=practice,
                                         locality="central", mdt=mdt, given_name="Nia", family_name="Evans"),
                         facts=list(facts))


def fact(fid: str, code: str, days_ago: int, value=None, unit=None, kind="observation") -> Fact:
    return Fact(id=fid, kind=kind, codes=[{"system": SCT, "code": code}], start=dt.date.today() - dt.timedelta(days=days_ago),
                value=value, unit=unit, source_system="gp-system")


def bundle_of(rec: PatientRecord, kind: str = "collection") -> dict:
    b = export_patient_bundle(rec)
    b["type"] = kind
    return b


def test_transaction_bundle_is_stored_evaluated_and_reported(fresh_api):
    rec = new_patient(fact("dx", T2DM, 800, kind="condition"), fact("a1", HBA1C, 30, 80, "mmol/mol"))
    r = fresh_api.post("/ingest/fhir", user="admin", json=bundle_of(rec, "transaction"), params={"source_system": "gp-feed"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["facts_added"] == 2 and body["patients"][0] == {
        "nhs_number": NEW_NHS, "created": True, "demographics_changed": False, "added": 2, "updated": 0, "unchanged": 0,
        "reevaluated": True, "evaluation": "evaluated"}
    [diff] = body["changes"]
    opened = {c["title"] for c in diff["tasks_opened"]}
    assert {"Diabetes specialist nurse review", "Review glucose-lowering therapy"} <= opened
    assert any(c["key"].endswith("rule:hba1c-very-high") for c in diff["flags_raised"])
    assert all(c["id"] for c in diff["tasks_opened"])  # task ids, to act on straight away
    plan = fresh_api.get(f"/patients/{NEW_NHS}/care-plan").json()
    assert plan["protocols"][0]["on_register"] and len(plan["open_tasks"]) == len(opened)


def test_same_bundle_twice_adds_nothing(fresh_api):
    b = bundle_of(new_patient(fact("dx", T2DM, 800, kind="condition"), fact("a1", HBA1C, 30, 80, "mmol/mol")))
    first = fresh_api.post("/ingest/fhir", user="admin", json=b).json()
    before = counts(fresh_api)
    again = fresh_api.post("/ingest/fhir", user="admin", json=b)
    assert again.status_code == 200
    body = again.json()
    assert body["facts_added"] == 0 and body["facts_unchanged"] == 2 and body["changes"] == []
    assert body["duplicate_of_batch"] == first["batch_id"]
    after = counts(fresh_api)
    assert {k: after[k] - before[k] for k in after} == {"patient": 0, "fact": 0, "ingest_batch": 1, "task": 0, "flag": 0}


def test_bad_entry_is_refused_with_a_pointer_and_nothing_is_stored(fresh_api):
    rec = new_patient(fact("dx", T2DM, 800, kind="condition"), fact("a1", HBA1C, 30, 80, "mmol/mol"))
    b = bundle_of(rec, "transaction")
    i = next(i for i, e in enumerate(b["entry"]) if e["resource"]["resourceType"] == "Observation")
    bad = copy.deepcopy(b)
    bad["entry"][i]["resource"]["effectiveDateTime"] = "the day before yesterday"
    before = counts(fresh_api)
    r = fresh_api.post("/ingest/fhir", user="admin", json=bad)
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["pointer"].startswith(f"/entry/{i}/resource/effectiveDateTime"), err
    assert "nothing stored" in r.json()["detail"]
    assert counts(fresh_api) == before
    # not a bundle at all, and a bundle nobody can use
    assert fresh_api.post("/ingest/fhir", user="admin", json={"resourceType": "Patient"}).status_code == 422
    assert fresh_api.post("/ingest/fhir", user="admin", json={"resourceType": "Bundle", "type": "collection"}).status_code == 422
    assert counts(fresh_api) == before


def test_record_batch_and_only_affected_patients_are_reevaluated(fresh_api):
    recs = demo_records(dt.date.today())
    r = fresh_api.post("/ingest/records", user="admin", json={"source": "demo", "records": [x.model_dump(mode="json") for x in recs]})
    assert r.status_code == 200
    assert len(r.json()["changes"]) == 6
    # one new fact for one patient: only that patient is re-evaluated
    frank = next(x for x in recs if x.patient.nhs_number == "9990000034")
    frank.facts.append(fact("a1-new", HBA1C, 1, 80, "mmol/mol"))
    r = fresh_api.post("/ingest/records", user="admin", json={"source": "demo", "records": [x.model_dump(mode="json") for x in recs]})
    body = r.json()
    assert [c["nhs_number"] for c in body["changes"]] == ["9990000034"]
    assert [p["nhs_number"] for p in body["patients"] if p["reevaluated"]] == ["9990000034"]
    assert any(c["title"] == "Diabetes specialist nurse review" for c in body["changes"][0]["tasks_opened"])


def test_record_batch_validation_errors_point_into_the_body(fresh_api):
    rec = new_patient(fact("dx", T2DM, 800, kind="condition")).model_dump(mode="json")
    rec["facts"][0]["end"] = "1900-01-01T00:00:00"  # ends before it starts
    before = counts(fresh_api)
    r = fresh_api.post("/ingest/records", user="admin", json={"source": "x", "records": [rec]})
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"].startswith("/records/0/facts/0")
    bad_nhs = new_patient().model_dump(mode="json")
    bad_nhs["patient"]["nhs_number"] = "1234567890"
    r = fresh_api.post("/ingest/records", user="admin", json={"source": "x", "records": [rec, bad_nhs]})
    assert any(e["pointer"].startswith("/records/1/patient/nhs_number") for e in r.json()["errors"])
    twice = new_patient().model_dump(mode="json")
    r = fresh_api.post("/ingest/records", user="admin", json={"source": "x", "records": [twice, twice]})
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/records/1/patient/nhs_number"
    assert counts(fresh_api) == before


def test_practice_staff_may_only_load_their_own_practice(fresh_api):
    ok = new_patient(fact("dx", T2DM, 800, kind="condition"), practice="A81001")
    assert fresh_api.post("/ingest/fhir", user="practice.staff", json=bundle_of(ok)).status_code == 200
    other = new_patient(fact("dx2", T2DM, 800, kind="condition"), practice="A81003")
    before = counts(fresh_api)
    r = fresh_api.post("/ingest/fhir", user="practice.staff", json=bundle_of(other))
    assert r.status_code == 403  # moving a patient to another practice, or loading one, is refused
    assert counts(fresh_api) == before


def test_ingest_is_in_the_access_log(fresh_api):
    fresh_api.post("/ingest/fhir", user="admin", json=bundle_of(new_patient(fact("dx", T2DM, 800, kind="condition"))))
    log = fresh_api.get("/access-log", user="admin", params={"nhs_number": NEW_NHS}).json()
    assert log["items"][0]["resource"] == "ingest" and log["items"][0]["action"] == "write"
