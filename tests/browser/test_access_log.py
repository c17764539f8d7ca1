"""The access log as a page (issue 16 item 10): admins see NHS numbers; auditors see pseudonyms only,
with NHS numbers masked in every row, and can follow one pseudonymised patient; clinical roles cannot
open it."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.support import AMINA, shot


def test_admin_sees_nhs_numbers_and_filters_by_patient(pages):
    page = pages.login("mdt.member")
    page.goto(f"/app/patients/{AMINA}")  # something to find in the log
    admin = pages.login("admin")
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Access log").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Access log")
    assert int(admin.locator("#log-total").inner_text()) > 0
    admin.get_by_label("Patient NHS number").fill(AMINA)
    admin.get_by_role("button", name="Show").click()
    expect(admin).to_have_url(re.compile(f"nhs_number={AMINA}"))
    rows = admin.locator("#access-log tbody tr")
    expect(rows.first.locator(".patients")).to_contain_text("943 476 5919")
    expect(admin.locator("#access-log")).to_contain_text("mdt.member")
    shot(admin, "access-log-admin")


def test_auditor_sees_pseudonyms_only(pages):
    viewer = pages.login("mdt.member")
    viewer.goto(f"/app/patients/{AMINA}")
    page = pages.login("auditor")
    page.goto("/app/access-log?username=mdt.member")
    text = page.locator("main").inner_text()
    assert AMINA not in text and "943 476 5919" not in text
    pseudonyms = page.locator("#access-log .patients a").all_inner_texts()
    assert pseudonyms and all(re.fullmatch(r"P-[0-9a-f]{12}", p) for p in pseudonyms)
    # follow one pseudonymised patient through the log
    page.locator("#access-log .patients a").first.click()
    expect(page).to_have_url(re.compile(r"pseudonym=P-[0-9a-f]{12}"))
    assert int(page.locator("#log-total").inner_text()) >= 1
    expect(page.get_by_label("Patient NHS number")).to_have_count(0)  # no NHS-number filter for auditors
    shot(page, "access-log-auditor")
    # an NHS-number filter typed into the address is refused, as the API refuses it
    r = page.goto(f"/app/access-log?nhs_number={AMINA}")
    assert r.status == 403
    expect(page.get_by_role("alert")).to_contain_text("pseudonym")


def test_clinical_roles_cannot_open_the_log(pages):
    page = pages.login("clinical.lead")
    assert page.goto("/app/access-log").status == 403
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Access log")).to_have_count(0)
