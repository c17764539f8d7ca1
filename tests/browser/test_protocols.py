"""The protocol browser: a protocol rendered for clinicians, its version history and the
differences between versions, and the impact preview of a draft (clinical leads only)."""
from __future__ import annotations

import re

from dateutil.relativedelta import relativedelta
from playwright.sync_api import expect

from tests.browser.support import FRANK, access_log, shot


def test_protocol_rendered_for_clinicians(pages):
    page = pages.login("auditor")  # every role may read protocols
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Protocols").click()
    page.get_by_role("link", name="Type 2 diabetes annual care").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Type 2 diabetes annual care 1.0.0")
    expect(page.locator(".tag-done").first).to_have_text("in force")
    # the register, activities with intervals and roles from the role agreement, rules with escalations, evidence
    # in clinical words from the IR, never the protocol's expressions or raw YAML (issue 16 item 8)
    expect(page.locator("#register")).to_contain_text("diabetes recorded")
    main = page.locator("main").inner_text()
    for syntax in ("latest(", "{'", "':", "==", "mm[Hg]", "{1.73_m2}", "foot_active_problem"):
        assert syntax not in main, syntax
    foot = page.locator("#activity-foot-check")
    expect(foot).to_contain_text("12 months")
    expect(foot).to_contain_text("respond within 15 working days")
    expect(page.locator("#activity-retinal-screening")).to_contain_text("NHS Diabetic Eye Screening Programme")
    rule = page.locator("#rule-active-foot-problem")
    expect(rule).to_contain_text("to the MDT case conference")
    expect(rule).to_contain_text("foot active problem in the last 4 weeks")
    expect(rule).to_contain_text("Community podiatry")
    expect(page.locator("#measures")).to_contain_text("DM020")
    expect(page.locator("#evidence")).to_contain_text("NICE NG28")
    expect(page.get_by_role("link", name="Impact preview of a draft")).to_have_count(0)  # not for auditors
    # version history: the draft and the version in force
    versions = page.locator("#version-table tbody tr")
    expect(versions).to_have_count(2)
    expect(versions.nth(0)).to_contain_text("1.1.0")
    expect(versions.nth(0)).to_contain_text("draft")
    expect(versions.nth(1)).to_contain_text("in force")
    shot(page, "protocol-t2dm")


def test_differences_between_versions(pages):
    page = pages.login("practice.staff")
    page.goto("/app/protocols/t2dm-annual-care")
    page.get_by_role("link", name="Compare with 1.0.0").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Type 2 diabetes annual care: changes from 1.0.0 to 1.1.0")
    structured = page.locator("#structured-diff")
    expect(structured.get_by_role("table", name="About the protocol")).to_contain_text("draft")
    changed = structured.locator("li.changed", has_text="HbA1c 53 mmol/mol or more")
    expect(changed.locator("del")).to_contain_text(["58 mmol/mol"])
    expect(changed.locator("ins")).to_contain_text(["53 mmol/mol"])
    # the conditions that changed, in the words of the protocol page (issue 16 item 8: not expressions or JSON)
    words = page.locator("#words-diff")
    row = words.locator("tr", has=page.get_by_role("rowheader", name="Rule ‘HbA1c 53 mmol/mol or more’: when"))
    expect(row.locator("del")).to_contain_text("latest HbA1c in the last 12 months value ≥ 58 mmol/mol")
    expect(row.locator("ins")).to_contain_text("latest HbA1c in the last 12 months value ≥ 53 mmol/mol")
    text = words.inner_text() + structured.inner_text()
    assert "_" not in words.inner_text() and '{"' not in text and '["' not in text
    expect(page.locator("tr.diff-add").filter(has_text="last_hba1c.value >= 53")).to_have_count(1)
    expect(page.locator("tr.diff-del").filter(has_text="last_hba1c.value >= 58")).to_have_count(1)
    shot(page, "protocol-diff")
    assert page.goto("/app/protocols/t2dm-annual-care/diff?from=1.0.0&to=9.9.9").status == 404


