"""MDT case-conference lists with outcomes; audit figures, peer comparison, drill-down, trends."""
from __future__ import annotations

import datetime as dt

import pytest

from engine.app.audit import funnel, wilson
from api.routers.mdt import next_meeting_day
from tests.api.support import AMINA, FRANK, GEORGE


def test_case_conference_list(seeded_api):
    api = seeded_api
    conf = api.get("/mdts/central-2/case-conference", user="mdt.other").json()
    [frank] = [p for p in conf["patients"] if p["nhs_number"] == FRANK]
    assert conf["patients"][0]["nhs_number"] == FRANK  # new escalation first
    assert frank["new_escalation"] and frank["escalations"][0]["title"] == "Active foot problem - discuss at MDT"
    assert any(r.startswith("new escalation") for r in frank["reasons"]) and frank["red_flags"]
    assert frank["risk_tier"] is None and frank["outcome"] is None
    assert "9990000018" not in {p["nhs_number"] for p in conf["patients"]}  # declined care, nothing to discuss
    c1 = {p["nhs_number"] for p in api.get("/mdts/central-1/case-conference", user="mdt.member").json()["patients"]}
    assert c1 == {AMINA, GEORGE}  # red flags (HbA1c > 75, eGFR < 30)


def test_overdue_urgent_tasks_bring_patients_to_the_mdt(seeded_api):
    seeded_api.clock.offset = dt.timedelta(days=30)
    try:
        conf = seeded_api.get("/mdts/central-1/case-conference", user="mdt.member").json()
        amina = next(p for p in conf["patients"] if p["nhs_number"] == AMINA)
        assert {t["priority"] for t in amina["overdue_urgent"]} == {"high"}
        assert any(r.startswith("overdue high task") for r in amina["reasons"])
    finally:
        seeded_api.clock.offset = dt.timedelta()


def test_outcomes(seeded_api):
    api = seeded_api
    today = next_meeting_day(api.clock().date())  # the meeting the list is for (a working day)
    r = api.post("/mdts/central-2/outcomes", user="mdt.other",
                 json={"nhs_number": FRANK, "meeting_date": today.isoformat(), "outcome": "Urgent podiatry seen; offload boot",
                       "actions": "Review in 2 weeks"})
    assert r.status_code == 201 and r.json()["recorded_by"] == "mdt.other"
    conf = api.get("/mdts/central-2/case-conference", user="mdt.other").json()
    frank = next(p for p in conf["patients"] if p["nhs_number"] == FRANK)
    assert frank["outcome"]["outcome"].startswith("Urgent podiatry")
    # at the next meeting the escalation is still open but no longer new
    nxt = api.get("/mdts/central-2/case-conference", user="mdt.other",
                  params={"meeting_date": (today + dt.timedelta(days=14)).isoformat()}).json()
    frank = next(p for p in nxt["patients"] if p["nhs_number"] == FRANK)
    assert not frank["new_escalation"] and frank["outcome"] is None and frank["last_outcome"]["actions"] == "Review in 2 weeks"
    hist = api.get("/mdts/central-2/outcomes", user="mdt.other", params={"nhs_number": FRANK}).json()
    assert len(hist) == 1
    # a patient outside the member's scope (404, as for an unknown NHS number), or a member of another MDT (403)
    assert api.post("/mdts/central-2/outcomes", user="mdt.other",
                    json={"nhs_number": AMINA, "meeting_date": today.isoformat(), "outcome": "x"}).status_code == 404
    assert api.post("/mdts/central-2/outcomes", json={"nhs_number": AMINA, "meeting_date": today.isoformat(),
                                                      "outcome": "x"}).status_code == 422
    assert api.post("/mdts/central-2/outcomes", user="mdt.member",
                    json={"nhs_number": FRANK, "meeting_date": today.isoformat(), "outcome": "x"}).status_code == 403
    mdts = {m["mdt"]: m for m in api.get("/mdts").json()}
    assert mdts["central-2"]["open_escalations"] == 1 and mdts["central-1"]["patients"] == 4


def _measures_from_care_plans(api, measure):
    out = {}
    for p in api.get("/patients", params={"page_size": 500}).json()["items"]:
        plan = api.get(f"/patients/{p['nhs_number']}/care-plan").json()
        m = next(x for x in plan["protocols"][0]["measures"] if x["measure"] == measure)
        c = out.setdefault(p["practice"], [0, 0, 0])
        c[0] += m["denominator"]
        c[1] += m["exclusion"]
        c[2] += m["numerator"]
    return out


