"""The MDT worklist in a browser: who may open it, filters and their counts, sort, pagination,
one-click accept / complete / decline-with-reason (the list and the care plan change), CSV export,
SLA clocks."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re

from playwright.sync_api import expect

from tests.browser.support import AMINA, FRANK, access_log, navigate_by, shot


def _total(page) -> int:
    return int(page.locator("#task-total").inner_text())


def _rows(page):
    return page.locator("table.worklist tr.task-row")


def _option_count(page, select: str, value: str) -> int:
    text = page.locator(f"{select} option[value='{value}']").inner_text()
    return int(re.search(r"\((\d+)\)\s*$", text).group(1))


def test_worklist_for_clinical_roles_only(pages, server):
    page = pages.login("mdt.member")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Worklist")
    assert _total(page) > 0
    # an MDT member sees only their MDT's patients
    banners = page.locator("table.worklist tr.patient-row .banner-facts").all_inner_texts()
    assert banners and all("central-1" in m for m in banners)
    # overdue tasks show their SLA clock
    expect(page.locator("tr.row-late .clock").first).to_contain_text("Overdue by")
    expect(page.locator("meter").first).to_be_visible()
    shot(page, "worklist-mdt-member")
    assert access_log(server, resource="worklist", username="mdt.member")
    for username in ("auditor", "admin"):
        other = pages.login(username)
        response = other.goto("/app/worklist")
        assert response.status == 403
        expect(other.get_by_role("heading", level=1)).to_have_text("Not allowed")
        expect(other.get_by_role("alert")).to_contain_text("cannot use this page")
    shot(other, "worklist-refused-admin")
    assert access_log(server, resource="worklist:read", username="auditor", action="denied")


def test_filters_counts_sort_and_pages(pages):
    page = pages.login("clinical.lead")
    page.goto("/app/worklist")
    everything = _total(page)
    # the count beside each role is what choosing it gives
    gp = _option_count(page, "#f-role", "gp")
    assert 0 < gp < everything
    page.get_by_label("Role").select_option("gp")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    expect(page).to_have_url(re.compile(r"role=gp"))
    assert _total(page) == gp == _rows(page).count()
    assert all(t.split("\n")[0] == "gp" for t in page.locator("table.worklist td.responsible").all_inner_texts())
    # combine with a practice; the practice counts already respect the role filter
    a81001 = _option_count(page, "#f-practice", "A81001")
    page.get_by_label("Practice").select_option("A81001")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    assert _total(page) == a81001 and all("A81001" in t for t in
                                          page.locator("table.worklist tr.patient-row .banner-facts").all_inner_texts())
    shot(page, "worklist-filtered")
    navigate_by(page, page.get_by_role("link", name="Clear"))
    assert _total(page) == everything

    # overdue: the two counts add up, and the overdue list has only late tasks
    overdue_n = int(re.search(r"\((\d+)\)", page.locator("label[for=overdue-yes]").inner_text()).group(1))
    not_overdue_n = int(re.search(r"\((\d+)\)", page.locator("label[for=overdue-no]").inner_text()).group(1))
    assert overdue_n > 0 and overdue_n + not_overdue_n == everything
    page.locator("#overdue-yes").check()
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    assert _total(page) == overdue_n
    assert page.locator(".clock").all_inner_texts() and all(t.startswith("Overdue by") for t in page.locator(".clock").all_inner_texts())

    # protocol, status and risk tier (no risk-stratification protocol yet: everyone is "not stratified")
    page.goto("/app/worklist")
    assert _option_count(page, "#f-protocol", "t2dm-annual-care") == everything
    assert _option_count(page, "#f-risk", "none") == everything
    page.get_by_label("Risk tier").select_option("3")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    expect(page.locator(".empty")).to_have_text("No tasks match these filters.")
    page.goto("/app/worklist?status=completed")
    assert _total(page) == int(re.search(r"\((\d+)\)", page.locator("label[for=status-completed]").inner_text()).group(1))

    # sort by due date, soonest first
    page.goto("/app/worklist")
    page.get_by_label("Sort by").select_option("due")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    dues = [dt.datetime.fromisoformat(x.rstrip("Z")) for x in page.locator("td .sla time").evaluate_all("els => els.map(e => e.getAttribute('datetime'))")]
    # grouped by patient, groups in the order of each patient's soonest task, tasks in order within a group
    groups = page.locator("tbody.patient-group").evaluate_all(
        "gs => gs.map(g => Array.from(g.querySelectorAll('.sla time')).map(t => t.getAttribute('datetime')))")
    firsts = [dt.datetime.fromisoformat(g[0].rstrip("Z")) for g in groups]
    assert firsts == sorted(firsts) and all(g == sorted(g) for g in groups)
    assert len(dues) == min(everything, 50)
    # priority order (the default): urgent before high before routine
    page.goto("/app/worklist")
    order = {"urgent": 0, "high": 1, "routine": 2, "low": 3}
    prios = [order[p.strip().lower()] for p in page.locator("tbody.patient-group").first.locator(".priority").all_inner_texts()]
    assert prios == sorted(prios)
    leads = [order[g.locator(".priority").first.inner_text().strip().lower()] for g in page.locator("tbody.patient-group").all()]
    assert leads == sorted(leads)  # the patient with the most urgent task first

    # pages of 5
    page.get_by_label("Tasks per page").select_option("10")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    assert _rows(page).count() == 10
    first_page = page.locator("table.worklist tr.task-row").evaluate_all("rs => rs.map(r => r.id)")
    navigate_by(page, page.get_by_role("navigation", name="Pagination").get_by_role("link", name="Next"))
    expect(page).to_have_url(re.compile(r"page=2"))
    second_page = page.locator("table.worklist tr.task-row").evaluate_all("rs => rs.map(r => r.id)")
    assert second_page and not set(first_page) & set(second_page)
    expect(page.locator(".pagination [aria-current=page]")).to_have_text("Page 2")


def test_complete_a_task_and_see_the_care_plan_change(pages):
    """The README's walk-through: an MDT member completes a task; the worklist and care plan show it."""
    page = pages.login("mdt.member")
    page.goto(f"/app/worklist?sort=due")
    before = _total(page)
    row = page.locator(f"#patient-{AMINA} tr.task-row").filter(has_text="Smoking status recorded")
    expect(row).to_have_count(1)
    task_id = row.get_attribute("data-task")
    shot(page, "walkthrough-1-worklist")
    row.locator("summary", has_text="Complete").click()
    row.get_by_label("Outcome").select_option("done")
    row.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_have_text(re.compile(r"^Smoking status recorded.* \(Amina Begum\): completed by you — Done\.$"))
    expect(page).to_have_url(re.compile(rf"/app/worklist\?sort=due#patient-{AMINA}$"))  # back to the same view and place
    assert _total(page) == before - 1
    expect(page.locator(f"#task-{task_id}")).to_have_count(0)
    shot(page, "walkthrough-2-completed")
    # the care plan: the activity's task shows completed, with who and when, and it is in the history
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
    page.get_by_role("link", name="Amina Begum").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Care plan: Amina Begum")
    item = page.locator("tr[data-activity=smoking]")
    expect(item.locator(".task-cell .status")).to_have_text("completed")
    expect(item.locator(".task-cell")).to_contain_text("completed by mdt.member")
    expect(page.locator(f"#closed-{task_id}")).to_contain_text("Smoking status recorded")
    expect(page.locator(f"#task-{task_id}")).to_have_count(0)  # no longer among the open tasks
    shot(page, "walkthrough-3-care-plan")
    # the completed task is listed under status "completed" and can be reopened
    page.goto("/app/worklist?status=completed")
    expect(page.locator(f"#task-{task_id}")).to_be_visible()
    expect(page.locator(f"#task-{task_id} .owner")).to_contain_text("by mdt.member")  # who closed it, and how
    expect(page.locator(f"#task-{task_id} .closed-reason")).to_have_text("Done")
    page.locator(f"#task-{task_id}").get_by_role("button", name=re.compile("^Reopen")).click()
    expect(page.get_by_role("status")).to_contain_text("reopened")


