"""The patient's care plan for clinicians (activities, status, due dates, who is responsible,
why-lines with the evidence facts) and the plain-language, print-friendly version for the patient."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.support import AMINA, SHOTS, access_log, shot


def test_care_plan_for_a_clinician_in_scope(pages, server):
    page = pages.login("practice.staff")  # A81001, Amina's practice
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Patients").click()
    expect(page.get_by_role("table")).to_contain_text("Amina Begum")
    expect(page.get_by_role("table")).not_to_contain_text("George Hill")  # another practice
    page.get_by_label("NHS number").fill("943 476 5919")
    page.get_by_role("button", name="Open care plan").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Care plan: Amina Begum")
    expect(page.locator(".patient-banner")).to_contain_text("NHS number 943 476 5919")  # read 3-3-4, as on NHS letters
    plan = page.get_by_role("table", name="Care processes")
    expect(plan.locator("tbody tr")).to_have_count(9)
    hba1c = plan.locator("tr[data-activity=hba1c]")
    expect(hba1c.locator("td").nth(0)).to_have_text("Done")
    bp = plan.locator("tr[data-activity=blood-pressure]")
    expect(bp.locator("td").nth(0)).to_have_text("Overdue")
    expect(bp).to_contain_text("practice nurse")  # responsible role from the role agreement
    expect(bp).to_contain_text("respond in 10 working days")
    # why, with the evidence fact it rests on
    bp.get_by_text("Why").click()
    expect(bp.locator("details.why")).to_contain_text("Blood pressure check overdue since")
    expect(bp.locator(".evidence")).to_contain_text("142 mmHg")
    hba1c.get_by_text("Why").click()
    expect(hba1c.locator(".evidence")).to_contain_text("78 mmol/mol")
    expect(page.locator(".flags")).to_contain_text("HbA1c above 75 mmol/mol")
    expect(page.get_by_role("heading", name=re.compile(r"^Open tasks \(\d+\)"))).to_be_visible()
    expect(page.get_by_role("heading", name="Summary across care settings")).to_be_visible()
    shot(page, "care-plan-clinician")
    assert access_log(server, resource="care-plan", username="practice.staff")[-1].patients == [AMINA]


def test_care_plan_refused_outside_scope_or_role(pages, server):
    page = pages.login("practice.other")  # A81003
    assert page.goto(f"/app/patients/{AMINA}").status == 404  # as for an NHS number not registered
    expect(page.get_by_role("alert")).to_contain_text("no patient with that NHS number in your scope")
    assert access_log(server, resource="care-plan", username="practice.other", action="denied")
    assert page.goto(f"/app/patients/{AMINA}/plan").status == 404
    auditor = pages.login("auditor")
    assert auditor.goto(f"/app/patients/{AMINA}").status == 403
    assert auditor.goto("/app/patients").status == 403
    assert page.goto("/app/patients/0000000000").status == 404


def test_plain_language_plan_prints_cleanly(pages):
    page = pages.login("mdt.member")
    page.goto(f"/app/patients/{AMINA}")
    page.get_by_role("link", name="Patient version (plain language, printable)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your care plan")
    article = page.locator("article.plain-plan")
    expect(article).to_contain_text("For Amina Begum")
    expect(article).to_contain_text("A blood pressure check.")
    expect(article).to_contain_text("Please contact your GP practice to arrange it.")
    expect(article).to_contain_text("Your goals")
    # the practice by name and phone number (the practice table), never its ODS code
    expect(article.locator(".contact-practice")).to_contain_text("Contact your GP practice, The Densham Surgery, on 01642 672351.")
    text = article.inner_text()
    assert "A81001" not in text
    assert not re.search(r"\b\d{6,}\b", text.replace(AMINA, "").replace("01642 672351", "")), "no codes on the patient's plan"
    for jargon in ("protocol", "eGFR", "ACR", "rule:", "activity:", "SNOMED", "practice-nurse"):
        assert jargon not in text
    shot(page, "patient-plan-screen")
    page.emulate_media(media="print")
    expect(page.locator("header.site-header")).to_be_hidden()
    expect(page.locator(".back-link")).to_be_hidden()
    expect(article).to_be_visible()
    shot(page, "patient-plan-print")
    page.pdf(path=str(SHOTS / "patient-plan.pdf"), format="A4")


def test_find_a_patient_by_name_and_date_of_birth(pages):
    """Issue 16 item 3: search was by NHS number only. A name (or the start of one, any case) and/or a date
    of birth finds a patient; one match opens the care plan; several are listed; scope still applies."""
    page = pages.login("clinical.lead")
    page.goto("/app/patients")
    page.get_by_label("Name (or its start)").fill("amina beg")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Care plan: Amina Begum")
    page.goto("/app/patients")
    page.get_by_label("Date of birth").fill("1958-03-02")
    page.get_by_role("button", name="Find").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Care plan: Amina Begum")
    page.goto("/app/patients?name=zzz-nobody")
    expect(page.get_by_role("table")).to_contain_text("No patients.")
    shot(page, "patients-search-none")
    # the practice filter is a list of the practices by name (not a box for an ODS code)
    page.goto("/app/patients")
    expect(page.locator("#practice option[value=A81002]")).to_have_text(re.compile(r"^Queens Park Medical Centre \(A81002\) \(\d+\)$"))
    page.get_by_label("Practice").select_option("A81002")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_label("Practice")).to_have_value("A81002")
    expect(page.get_by_role("table")).to_contain_text("Queens Park Medical Centre (A81002)")
    expect(page.get_by_role("table")).not_to_contain_text("Begum")
    shot(page, "patients-practice-filter")
    # outside the user's scope nothing is found, as if absent
    other = pages.login("mdt.other")  # central-2: Amina is in central-1
    other.goto("/app/patients?name=amina")
    expect(other.get_by_role("table")).to_contain_text("No patients.")
