"""The MDT case-conference page: the list to discuss and why, each patient's summary across care
settings and current care plan, recording the outcome; only for the MDT's members (and leads)."""
from __future__ import annotations

import datetime as dt
import re

from playwright.sync_api import expect

from tests.browser.support import AMINA, FRANK, GEORGE, access_log, shot


def test_case_conference_for_its_mdt(pages, server):
    page = pages.login("mdt.other")  # central-2
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Case conference").click()
    expect(page).to_have_url(re.compile(r"/app/mdt/central-2$"))  # one MDT: straight to its list
    expect(page.get_by_role("heading", level=1)).to_have_text("Case conference: MDT central-2")
    cases = page.locator("article.case")
    expect(cases).to_have_count(1)
    frank = page.locator(f"#p-{FRANK}")
    expect(frank.get_by_role("heading", level=2)).to_contain_text("Frank Osei")
    # recognisable at a glance: age, sex, NHS number 3-3-4; the contents say how urgent and why
    expect(frank.get_by_role("heading", level=2)).to_contain_text(re.compile(r"\d+ y · male · born .* · NHS \d{3} \d{3} \d{4}"))
    toc = page.get_by_role("navigation", name="Patients to discuss")
    expect(toc.locator("li").first).to_contain_text("urgent")
    expect(toc.locator("li").first).to_contain_text("new escalation: Active foot problem")
    expect(frank.locator(".tag-new").first).to_have_text("new escalation")
    expect(frank.locator(".reasons")).to_contain_text("new escalation: Active foot problem - discuss at MDT")
    expect(frank.locator(".reasons")).to_contain_text("red flag")
    # summary across settings: conditions from the GP and community records, latest results, the care plan
    expect(frank.get_by_role("heading", name="Conditions")).to_be_visible()
    expect(frank.locator("section", has=page.get_by_role("heading", name="Conditions"))).to_contain_text("Community")
    results = frank.locator("section", has=page.get_by_role("heading", name="Latest key results"))
    expect(results.get_by_role("row", name=re.compile("^HbA1c"))).to_contain_text("66 mmol/mol")
    expect(frank.locator("section", has=page.get_by_role("heading", name="Current care plan"))).to_contain_text(
        "Type 2 diabetes annual care")
    expect(frank.get_by_role("table", name="Escalations and overdue urgent tasks")).to_contain_text("Refer to multidisciplinary foot care service")
    assert access_log(server, resource="patient-summary", username="mdt.other")[-1].patients == [FRANK]
    shot(page, "case-conference-central-2")

    # record the outcome
    frank.get_by_label("What the MDT decided").fill("Seen by podiatry today; offloading boot fitted")
    frank.get_by_label("Other notes on actions (optional)").fill("Podiatry review in 2 weeks")
    # a structured action: type, role, due date -> a task on the worklist
    meeting = page.locator("#meeting_date").input_value()
    due = (dt.date.fromisoformat(meeting) + dt.timedelta(days=7)).isoformat()
    frank.get_by_label("Action 1", exact=True).select_option("investigations")
    frank.get_by_label("Action 1: who").select_option("gp")
    frank.get_by_label("Action 1: due by").fill(due)
    frank.get_by_label("Action 1: priority").select_option("high")
    frank.get_by_label("Action 1: details").fill("HbA1c and renal function")
    shot(page, "case-conference-outcome-form")
    frank.get_by_role("button", name=re.compile("^Record outcome")).click()
    expect(page.get_by_role("status")).to_have_text(f"Outcome recorded for {FRANK}. 1 task added to the worklist.")
    frank = page.locator(f"#p-{FRANK}")
    expect(frank.locator(".recorded")).to_contain_text("Seen by podiatry today; offloading boot fitted")
    expect(frank.locator(".recorded")).to_contain_text("Recorded for this meeting by mdt.other")
    expect(frank.locator(".mdt-tasks li")).to_have_count(1)
    expect(frank.locator(".mdt-tasks li")).to_contain_text(
        re.compile("Arrange tests or investigations: HbA1c and renal function — gp, due", re.I))
    expect(page.locator("nav.toc .tag-done")).to_have_text("outcome recorded")
    shot(page, "case-conference-outcome")
    # the task is on the worklist, from the MDT, with its why
    task_id = frank.locator(".mdt-tasks li").first.get_attribute("id").removeprefix("mdt-task-")
    page.goto(f"/app/worklist?protocol=mdt-case-conference")
    row = page.locator(f"#task-{task_id}")
    expect(row).to_contain_text("Arrange tests or investigations: HbA1c and renal function")
    expect(row.locator(".responsible")).to_contain_text(re.compile(r"^\s*gp", re.I))
    row.locator("summary", has_text="Why").click()
    expect(row.locator(".why")).to_contain_text(
        f"Agreed at the central-2 MDT case conference on {dt.date.fromisoformat(meeting).day} "
        f"{dt.date.fromisoformat(meeting):%B %Y}: Seen by podiatry today; offloading boot fitted")
    shot(page, "worklist-mdt-action")
    page.goto("/app/mdt/central-2")
    # an action row without its role or due date: nothing is recorded, and the page says why
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post("/app/mdt/central-2/outcomes", form={"csrf_token": token, "nhs_number": FRANK,
                                                               "meeting_date": meeting, "outcome": "More",
                                                               "action_type": "home-visit", "action_role": "",
                                                               "action_due": ""})
    assert "needs who does it and a due date" in r.text()
    # an empty outcome is not recorded
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post("/app/mdt/central-2/outcomes", form={"csrf_token": token, "nhs_number": FRANK,
                                                               "meeting_date": "2026-01-05", "outcome": "   "})
    assert "was not recorded" in r.text()