def test_accept_then_decline_with_a_reason(pages):
    page = pages.login("mdt.member")
    page.goto("/app/worklist?status=open")
    row = page.locator("table.worklist tr.task-row").filter(has_text="BMI recorded").first
    task_id = row.get_attribute("data-task")
    patient = page.locator(f"#patient-{row.get_attribute('data-patient')} tr.patient-row a").inner_text()
    row.get_by_role("button", name=re.compile("^Accept")).click()
    expect(page.get_by_role("status")).to_contain_text("accepted")
    expect(page.locator(f"#task-{task_id}")).to_have_count(0)  # the view shows open tasks only
    page.goto("/app/worklist?status=accepted")
    row = page.locator(f"#task-{task_id}")
    expect(row.locator(".status")).to_have_text("accepted")
    expect(row.locator(".owner")).to_contain_text("by mdt.member")  # who accepted it
    # "my tasks": the ones I accepted
    page.goto("/app/worklist?mine=yes")
    expect(page.locator(f"#task-{task_id}")).to_be_visible()
    shot(page, "worklist-my-tasks")
    assert _total(page) == _rows(page).count() >= 1
    page.goto("/app/worklist?status=accepted")
    row = page.locator(f"#task-{task_id}")
    # decline: a coded reason; "other" needs words (the server refuses it without)
    row.locator("summary", has_text="Decline").click()
    row.get_by_label("Reason", exact=True).select_option("other")
    row.get_by_role("button", name="Decline task").click()
    expect(page.get_by_role("status")).to_contain_text("please give a reason")
    expect(page.locator(f"#task-{task_id}")).to_be_visible()  # still there
    row = page.locator(f"#task-{task_id}")
    row.locator("summary", has_text="Decline").click()
    row.get_by_label("Reason", exact=True).select_option("other")
    reason = row.get_by_label('Details (required for "Other")')
    reason.fill("Weight recorded at the hospital clinic last week")
    shot(page, "worklist-decline")
    row.get_by_role("button", name="Decline task").click()
    expect(page.get_by_role("status")).to_contain_text("declined")
    expect(page.locator(f"#task-{task_id}")).to_have_count(0)
    # the reason is on the patient's care plan
    page.goto("/app/worklist?status=declined")
    expect(page.locator(f"#task-{task_id} .closed-reason")).to_have_text("Weight recorded at the hospital clinic last week")
    page.locator(f"#patient-{page.locator(f'#task-{task_id}').get_attribute('data-patient')} tr.patient-row").get_by_role(
        "link", name=patient).click()
    expect(page.locator(f"#closed-{task_id}")).to_contain_text("Weight recorded at the hospital clinic last week")
    # a decline with an empty reason sent anyway is refused by the server
    page.goto("/app/worklist?status=open")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    other = page.locator("table.worklist tr.task-row").first.get_attribute("data-task")
    r = page.request.post(f"/app/tasks/{other}/decline", form={"csrf_token": token, "reason": "  ", "next": "/app/worklist"})
    assert r.ok and "please give a reason" in r.text()
    page.goto("/app/worklist?status=open")
    expect(page.locator(f"#task-{other}")).to_be_visible()