def test_audit_figures_and_peer_comparison(api):
    body = api.get("/audit/measures", user="auditor", params={"unit_kind": "practice", "measure": "DM020"}).json()
    rows = {r["unit"]: r for r in body["rows"]}
    assert body["patients"] == 6
    expected = _measures_from_care_plans(api, "DM020")
    assert {u: [r["denominator"], r["exclusions"], r["numerator"]] for u, r in rows.items()} == expected
    area = api.get("/audit/measures", user="auditor", params={"unit_kind": "area", "measure": "DM020"}).json()["rows"][0]
    assert area["denominator"] == sum(r["denominator"] for r in rows.values())
    for r in rows.values():
        eligible = r["denominator"] - r["exclusions"]
        assert r["rate"] == (round(r["numerator"] / eligible, 4) if eligible else None)
        assert r["area_rate"] == area["rate"]
        if eligible:
            assert tuple(r["ci95"]) == wilson(r["numerator"], eligible)
            assert r["funnel95"] == pytest.approx(funnel(area["rate"], eligible, 1.959964), abs=1e-3)
            assert r["comparison"] in ("above", "below", "within")
    mdt = api.get("/audit/measures", user="practice.staff", params={"unit_kind": "mdt"}).json()["rows"]
    assert {r["unit"] for r in mdt} == {"central-1", "central-2"} and {r["measure"] for r in mdt} == {"DM020", "DM021", "DM036"}
    loc = api.get("/audit/measures", params={"unit_kind": "locality"}).json()["rows"]
    assert {r["unit"] for r in loc} == {"central"}


def test_the_audit_pages_one_aggregation_gives_both_endpoints_figures(api):
    """The audit page takes its figures per unit and for the area from one aggregation
    (api.routers.audit.measures_with_area): the same as GET /audit/measures for the unit kind and for the area."""
    from api.deps import Principal
    from api.routers.audit import measures_with_area
    from api.security import Scope

    state = api.client.app.state.carepath
    who = Principal(id=0, username="auditor", role="auditor", mdt=None, practice=None, locality=None, scope=Scope())
    def figures(out: dict) -> dict:  # the figures, not when each was counted (the area's own are counted apart)
        return {k: v for k, v in out.items() if k != "counted_at"}

    for kind in ("practice", "mdt", "locality"):
        by_unit, area = measures_with_area(kind, None, who, state)
        assert by_unit.model_dump(mode="json") == api.get("/audit/measures", user="auditor", params={"unit_kind": kind}).json()
        assert figures(area.model_dump(mode="json")) == figures(
            api.get("/audit/measures", user="auditor", params={"unit_kind": "area"}).json())
        assert area.rows and by_unit.rows


def test_wilson_and_funnel():
    assert wilson(0, 0) is None and wilson(5, 10) == (0.2366, 0.7634)
    assert funnel(0.5, 100, 1.959964) == (0.402, 0.598) and funnel(None, 10, 1.96) is None


def test_drill_down_by_role(api):
    lead = api.get("/audit/measures/DM020/patients", params={"unit_kind": "area"}).json()
    assert not lead["pseudonymised"] and {p["patient"] for p in lead["patients"]} >= {AMINA}
    assert all(p["why"] for p in lead["patients"])
    aud = api.get("/audit/measures/DM020/patients", user="auditor", params={"unit_kind": "area"}).json()
    assert aud["pseudonymised"] and all(p["patient"].startswith("P-") and p["name"] is None for p in aud["patients"])
    assert len(aud["patients"]) == len(lead["patients"])
    staff = api.get("/audit/measures/DM020/patients", user="practice.staff", params={"unit_kind": "area"}).json()
    assert staff["patients"] and {p["practice"] for p in staff["patients"]} == {"A81001"}
    notmet = api.get("/audit/measures/DM020/patients", params={"group": ["not-met"], "unit_kind": "practice",
                                                               "unit": "A81001"}).json()
    assert [p["patient"] for p in notmet["patients"]] == [AMINA]
    assert api.get("/audit/measures/NOPE/patients").status_code == 404