def test_impact_preview_of_a_draft(pages, server, monkeypatch, seed_time):
    """Issue 16 item 5: the preview starts at once, shows its progress (a <progress> bar, the page
    reloading itself with a meta refresh under the strict CSP, no JavaScript), then the result."""
    import threading

    import engine.app.impact_runs as ir
    monkeypatch.setattr(ir, "PROGRESS_EVERY", 1)
    held, release = threading.Event(), threading.Event()

    def hold(run_id, n):  # the run waits after 3 of the 6 patients until the progress page has been seen
        if n == 3:
            held.set()
            release.wait(30)
    ir.runner(server.state).after_patient = hold
    page = pages.login("clinical.lead")
    page.goto("/app/protocols/t2dm-annual-care")
    page.get_by_role("link", name="Impact preview of a draft").click()
    expect(page.get_by_label("Draft 1.1.0 on file (effective 1 Apr 2026)")).to_be_checked()
    try:
        page.get_by_role("button", name="Start impact preview").click()
        expect(page).to_have_url(re.compile(r"/app/protocols/t2dm-annual-care/impact/runs/\d+$"))
        assert held.wait(30)
        page.reload()
        progress = page.locator("progress#impact-progress")
        expect(progress).to_have_attribute("value", "3")
        expect(progress).to_have_attribute("max", "6")
        expect(page.get_by_role("status")).to_contain_text("3 of 6 patients (50%)")
        assert page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "2"
        csp = page.request.get(page.url).headers["content-security-policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp  # no script needed or allowed; meta refresh is not script
        expect(page.locator("#impact-result")).to_have_count(0)
        shot(page, "protocol-impact-progress")
    finally:
        ir.runner(server.state).after_patient = None
        release.set()
    # no click: the page refreshes itself until the result is there
    result = page.locator("#impact-result")
    expect(result).to_be_visible(timeout=15000)
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)  # finished: no more reloading
    expect(page.get_by_role("heading", level=1)).to_contain_text("t2dm-annual-care 1.0.0 → 1.1.0")
    expect(result.get_by_role("heading", level=2)).to_contain_text("6 patients evaluated")
    # the tighter blood pressure target under 80: Frank (138/82) gains a GP review and an amber (clinical) flag
    expect(result.locator(".card").nth(1)).to_have_text(re.compile(r"^\s*\+1 / −0\s+tasks added / removed"))
    expect(result.locator("#clinical-flags")).to_contain_text("clinical flags added / removed")
    expect(result.locator("#compliance-flags")).to_contain_text("compliance flags (audit / QOF gaps)")
    expect(result.get_by_role("table", name="Tasks by role").get_by_role("row", name=re.compile("^gp"))).to_contain_text("1")
    expect(result.get_by_role("table", name="Tasks by provider")).to_be_visible()
    expect(result.get_by_role("table", name="By practice")).to_contain_text("A81003")
    example = result.get_by_role("row", name=re.compile(f"{FRANK[:3]} {FRANK[3:6]} {FRANK[6:]}")).filter(
        has_text="task added: Review blood pressure treatment")  # NHS number shown 3-3-4
    expect(example).to_have_count(1)
    taken = seed_time.date() - relativedelta(months=6)  # the demo's annual checks for Frank, 6 months before seeding
    expect(example).to_contain_text(f"last systolic value 138 mmHg on {taken.isoformat()} (at least 130 mmHg)")  # and why
    shot(page, "protocol-impact")
    shown = access_log(server, resource="protocol-impact", username="clinical.lead")
    assert shown and FRANK in shown[-1].patients
    # pasted text with a mistake: the problems with line and column, nothing evaluated
    page.get_by_role("link", name="Preview another draft").click()
    page.get_by_label("The text below (paste or edit a draft; give it a new version number)").check()
    page.get_by_label("Protocol text (YAML)").fill(
        page.get_by_label("Protocol text (YAML)").input_value().replace("version: 1.1.0", "version: 1.2.0")
        .replace("last_hba1c.value >= 53", "last_hbac1.value >= 53"))
    page.get_by_role("button", name="Start impact preview").click()
    problems = page.locator("#impact-problems")
    expect(problems).to_contain_text(re.compile(r"<submitted>:\d+:\d+: error: .*last_hbac1"))
    expect(problems).to_contain_text("did you mean 'last_hba1c'")
    shot(page, "protocol-impact-problems")


def test_an_interrupted_impact_run_says_start_again(pages, server):
    from sqlmodel import Session

    from engine.app.impact_runs import interrupt_unfinished
    from engine.registry.access import ImpactRunRow
    with Session(server.state.engines.write) as s:
        row = ImpactRunRow(protocol="t2dm-annual-care", from_version="1.0.0", to_version="1.1.0", content_hash="x",
                           source="file:1.1.0", as_of=server.clock().date(), status="running", total=6, done=2,
                           created_by="clinical.lead")
        s.add(row)
        s.commit()
        run_id = row.id
    interrupt_unfinished(server.state.engines.write)  # what the service does when it starts again
    page = pages.login("clinical.lead")
    page.goto(f"/app/protocols/t2dm-annual-care/impact/runs/{run_id}")
    expect(page.get_by_role("alert")).to_contain_text("Interrupted — start again")
    expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)
    page.get_by_role("link", name="Start the preview again").click()
    expect(page.get_by_role("button", name="Start impact preview")).to_be_visible()
    shot(page, "protocol-impact-interrupted")


def test_impact_preview_is_for_clinical_leads(pages):
    for username in ("auditor", "mdt.member"):
        page = pages.login(username)
        assert page.goto("/app/protocols/t2dm-annual-care/impact").status == 403
        expect(page.get_by_role("alert")).to_contain_text("protocol:impact")


