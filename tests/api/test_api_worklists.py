"""Worklists (filters, priority-then-due order, pagination, CSV, SLA / overdue) and the task
lifecycle (accept, complete, decline with reason, reassign, reopen; history kept)."""
from __future__ import annotations

import csv
import datetime as dt
import io

from api.views import PRIORITY_ORDER
from tests.api.support import AMINA, FRANK

RANK = {p: i for i, p in enumerate(PRIORITY_ORDER)}


def items(api, user="clinical.lead", **params):
    r = api.get("/worklist", user=user, params={"page_size": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_sorted_by_priority_then_due(api):
    rows = items(api)
    assert len(rows) > 10
    keys = [(RANK[t["priority"]], t["due"]) for t in rows]
    assert keys == sorted(keys)
    assert rows[0]["priority"] == "urgent"


def test_filters(api):
    everything = items(api)
    for field, value in (("role", "gp"), ("provider", "community-podiatry"), ("team", "GP"), ("practice", "A81002"),
                         ("protocol", "t2dm-annual-care"), ("nhs_number", AMINA)):
        got = items(api, **{field: value})
        key = "nhs_number" if field == "nhs_number" else field
        assert got and all(t[key] == value for t in got), field
        assert len(got) == sum(t[key] == value for t in everything)
    urgent = items(api, priority=["urgent"])
    assert urgent and {t["priority"] for t in urgent} == {"urgent"}
    mdt = items(api, mdt="central-2")
    assert {t["nhs_number"] for t in mdt} == {"9990000018", FRANK}
    assert any(t["kind"] == "escalation" and t["provider"] == "central-2" for t in mdt)  # assigned to the MDT itself
    assert items(api, status=["completed", "declined"]) == [t for t in items(api, status=["completed", "declined"])]


def test_pagination(api):
    total = api.get("/worklist").json()["total"]
    pages = [api.get("/worklist", params={"page": n, "page_size": 7}).json() for n in range(1, total // 7 + 2)]
    ids = [t["id"] for p in pages for t in p["items"]]
    assert len(ids) == len(set(ids)) == total
    assert ids == [t["id"] for t in items(api)]


def test_csv_export(api):
    r = api.get("/worklist.csv", params={"mdt": "central-1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["task_id"]) for x in rows] == [t["id"] for t in items(api, mdt="central-1")]
    assert rows[0]["why"] and rows[0]["response"]


def test_sla_and_overdue_from_the_role_agreement(api):
    rows = items(api, role="podiatrist")
    [foot] = [t for t in rows if t["nhs_number"] == FRANK]
    assert foot["sla"]["response"] == "1 working day" and foot["sla"]["agreement"] == "central-locality-roles@1.0.0"
    assert not foot["overdue"]
    assert items(api, overdue=True) == []
    api.clock.offset = dt.timedelta(days=60)  # two months on, nothing done
    try:
        late = items(api, overdue=True)
        assert foot["id"] in {t["id"] for t in late}
        assert all(t["overdue"] and t["sla"]["hours_left"] < 0 for t in late)
        assert len(late) + len(items(api, overdue=False)) == len(items(api))
    finally:
        api.clock.offset = dt.timedelta()


def _task(api, nhs, title_part):
    return next(t for t in items(api, nhs_number=nhs) if title_part in t["title"])


def test_lifecycle_with_history(seeded_api):
    api = seeded_api
    t = _task(api, AMINA, "Smoking")
    r = api.post(f"/tasks/{t['id']}/accept", user="practice.staff", json={"note": "booked for Tuesday"})
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert api.post(f"/tasks/{t['id']}/accept", user="practice.staff").status_code == 409  # already accepted
    r = api.post(f"/tasks/{t['id']}/complete", user="practice.staff", json={"outcome": "done"})
    assert r.json()["status"] == "completed" and r.json()["closed_at"]
    assert (r.json()["outcome"], r.json()["closed_by"], r.json()["closed_reason"]) == ("done", "practice.staff", "Done")
    history = api.get(f"/tasks/{t['id']}").json()["history"]
    assert [(h["action"], h["actor"]) for h in history] == [("raised", "carepath"), ("accepted", "practice.staff"),
                                                           ("completed", "practice.staff")]
    assert history[1]["note"] == "booked for Tuesday"
    # completed stays closed on re-evaluation while the need continues (no new task raised)
    api.post(f"/patients/{AMINA}/reevaluate")
    assert t["key"] not in {x["key"] for x in items(api, nhs_number=AMINA)}
    assert t["id"] in {x["id"] for x in items(api, nhs_number=AMINA, status=["completed"])}


def test_decline_needs_a_reason_and_reassign_keeps_the_due_time(seeded_api):
    api = seeded_api
    t = _task(api, AMINA, "BMI")
    assert api.post(f"/tasks/{t['id']}/decline", json={"reason": "   "}).status_code == 422
    assert api.post(f"/tasks/{t['id']}/decline", json={}).status_code == 422
    r = api.post(f"/tasks/{t['id']}/reassign", user="mdt.member", json={"team": "health coaching", "role": "health-coach",
                                                                      "reason": "coach sees her weekly"})
    assert r.status_code == 200
    body = r.json()
    assert (body["team"], body["role"], body["due"], body["status"]) == ("health coaching", "health-coach", t["due"], "open")
    assert body["history"][-1]["action"] == "reassigned" and "coach sees her weekly" in body["history"][-1]["note"]
    assert api.post(f"/tasks/{t['id']}/reassign", json={}).status_code == 422  # to whom?
    r = api.post(f"/tasks/{t['id']}/decline", json={"reason": "patient declined weighing"})
    assert r.json()["status"] == "declined" and r.json()["closed_reason"] == "patient declined weighing"
    assert api.post(f"/tasks/{t['id']}/reassign", json={"role": "gp"}).status_code == 409  # closed
    r = api.post(f"/tasks/{t['id']}/reopen", json={"note": "changed her mind"})
    assert r.json()["status"] == "open"


def test_task_actions_respect_scope(seeded_api):
    t = _task(seeded_api, FRANK, "Refer")
    assert seeded_api.post(f"/tasks/{t['id']}/accept", user="practice.staff").status_code == 404  # A81001 staff, A81003 patient: as if no such task
    assert seeded_api.post(f"/tasks/{t['id']}/accept", user="practice.other").status_code == 200
    assert seeded_api.get("/tasks/999999").status_code == 404


def test_task_changes_are_logged(seeded_api):
    t = _task(seeded_api, AMINA, "Smoking")
    seeded_api.post(f"/tasks/{t['id']}/accept", user="mdt.member")
    log = seeded_api.get("/access-log", user="admin", params={"username": "mdt.member", "action": "write"}).json()["items"]
    assert log[0]["resource"] == "task" and log[0]["patients"] == [AMINA] and log[0]["detail"]["action"] == "accept"


def test_completion_needs_a_coded_outcome(seeded_api):
    api = seeded_api
    t = _task(api, AMINA, "Smoking")
    assert api.post(f"/tasks/{t['id']}/complete", user="practice.staff").status_code == 422  # no outcome
    assert api.post(f"/tasks/{t['id']}/complete", user="practice.staff", json={"outcome": "finished"}).status_code == 422
    r = api.post(f"/tasks/{t['id']}/complete", user="practice.staff", json={"outcome": "not-done", "note": "  "})
    assert r.status_code == 422 and "reason" in r.json()["detail"]  # not done: say why
    assert api.get(f"/tasks/{t['id']}").json()["status"] == "open"
    r = api.post(f"/tasks/{t['id']}/complete", user="practice.staff",
                 json={"outcome": "not-done", "note": "patient in hospital this week"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["outcome"], body["closed_by"]) == ("completed", "not-done", "practice.staff")
    assert body["closed_reason"] == "Not done: patient in hospital this week"
    assert body["history"][-1]["note"] == body["closed_reason"] and body["history"][-1]["actor"] == "practice.staff"
    closed = {x["id"]: x for x in items(api, nhs_number=AMINA, status=["completed"])}
    assert closed[t["id"]]["outcome"] == "not-done" and closed[t["id"]]["closed_by"] == "practice.staff"
    # reopening clears the outcome
    r = api.post(f"/tasks/{t['id']}/reopen", json={"note": "recorded in error"})
    assert (r.json()["status"], r.json()["outcome"], r.json()["closed_by"]) == ("open", None, None)


def test_only_the_assigned_role_a_coordinator_or_a_lead_may_complete(seeded_api):
    api = seeded_api
    gp_task = next(t for t in items(api, nhs_number=AMINA) if t["role"] == "gp")
    # practice.staff works as practice nurse / healthcare assistant: not the GP's task
    r = api.post(f"/tasks/{gp_task['id']}/complete", user="practice.staff", json={"outcome": "done"})
    assert r.status_code == 403
    assert "only a gp, a care coordinator or a clinical lead" in r.json()["detail"]
    assert "practice nurse" in r.json()["detail"] and "reassigned" in r.json()["detail"]
    assert api.get(f"/tasks/{gp_task['id']}").json()["status"] == "open"
    log = api.get("/access-log", user="admin", params={"username": "practice.staff", "action": "denied"}).json()["items"]
    assert log[0]["resource"] == "task" and log[0]["status"] == 403 and log[0]["detail"]["task"] == gp_task["id"]
    # declining closes the task too: the same rule (issue 16: declining was open to any clinical role)
    r = api.post(f"/tasks/{gp_task['id']}/decline", user="practice.staff", json={"reason": "not for our team"})
    assert r.status_code == 403 and "can decline this task" in r.json()["detail"] and "reassigned" in r.json()["detail"]
    assert api.get(f"/tasks/{gp_task['id']}").json()["status"] == "open"
    # they may still accept it, or ask for it to be reassigned
    assert api.post(f"/tasks/{gp_task['id']}/accept", user="practice.staff").status_code == 200
    # a user with no care role recorded may complete nothing
    frank = next(t for t in items(api, nhs_number=FRANK))
    r = api.post(f"/tasks/{frank['id']}/complete", user="practice.other", json={"outcome": "done"})
    assert r.status_code == 403 and "no care role recorded" in r.json()["detail"]
    # given the role, they may
    assert api.client.patch("/users/practice.other", headers=api.h("admin"),
                            json={"clinical_roles": [frank["role"]]}).status_code == 200
    me = api.get("/users", user="admin").json()
    assert next(u for u in me if u["username"] == "practice.other")["clinical_roles"] == [frank["role"]]
    r = api.post(f"/tasks/{frank['id']}/complete", user="practice.other", json={"outcome": "declined-by-patient"})
    assert r.status_code == 200 and r.json()["closed_reason"] == "Declined by the patient"
    # the care coordinator (mdt.member) and the clinical lead may complete any role's task
    r = api.post(f"/tasks/{gp_task['id']}/complete", user="mdt.member", json={"outcome": "not-appropriate", "note": "end of life"})
    assert r.status_code == 200 and r.json()["closed_by"] == "mdt.member"
    other = next(t for t in items(api, nhs_number=AMINA) if t["role"] != "gp")
    assert api.post(f"/tasks/{other['id']}/complete", user="clinical.lead", json={"outcome": "done"}).status_code == 200