def test_snapshots_and_trend(seeded_api):
    api = seeded_api
    today = api.clock().date()
    dates = [today - dt.timedelta(days=120), today - dt.timedelta(days=60), today]
    for d in dates:
        r = api.post("/audit/snapshots", user="auditor", json={"as_of": d.isoformat()})
        assert r.status_code == 201 and r.json()["patients"] == 6 and r.json()["rows"] > 0
    # before the protocol's effective date (2026-04-01) nothing was in force: no figures
    assert api.post("/audit/snapshots", json={"as_of": "2026-01-31"}).json()["rows"] == 0
    again = api.post("/audit/snapshots", json={"as_of": today.isoformat()}).json()  # replaces, not duplicates
    assert [s["as_of"] for s in api.get("/audit/snapshots", user="auditor").json()] == [d.isoformat() for d in dates]
    trend = api.get("/audit/trend", user="auditor", params={"measure": "DM020"}).json()
    assert [p["as_of"] for p in trend["points"]] == [d.isoformat() for d in dates]
    live = api.get("/audit/measures", params={"unit_kind": "area", "measure": "DM020"}).json()["rows"][0]
    last = trend["points"][-1]
    assert (last["denominator"], last["exclusions"], last["numerator"]) == (live["denominator"], live["exclusions"], live["numerator"])
    assert again["rows"] > 0
    practice = api.get("/audit/trend", params={"measure": "DM020", "unit_kind": "practice", "unit": "A81001"}).json()
    assert len(practice["points"]) == 3
    assert api.get("/audit/trend", params={"measure": "DM020", "unit_kind": "practice"}).status_code == 422


def test_risk_tier_is_the_highest_stratification_level():
    from api.routers.mdt import risk_tier
    assert risk_tier({"t2dm-annual-care": {"tier": None}}) is None
    assert risk_tier({"risk-stratification": {"tier": {"level": 2}}, "frailty": {"tier": {"level": 3}}, "x": {}}) == 3


def test_structured_outcome_actions_become_tasks(seeded_api):
    """Each agreed action (type, role, due date) becomes an open task on the worklist, from the MDT, with
    its why; a protocol re-evaluation does not resolve it; a bad action records nothing."""
    api = seeded_api
    meeting = next_meeting_day(api.clock().date())
    due = meeting + dt.timedelta(days=7)
    body = {"nhs_number": FRANK, "meeting_date": meeting.isoformat(), "outcome": "Ulcer healing; frailty concerns",
            "action_items": [{"type": "medication-review", "role": "clinical-pharmacist", "due": due.isoformat()},
                             {"type": "home-visit", "role": "community-matron", "due": meeting.isoformat(),
                              "priority": "urgent", "detail": "check offloading boot"}]}
    before = api.get("/worklist", user="mdt.other", params={"page_size": 500}).json()["total"]
    # refused: unknown type, a role outside the list, a due date before the meeting - nothing recorded
    for bad in ({"type": "chat"}, {"role": "plumber"}, {"due": (meeting - dt.timedelta(days=1)).isoformat()}):
        wrong = {**body, "action_items": [{**body["action_items"][0], **bad}]}
        assert api.post("/mdts/central-2/outcomes", user="mdt.other", json=wrong).status_code == 422, bad
    assert api.get("/mdts/central-2/outcomes", user="mdt.other").json() == []
    r = api.post("/mdts/central-2/outcomes", user="mdt.other", json=body)
    assert r.status_code == 201, r.text
    tasks = r.json()["tasks"]
    assert [(t["title"], t["role"], t["priority"], t["status"]) for t in tasks] == [
        ("Structured medication review", "clinical-pharmacist", "routine", "open"),
        ("Home visit: check offloading boot", "community-matron", "urgent", "open")]
    assert tasks[0]["due"].startswith(due.isoformat())
    why = f"Agreed at the central-2 MDT case conference on {meeting.day} {meeting:%B %Y}: Ulcer healing; frailty concerns"
    detail = api.get(f"/tasks/{tasks[1]['id']}", user="mdt.other").json()
    assert (detail["why"], detail["kind"], detail["protocol"], detail["source"]) == (
        why, "mdt-action", "mdt-case-conference", f"mdt-outcome:{r.json()['id']}")
    assert [(h["action"], h["actor"]) for h in detail["history"]] == [("raised", "mdt.other")]
    listed = {t["id"]: t for t in api.get("/worklist", user="mdt.other", params={"page_size": 500}).json()["items"]}
    assert {t["id"] for t in tasks} <= set(listed) and len(listed) == before + 2
    # the case conference shows them with the outcome, and the outcomes list too
    conf = api.get("/mdts/central-2/case-conference", user="mdt.other").json()
    frank = next(p for p in conf["patients"] if p["nhs_number"] == FRANK)
    assert [t["id"] for t in frank["outcome"]["tasks"]] == [t["id"] for t in tasks]
    assert [t["id"] for t in api.get("/mdts/central-2/outcomes", user="mdt.other").json()[0]["tasks"]] == [t["id"] for t in tasks]
    # re-evaluating the patient leaves the MDT's tasks open (a protocol did not raise them)
    assert api.post(f"/patients/{FRANK}/reevaluate").status_code == 200
    assert all(api.get(f"/tasks/{t['id']}").json()["status"] == "open" for t in tasks)
    # they are completed like any task: by their role, a coordinator or a lead
    r = api.post(f"/tasks/{tasks[0]['id']}/complete", user="clinical.lead", json={"outcome": "done"})
    assert r.status_code == 200 and r.json()["closed_by"] == "clinical.lead"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing database-specific: SQLite only