def test_publishing_takes_two_clinical_leads(pages, server):
    """Issue 16 item 9: the author submits a version from the impact page; it waits, unpublished; the author
    cannot approve it; a second clinical lead approves it, which publishes it, both names in the history."""
    folder = server.protocols_dir
    lock = folder / "published.lock"
    lock_before = lock.read_text(encoding="utf-8") if lock.exists() else None
    text = (folder / "t2dm-annual-care@1.1.0.yaml").read_text(encoding="utf-8")
    # 1.1.0 keeps made-up hypoglycaemia-medicine codes (the synthetic code system): publishable only as demo_only
    text = text.replace("version: 1.1.0", "version: 1.2.0\ndemo_only: true", 1).replace("status: draft", "status: active", 1)
    published = folder / "t2dm-annual-care@1.2.0.yaml"
    try:
        author = pages.login("clinical.lead")
        author.goto("/app/protocols/t2dm-annual-care/impact")
        author.get_by_label("Protocol text (YAML)").fill(text)
        author.get_by_label("Note for the approver (what changed and why)").fill("HbA1c review from 53 mmol/mol")
        author.get_by_role("button", name="Submit the text for approval").click()
        expect(author.get_by_role("status")).to_contain_text(
            "t2dm-annual-care 1.2.0 submitted for approval: a second clinical lead must approve it")
        assert not published.exists()  # nothing published yet
        row = author.locator("#awaiting-table tr", has_text="1.2.0")
        expect(row).to_contain_text("clinical.lead")
        expect(row.locator(".cannot-approve")).to_contain_text("clinical.lead wrote this version and cannot approve it")
        expect(row.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)
        shot(author, "protocols-awaiting-approval-author")
        approver = pages.login("second.lead")
        approver.goto("/app/protocols")
        row = approver.locator("#awaiting-table tr", has_text="1.2.0")
        expect(row).to_contain_text("HbA1c review from 53 mmol/mol")
        shot(approver, "protocols-awaiting-approval-second-lead")
        row.get_by_role("button", name="Approve and publish t2dm-annual-care 1.2.0").click()
        expect(approver.get_by_role("status")).to_have_text(
            "Published t2dm-annual-care 1.2.0: written by clinical.lead, approved by you.")
        assert published.exists()
        expect(approver.locator("body")).to_contain_text("clinical.lead, approved by second.lead")
        shot(approver, "protocol-published-two-people")
        log = access_log(server, resource="protocol", username="second.lead")[-1]
        assert log.detail["author"] == "clinical.lead" and log.detail["approved_by"] == "second.lead"
    finally:  # the protocol folder is shared by the browser tests: leave it as it was
        published.unlink(missing_ok=True)
        if lock_before is None:
            lock.unlink(missing_ok=True)
        else:
            lock.write_text(lock_before, encoding="utf-8")
        server.state.protocols.reload()


def test_checking_the_text_shows_problems_at_their_numbered_lines(pages, server):
    """Issue 16 item 9: errors cited as line:column are shown beside the text with line numbers."""
    text = (server.protocols_dir / "t2dm-annual-care@1.1.0.yaml").read_text(encoding="utf-8")
    bad = text.replace("version: 1.1.0", "version: 1.3.0", 1).replace("level: red", "level: crimson", 1)
    line = next(n for n, s in enumerate(bad.split("\n"), 1) if "level: crimson" in s)
    page = pages.login("clinical.lead")
    page.goto("/app/protocols/t2dm-annual-care/impact")
    page.get_by_label("Protocol text (YAML)").fill(bad)
    page.get_by_role("button", name="Check the text").click()
    result = page.locator("#check-result")
    expect(result.locator("h2")).to_have_text(re.compile(r"^The text has 1 error( and \d+ warnings?)?$"))  # not "1 error(s)"
    expect(result.get_by_role("link", name=re.compile(rf"^line {line}, column \d+$"))).to_be_visible()
    marked = page.locator(f"ol.code-listing li#line-{line}")
    expect(marked).to_have_class(re.compile("has-problem"))
    expect(marked).to_contain_text("level: crimson")
    expect(marked.locator(".line-problem")).to_contain_text(f"line {line}: error:")
    assert page.locator("ol.code-listing li").count() == len(bad.split("\n"))
    assert page.get_by_label("Protocol text (YAML)").input_value() == bad  # the text is kept to correct
    result.get_by_role("link", name=re.compile(rf"^line {line},")).click()
    expect(page).to_have_url(re.compile(rf"#line-{line}$"))
    shot(page, "protocol-check-line-numbers")
    # issue 16 item 9: the threshold changed (58 -> 53) but the rule's title still says 58: the check says so, at the line
    draft = text.replace("version: 1.1.0", "version: 1.3.0", 1).replace("title: HbA1c 53 mmol/mol or more", "title: HbA1c 58 mmol/mol or more", 1)
    page.get_by_label("Protocol text (YAML)").fill(draft)
    page.get_by_role("button", name="Check the text").click()
    warned = page.locator("ol.code-listing li.has-warning .line-problem",
                          has_text="its title says 58 mmol/mol but its condition uses 53 mmol/mol")
    expect(warned).to_have_count(1)
    warned.scroll_into_view_if_needed()
    shot(page, "protocol-check-quoted-number")