def test_outcome_reassigns_and_closes_existing_tasks(pages):
    """Issue 16 item 6: at the meeting, an open task is reassigned to another role and another closed with a
    coded outcome and the reason; the closed view of the worklist shows who closed it, when and why."""
    page = pages.login("mdt.other")  # central-2
    page.goto("/app/mdt/central-2")
    frank = page.locator(f"#p-{FRANK}")
    rows = frank.locator("fieldset.mdt-task-changes tr.change-row")
    expect(rows.first).to_be_visible()
    move, close = rows.filter(has_text="Refer to multidisciplinary foot care"), rows.filter(has_text="Diabetic eye screening")
    move_id, close_id = move.get_attribute("data-task"), close.get_attribute("data-task")
    frank.get_by_label("What the MDT decided").fill("Matron to lead foot care; retinal screening not wanted")
    move.get_by_label(re.compile(": change$")).select_option("reassign")
    move.get_by_label(re.compile(": to role$")).select_option("community-matron")
    close.get_by_label(re.compile(": change$")).select_option("close")
    close.get_by_label(re.compile(": outcome$")).select_option("declined-by-patient")
    close.get_by_label(re.compile(": reason or note$")).fill("does not want it, capacity confirmed")
    shot(page, "case-conference-task-changes-form")
    frank.get_by_role("button", name=re.compile("^Record outcome")).click()
    expect(page.get_by_role("status")).to_have_text(f"Outcome recorded for {FRANK}. 1 task reassigned. 1 task closed.")
    frank = page.locator(f"#p-{FRANK}")
    expect(frank.locator(f"#mdt-change-{move_id}")).to_contain_text(re.compile("^Reassigned: .* to community-matron"))
    expect(frank.locator(f"#mdt-change-{close_id}")).to_contain_text("Closed: ")
    expect(frank.locator(f"#mdt-change-{close_id}")).to_contain_text(
        "Declined by the patient: does not want it, capacity confirmed (agreed at the central-2 MDT case conference on")
    expect(frank.locator(f"tr.change-row[data-task='{close_id}']")).to_have_count(0)  # closed: no longer offered
    shot(page, "case-conference-task-changes")
    # the worklist: the closed view says who closed it and why; the reassigned task is with its new role
    page.goto("/app/worklist?status=completed")
    row = page.locator(f"#task-{close_id}")
    expect(row.locator(".owner")).to_contain_text("by mdt.other")
    expect(row.locator(".closed-reason")).to_contain_text("Declined by the patient: does not want it, capacity confirmed")
    shot(page, "worklist-closed-by-mdt")
    page.goto("/app/worklist?role=community-matron")
    expect(page.locator(f"#task-{move_id} .responsible")).to_contain_text(re.compile("community matron", re.I))
    # a close without its outcome: nothing is recorded, and the page says why
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post("/app/mdt/central-2/outcomes", form={"csrf_token": token, "nhs_number": FRANK,
                                                               "meeting_date": "2026-01-05", "outcome": "More",
                                                               "change_task": move_id, "change_kind": "close"})
    assert "choose the outcome it is closed with" in r.text()


def test_admissions_from_hospital_records(pages):
    page = pages.login("mdt.member")  # central-1
    page.goto("/app/mdt/central-1")
    expect(page.locator("article.case")).to_have_count(2)
    george = page.locator(f"#p-{GEORGE}")
    admissions = george.locator("section", has=page.get_by_role("heading", name="Admissions"))
    expect(admissions).to_contain_text("Hospital (acute)")
    expect(admissions).to_contain_text("acute-pas")
    expect(george.locator("section", has=page.get_by_role("heading", name="Latest key results"))).to_contain_text("eGFR")
    amina = page.locator(f"#p-{AMINA}")
    expect(amina.locator("section", has=page.get_by_role("heading", name="Admissions"))).to_contain_text("No hospital admissions")
    expect(george.get_by_role("heading", name="Current medicines")).to_be_visible()
    shot(page, "case-conference-central-1")
    # at 1024 px (issue 16 item 6): the results table stays in its column, clear of the admissions beside or below it
    page.set_viewport_size({"width": 1024, "height": 900})
    results = george.locator("section", has=page.get_by_role("heading", name="Latest key results")).locator("table")
    table, adm = results.bounding_box(), admissions.bounding_box()
    apart = (table["x"] + table["width"] <= adm["x"] or adm["x"] + adm["width"] <= table["x"]
             or table["y"] + table["height"] <= adm["y"] or adm["y"] + adm["height"] <= table["y"])
    assert apart, (table, adm)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    shot(page, "case-conference-central-1-1024")


def test_other_mdts_and_other_roles_are_refused(pages, server):
    page = pages.login("mdt.member")
    response = page.goto("/app/mdt/central-2")
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("not a member of MDT central-2")
    assert access_log(server, resource="mdt", username="mdt.member", action="denied")
    # not even by posting an outcome directly
    page.goto("/app/mdt/central-1")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post("/app/mdt/central-2/outcomes", form={"csrf_token": token, "nhs_number": FRANK,
                                                               "meeting_date": "2026-01-05", "outcome": "x"})
    assert r.status == 403
    for username in ("practice.staff", "auditor"):
        other = pages.login(username)
        assert other.goto("/app/mdt/central-1").status == 403
        expect(other.get_by_role("heading", level=1)).to_have_text("Not allowed")
    # a clinical lead sees every MDT
    lead = pages.login("clinical.lead")
    lead.goto("/app/mdt")
    expect(lead.get_by_role("link", name="MDT central-1")).to_be_visible()
    lead.get_by_role("link", name="MDT central-2").click()
    expect(lead.get_by_role("heading", level=1)).to_have_text("Case conference: MDT central-2")