def test_csv_export_has_the_filtered_list(pages):
    page = pages.login("clinical.lead")
    page.goto("/app/worklist?role=practice-nurse&sort=due")
    total = _total(page)
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    download = info.value
    assert download.suggested_filename == "worklist.csv"
    rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    assert len(rows) == total > 10  # every page, not just the first
    assert {r["role"] for r in rows} == {"practice-nurse"}
    assert [r["due"] for r in rows] == sorted(r["due"] for r in rows)
    assert AMINA in {r["nhs_number"] for r in rows}


def test_risk_tier_filter(pages, server):
    """Tiers come from any stratification protocol's stored result (`tier.level`, kept as `tier_level` by the
    store path): give Frank tier 3."""
    from sqlmodel import Session, select

    from engine.registry.outputs import PatientEvaluationRow
    from engine.registry.tables import PatientRow
    with Session(server.state.engines.write) as s:
        frank = s.exec(select(PatientRow).where(PatientRow.nhs_number == FRANK)).one()
        s.add(PatientEvaluationRow(patient_id=frank.id, protocol="risk-test", version="1.0.0", tier_level=3,
                                   reference_date=server.state.now().date(), on_register=True,
                                   result={"protocol": "risk-test", "version": "1.0.0", "title": "Risk (test)",
                                           "on_register": True, "register_why": "test",
                                           "tier": {"level": 3, "name": "case management"}}))
        s.commit()
    page = pages.login("clinical.lead")
    page.goto("/app/worklist")
    everything = _total(page)
    tier3 = _option_count(page, "#f-risk", "3")
    assert tier3 >= 2 and _option_count(page, "#f-risk", "none") == everything - tier3
    page.get_by_label("Risk tier").select_option("3")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    assert _total(page) == tier3
    assert {t for t in page.locator("table.worklist tr.patient-row a").all_inner_texts()} == {"Frank Osei"}
    expect(page.locator("table.worklist .tag", has_text="risk tier 3").first).to_be_visible()
    page.get_by_label("Risk tier").select_option("none")
    navigate_by(page, page.get_by_role("button", name="Apply filters"))
    assert _total(page) == everything - tier3
    assert "Frank Osei" not in page.locator("table.worklist").inner_text()


