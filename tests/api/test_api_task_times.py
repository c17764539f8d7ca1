"""Every view of a task names the same raised / due times (issue 17 item 5; the engine side is
tests/unit/test_result_task_times.py)."""
from __future__ import annotations

import datetime as dt

from engine.synthetic.demo import HBA1C, SCT, demo_records
from tests.api.support import AMINA


def test_care_plan_views_agree(seeded_api):
    """The API's care plan: each task in protocols[].tasks has the raised / due times of the same task
    in open_tasks: as seeded, after a new HbA1c five hours later (derived again), and after a
    re-evaluation an hour after that (reused)."""
    api = seeded_api
    amina = next(r for r in demo_records(api.clock().date()) if r.patient.nhs_number == AMINA)
    new = {"id": "hba1c-api", "kind": "observation", "codes": [{"system": SCT, "code": HBA1C}], "value": 71,
           "unit": "mmol/mol", "start": api.clock().replace(microsecond=0).isoformat(), "source_system": "pathology-lims"}
    for step in ("seeded", "new fact", "reused"):
        if step == "new fact":
            api.clock.offset = dt.timedelta(hours=5)
            body = {"source": "lab", "records": [{"patient": amina.patient.model_dump(mode="json"), "facts": [new]}]}
            r = api.post("/ingest/records", user="admin", json=body)
            assert r.status_code == 200 and r.json()["evaluated"] == [AMINA], r.text
        elif step == "reused":
            api.clock.offset = dt.timedelta(hours=6)
            assert api.post(f"/patients/{AMINA}/reevaluate", user="clinical.lead").status_code == 200
        plan = api.get(f"/patients/{AMINA}/care-plan").json()
        rows = {t["key"]: (t["raised_at"], t["due"]) for t in plan["open_tasks"]}
        result = {t["key"]: (t["raised_at"], t["due"]) for p in plan["protocols"] for t in p["tasks"]}
        shared = set(rows) & set(result)
        assert shared, "the care plan lists its open tasks both ways"
        assert {k: result[k] for k in shared} == {k: rows[k] for k in shared}, step
