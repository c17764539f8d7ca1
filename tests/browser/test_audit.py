"""The audit dashboard: per measure, practices and MDTs against the area rate (ranked bars with
funnel limits, funnel plot), the trend over reporting dates, drill-down where the role allows
(pseudonyms for auditors)."""
from __future__ import annotations

import datetime as dt
import re

from playwright.sync_api import expect

from tests.browser.support import AMINA, CLOCK_AHEAD, access_log, navigate_by, reporting_dates, shot


def test_auditor_sees_the_charts(pages):
    page = pages.login("auditor")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit dashboard")
    expect(page.get_by_label("Measure", exact=True)).to_have_value("DM020")
    ranked = page.locator("#ranked-chart svg")
    expect(ranked).to_have_attribute("role", "img")
    # one bar per practice with patients in the denominator, the area-rate line, a 95% funnel band
    units = page.locator("#unit-table tbody tr")
    expect(ranked.locator("g.bar")).to_have_count(units.count())
    expect(ranked.locator("line.area-rate")).to_have_count(1)
    assert ranked.locator("rect[stroke-dasharray]").count() >= 1
    # the funnel plot has its control limits and one point per unit with eligible patients
    funnel = page.locator("#funnel-chart svg")
    expect(funnel.locator("polyline")).to_have_count(4)  # 95% and 99.8%, upper and lower
    assert funnel.locator("g.point").count() >= 2
    # the trend: the area rate at each reporting snapshot (three quarter ends and today)
    trend = page.locator("#trend-chart svg")
    assert trend.locator("circle.trend-point").count() >= 4
    expect(trend.locator("title").first).to_contain_text("rate over reporting dates")
    # the same figures in a table, with the comparison written out
    expect(page.locator("#unit-table")).to_contain_text("The Densham Surgery (A81001)")  # names, from the practice table
    expect(page.locator("#ranked-chart svg")).to_contain_text("The Densham Surgery")
    assert set(page.locator("#unit-table .comparison").all_text_contents()) <= {"above", "within", "below", "no data"}
    # auditors get small-number suppression: no count from 1 to 7 in the tables, "<8" instead
    expect(page.locator(".lede")).to_contain_text("small-number suppression")
    cells = page.locator("#unit-table td.num").all_inner_texts() + page.locator("table").first.locator("td.num").all_inner_texts()
    assert cells and not [c for c in cells if c.strip() in {"1", "2", "3", "4", "5", "6", "7"}], cells
    assert any(c == "<8" for c in cells)
    expect(page.get_by_label("Compare", exact=True).locator("option")).to_have_text(["Practices", "MDTs", "Localities"])
    shot(page, "audit-auditor-practices")
    # legible at 1024 px too (issue 16 item 4): the charts fit the narrower page, no sideways scrolling
    page.set_viewport_size({"width": 1024, "height": 900})
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    for chart in ("#ranked-chart svg", "#funnel-chart svg", "#trend-chart svg"):
        box = page.locator(chart).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1024, (chart, box)
    shot(page, "audit-auditor-practices-1024")
    page.set_viewport_size({"width": 1440, "height": 1000})
    # compare MDTs instead
    page.get_by_label("Compare", exact=True).select_option("mdt")
    navigate_by(page, page.get_by_role("button", name="Show").first)
    expect(page).to_have_url(re.compile("unit_kind=mdt"))
    assert set(page.locator("#unit-table tbody th").all_inner_texts()) == {"central-1", "central-2"}
    shot(page, "audit-auditor-mdts")
    # and localities (their trend lines, "Localities" spelt right)
    page.get_by_label("Compare", exact=True).select_option("locality")
    navigate_by(page, page.get_by_role("button", name="Show").first)
    expect(page).to_have_url(re.compile("unit_kind=locality"))
    assert "Localitys" not in page.locator("main").inner_text()
    shot(page, "audit-auditor-localities")


def test_auditor_drill_down_is_pseudonymised(pages, server):
    page = pages.login("auditor")
    page.goto("/app/audit")
    page.get_by_role("link", name=re.compile("Patients in The Densham Surgery")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("DM020: patients in The Densham Surgery (A81001)")
    expect(page.get_by_role("note")).to_contain_text("pseudonyms")
    ids = page.locator("tbody td:first-child code").all_inner_texts()
    assert ids and all(re.fullmatch(r"P-[0-9a-f]{12}", i) for i in ids)
    body = page.locator("main").inner_text()
    assert AMINA not in body and "Amina" not in body
    assert page.locator("main a[href*='/app/patients/']").count() == 0
    shot(page, "audit-drill-auditor")
    log = access_log(server, resource="audit-drilldown", username="auditor")[-1]
    assert log.detail["pseudonymised"] is True and AMINA in log.patients  # who was looked at is still recorded


def test_clinicians_drill_down_within_their_scope(pages):
    page = pages.login("practice.staff")  # A81001
    page.goto("/app/audit/DM020/patients?protocol=t2dm-annual-care&unit_kind=area")
    practices = set(page.locator("tbody td:nth-child(2)").all_inner_texts())
    assert practices == {"The Densham Surgery (A81001)"}  # the area figure, but only this practice's patients
    page.get_by_role("link", name="Amina Begum").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Care plan: Amina Begum")


def test_snapshot_and_refusals(pages, server):
    lead = pages.login("clinical.lead")
    lead.goto("/app/audit")
    before = lead.locator("#trend-chart circle.trend-point").count()
    taken = set(reporting_dates(server.state.now().date() - CLOCK_AHEAD))
    day = next(d for d in (server.state.now().date() - dt.timedelta(days=k) for k in range(1, 5)) if d not in taken)
    lead.get_by_label("Reporting date", exact=True).fill(day.isoformat())
    lead.get_by_role("button", name="Take snapshot").click()
    expect(lead.get_by_role("status")).to_contain_text(f"Snapshot taken as of {day.isoformat()}")
    assert lead.locator("#trend-chart circle.trend-point").count() > before
    staff = pages.login("practice.staff")
    staff.goto("/app/audit")
    expect(staff.get_by_role("button", name="Take snapshot")).to_have_count(0)  # audit:snapshot is leads and auditors
    for username in ("mdt.member", "admin"):
        page = pages.login(username)
        assert page.goto("/app/audit").status == 403
        assert page.goto("/app/audit/DM020/patients").status == 403


def test_each_measure_has_a_trend_sparkline(pages):
    """Issue 16: a word-sized trend of each measure's area rate over the reporting snapshots, values in words."""
    page = pages.login("clinical.lead")
    page.goto("/app/audit")
    rows = page.locator("table").first.locator("tbody tr")
    assert rows.count() >= 3
    for i in range(rows.count()):
        spark = rows.nth(i).locator("td.trend-cell svg.sparkline")
        expect(spark).to_have_count(1)
        assert spark.locator("polyline").count() == 1
        label = spark.get_attribute("aria-label")
        assert re.search(r"area rate over time: \d+ \w+ \d{4} \d+\.\d%, ", label), label
    shot(page, "audit-sparklines")