def test_outcome_reassigns_and_closes_existing_tasks(seeded_api):
    """Issue 16 item 6: a case-conference outcome can reassign one of the patient's open tasks to another
    care role or close it with a coded outcome; who, when and the meeting are kept on the task and shown
    in the closed view; a bad change records nothing."""
    api = seeded_api
    meeting = next_meeting_day(api.clock().date())
    open_tasks = api.get("/worklist", user="mdt.other", params={"nhs_number": FRANK, "page_size": 500}).json()["items"]
    move = next(t for t in open_tasks if t["role"] != "podiatrist")
    close = next(t for t in open_tasks if t["id"] != move["id"])
    other_patient = api.get("/worklist", params={"nhs_number": AMINA}).json()["items"][0]
    body = {"nhs_number": FRANK, "meeting_date": meeting.isoformat(), "outcome": "Podiatry to lead; eye check not wanted",
            "task_changes": [{"task_id": move["id"], "change": "reassign", "role": "podiatrist", "team": "Community podiatry"},
                             {"task_id": close["id"], "change": "close", "outcome": "not-appropriate",
                              "note": "palliative, agreed with family"}]}
    for bad in ({"task_id": other_patient["id"]},           # not this patient's task
                {"outcome": None}, {"outcome": "not-done", "note": " "},  # close needs an outcome; not done, the words
                {"change": "reassign", "role": None}):      # to whom?
        wrong = {**body, "task_changes": [body["task_changes"][0], {**body["task_changes"][1], **bad}]}
        r = api.post("/mdts/central-2/outcomes", user="mdt.other", json=wrong)
        assert r.status_code == 422, (bad, r.text)
    assert api.get("/mdts/central-2/outcomes", user="mdt.other").json() == []  # nothing recorded
    assert api.get(f"/tasks/{move['id']}").json()["role"] == move["role"]       # nothing changed
    r = api.post("/mdts/central-2/outcomes", user="mdt.other", json=body)
    assert r.status_code == 201, r.text
    when = f"agreed at the central-2 MDT case conference on {meeting.day} {meeting:%B %Y}"
    changes = r.json()["task_changes"]
    assert [(c["task_id"], c["change"]) for c in changes] == [(move["id"], "reassign"), (close["id"], "close")]
    moved = api.get(f"/tasks/{move['id']}").json()
    assert (moved["role"], moved["team"], moved["status"], moved["due"]) == ("podiatrist", "Community podiatry", move["status"], move["due"])
    assert moved["history"][-1]["action"] == "reassigned" and moved["history"][-1]["actor"] == "mdt.other"
    assert moved["history"][-1]["note"].endswith(f"to Community podiatry / podiatrist: A{when[1:]}")
    closed = api.get(f"/tasks/{close['id']}").json()
    assert (closed["status"], closed["outcome"], closed["closed_by"]) == ("completed", "not-appropriate", "mdt.other")
    assert closed["closed_reason"] == f"Not clinically appropriate: palliative, agreed with family ({when})"
    assert closed["closed_at"] and closed["history"][-1]["at"] == closed["closed_at"]
    # the worklist's closed view shows who closed it and why; the outcomes list keeps the changes
    done = {t["id"]: t for t in api.get("/worklist", user="mdt.other", params={"status": ["completed"]}).json()["items"]}
    assert done[close["id"]]["closed_by"] == "mdt.other" and when in done[close["id"]]["closed_reason"]
    assert [c["task_id"] for c in api.get("/mdts/central-2/outcomes", user="mdt.other").json()[0]["task_changes"]] == \
        [move["id"], close["id"]]
    # a closed task cannot be changed again; re-evaluation leaves it closed while the need continues
    again = {**body, "task_changes": [body["task_changes"][1]]}
    assert "already completed" in api.post("/mdts/central-2/outcomes", user="mdt.other", json=again).json()["detail"]
    assert api.post(f"/patients/{FRANK}/reevaluate").status_code == 200
    assert api.get(f"/tasks/{close['id']}").json()["status"] == "completed"