def test_bulk_accept_and_place_kept(pages):
    """Issue 16 item 2: accept several tasks at once; after an action the page returns to the patient."""
    page = pages.login("mdt.member")
    page.goto("/app/worklist?status=open&sort=due")
    rows = _rows(page)
    ids = [rows.nth(i).get_attribute("data-task") for i in range(3)]
    for i in ids:
        page.locator(f"#tick-{i}").check()
    shot(page, "worklist-grouped")
    page.get_by_role("button", name="Accept ticked tasks").click()
    expect(page.get_by_role("status")).to_have_text("Accepted 3 tasks.")
    page.goto("/app/worklist?status=accepted")
    for i in ids:
        expect(page.locator(f"#task-{i} .owner")).to_contain_text("by mdt.member")
    shot(page, "worklist-bulk-accepted")  # who accepted each
    # nothing ticked: nothing done, and it says so
    page.goto("/app/worklist?status=open")
    page.get_by_role("button", name="Accept ticked tasks").click()
    expect(page.get_by_role("status")).to_have_text("Tick the tasks to accept first.")


def test_completion_only_by_the_tasks_role_with_a_coded_outcome(pages):
    """Practice staff working as practice nurse / healthcare assistant: a GP's task says why they cannot
    complete it; their own needs an outcome, and 'Not done' needs the reason in words."""
    page = pages.login("practice.staff")
    page.goto(f"/app/worklist?role=gp")
    gp_row = page.locator(f"#patient-{AMINA} tr.task-row").first
    expect(gp_row.locator(".cannot-complete")).to_contain_text(
        "Cannot complete or decline: only a gp, a care coordinator or a clinical lead can complete or decline this task")
    expect(gp_row.locator(".cannot-complete")).to_contain_text("ask for it to be reassigned")
    expect(gp_row.locator("summary", has_text="Complete")).to_have_count(0)
    expect(gp_row.locator("summary", has_text="Decline")).to_have_count(0)  # declining closes it too: same rule
    expect(gp_row.get_by_role("button", name=re.compile("^Accept"))).to_be_visible()  # they may still take it on
    shot(page, "worklist-cannot-complete")
    # the server refuses it too (a form posted anyway)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    gp_id = gp_row.get_attribute("data-task")
    r = page.request.post(f"/app/tasks/{gp_id}/complete", form={"csrf_token": token, "code": "done",
                                                                 "next": "/app/worklist"}, max_redirects=0)
    assert r.status == 303
    page.goto("/app/worklist?role=gp")
    expect(page.get_by_role("status")).to_contain_text("only a gp")
    expect(page.locator(f"#task-{gp_id}")).to_be_visible()
    r = page.request.post(f"/app/tasks/{gp_id}/decline", form={"csrf_token": token, "code": "not-our-team",
                                                                "next": "/app/worklist"}, max_redirects=0)
    assert r.status == 303
    page.goto("/app/worklist?role=gp")
    expect(page.get_by_role("status")).to_contain_text("can decline this task")
    expect(page.locator(f"#task-{gp_id}")).to_be_visible()
    # their own task: 'Not done' without words is refused, with words it is recorded, who and when shown
    page.goto("/app/worklist")
    row = page.locator(f"#patient-{AMINA} tr.task-row").filter(has_text="Smoking status recorded")
    task_id = row.get_attribute("data-task")
    row.locator("summary", has_text="Complete").click()
    row.get_by_label("Outcome").select_option("not-done")
    row.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_contain_text("needs the reason in words")
    row = page.locator(f"#task-{task_id}")
    row.locator("summary", has_text="Complete").click()
    row.get_by_label("Outcome").select_option("not-done")
    row.get_by_label('Note (required for "Not done")').fill("Patient did not attend")
    row.get_by_role("button", name="Complete task").click()
    expect(page.get_by_role("status")).to_contain_text("completed by you — Not done: Patient did not attend.")
    page.goto("/app/worklist?status=completed")
    expect(page.locator(f"#task-{task_id} .owner")).to_contain_text("by practice.staff")
    expect(page.locator(f"#task-{task_id} .closed-reason")).to_have_text("Not done: Patient did not attend")
    shot(page, "worklist-closed-with-outcome")
