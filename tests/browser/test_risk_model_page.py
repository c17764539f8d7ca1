"""The risk-model check page (issue 19, item 4): from the audit dashboard, the risk score's c-statistic beside
the published models, calibration by decile and admissions per tier, over the registry's own records."""
from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Pages
from tests.browser.support import CLOCK_AHEAD, ROOT, Clock, copy_database, shot, start_server


@pytest.fixture
def risk_pages(browser, seeded, tmp_path):
    """The seeded demo registry served with the risk-stratification protocol (and the shared eFI it uses)
    beside the diabetes protocol the other browser tests read."""
    db, protocols = seeded
    mine = tmp_path / "protocols"
    shutil.copytree(protocols, mine)
    shutil.copy(ROOT / "protocols" / "risk-stratification@1.1.0.yaml", mine)
    (mine / "shared").mkdir()
    shutil.copy(ROOT / "protocols" / "shared" / "efi@1.0.0.yaml", mine / "shared")
    srv = start_server(copy_database(db, tmp_path / "carepath.db"), mine, Clock(CLOCK_AHEAD), migrate=False)
    p = Pages(browser, srv)
    yield p
    p.close()
    srv.stop()


def test_the_page_says_when_there_is_no_risk_protocol(pages):
    page = pages.login("auditor")
    page.goto("/app/outcomes/risk-model")
    expect(page.get_by_role("alert")).to_contain_text("no protocol 'risk-stratification'")


def test_auditor_opens_the_risk_model_check(risk_pages):
    page = risk_pages.login("auditor")
    page.goto("/app/audit")
    page.get_by_role("link", name="Does the risk score find the people who are then admitted?").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Does the risk score find the people who are then admitted?")
    main = page.locator("main")
    expect(main).to_contain_text("risk-stratification@")
    captions = page.locator("table caption").all_inner_texts()
    assert [c.split(":")[0] for c in captions] == ["Adults in the protocol's population", "Aged 65 and over",
                                                   "Aged 75 and over", "Emergency admissions by tier (adults)"]
    expect(main).to_contain_text("Local risk score")
    expect(main).to_contain_text("Electronic Frailty Index")
    expect(main).to_contain_text("Hospital Frailty Risk Score")
    expect(page.get_by_role("heading", name="Read with care")).to_be_visible()
    expect(main).to_contain_text("People who left")
    # auditors: small-number suppression in the tier table
    cells = page.locator("table").last.locator("td.num").all_inner_texts()
    assert cells and not [c for c in cells if c.strip() in {"1", "2", "3", "4", "5", "6", "7"}], cells
    tiers = page.locator("table").last.locator("tbody tr td:first-child").all_inner_texts()
    assert tiers[-1] == "No tier" and any("Case management" in t for t in tiers)
    shot(page, "risk-model-auditor")
    # another date: the form keeps it
    page.get_by_label("Score as of").fill("2025-01-31")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_label("Score as of")).to_have_value("2025-01-31")
    expect(main).to_contain_text("31 Jan 2025")
    shot(page, "risk-model-auditor-2025-01-31")
