"""Concurrent updates to one patient lose nothing: every fact stored, one task per key, and two
people acting on one task at once cannot both win."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import Session, select

from engine.records.model import Fact, Patient, PatientRecord
from engine.registry.outputs import OPEN_STATUSES, TaskEventRow, TaskRow
from engine.registry.tables import FactRow, PatientRow

NHS = "9000000009"
SCT = "http://snomed.info/sct"
T2DM, HBA1C, SYS_BP = "44054006", "999791000000106", "72313002"
THREADS = 8


def delivery(i: int) -> dict:
    today = dt.date.today()
    facts = [Fact(id="dx", kind="condition", codes=[{"system": SCT, "code": T2DM}], start=today - dt.timedelta(days=900),
                  source_system="gp-system"),
             Fact(id=f"hba1c-{i}", kind="observation", codes=[{"system": SCT, "code": HBA1C}],
                  start=today - dt.timedelta(days=10 + i), value=60 + i, unit="mmol/mol", source_system=f"lab-{i % 3}"),
             Fact(id=f"bp-{i}", kind="observation", codes=[{"system": SCT, "code": SYS_BP}],
                  start=today - dt.timedelta(days=20 + i), value=150, unit="mm[Hg]", source_system="community-ehr")]
    rec = PatientRecord(patient=Patient(nhs_number=NHS, birth_date=dt.date(1955, 2, 2), sex="male", practice="A81001",
                                        locality="central", mdt="central-1"), facts=facts)
    return {"source": f"feed-{i}", "records": [rec.model_dump(mode="json")]}


def test_concurrent_deliveries_for_one_patient(fresh_api):
    headers = fresh_api.h("admin")

    def send(i):
        return fresh_api.client.post("/ingest/records", headers=headers, json=delivery(i))

    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(send, range(THREADS)))
    assert [r.status_code for r in responses] == [200] * THREADS, [r.text for r in responses if r.status_code != 200]
    with Session(fresh_api.state.engines.read) as s:
        [patient] = s.exec(select(PatientRow)).all()
        facts = s.exec(select(FactRow).where(FactRow.patient_id == patient.id)).all()
        tasks = s.exec(select(TaskRow).where(TaskRow.patient_id == patient.id)).all()
    assert len(facts) == 1 + 2 * THREADS  # the shared diagnosis once, every delivery's own facts
    per_key = Counter(t.key for t in tasks)
    assert per_key and max(per_key.values()) == 1, per_key
    assert all(t.status in OPEN_STATUSES for t in tasks)
    # the stored evaluation saw every delivery: the latest HbA1c is the most recent one (i = 0)
    plan = fresh_api.get(f"/patients/{NHS}/care-plan").json()
    hba1c = next(i for i in plan["protocols"][0]["care_plan"] if i["activity"] == "hba1c")
    assert hba1c["last_done"] == (dt.date.today() - dt.timedelta(days=10)).isoformat()
    # and re-evaluating once more changes nothing
    assert fresh_api.post(f"/patients/{NHS}/reevaluate").json()["tasks_opened"] == []


def test_two_people_accept_one_task_at_once(fresh_api):
    fresh_api.post("/ingest/records", user="admin", json=delivery(0))
    task = fresh_api.get("/worklist", params={"nhs_number": NHS}).json()["items"][0]
    users = ["mdt.member", "practice.staff", "clinical.lead", "lead.central"]
    heads = [fresh_api.h(u) for u in users]

    def accept(h):
        return fresh_api.client.post(f"/tasks/{task['id']}/accept", headers=h).status_code

    with ThreadPoolExecutor(len(users)) as pool:
        codes = sorted(pool.map(accept, heads))
    assert codes == [200] + [409] * (len(users) - 1)
    with Session(fresh_api.state.engines.read) as s:
        events = s.exec(select(TaskEventRow).where(TaskEventRow.task_id == task["id"])).all()
    assert [e.action for e in events] == ["raised", "accepted"]
