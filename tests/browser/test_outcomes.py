"""The outcomes view of the audit pages (issue 19): XmR charts of emergency admissions for the area,
localities, MDTs and a practice with their limits and special-cause points, the funnel between practices,
and the pilot comparison with its caveats and the savings scenario. The registry holds the demo patients
and a synthetic population drawn from the hazard model with a planted 10 % fall in emergency admissions
in two localities' practices. The page counts with the pilot-outcomes protocol's measures (the protocol
route over the registry's records), so the figures checked here come from the table that route gave the
page (the server runs in the test's process); the first visit waits for the route (35 months), later ones
are served from its kept table."""
from __future__ import annotations

import datetime as dt
import re
import shutil

import pytest
from playwright.sync_api import expect

import api.web.outcomes as outcomes_web
from engine.app.outcomes import rates, spc
from engine.app.registry_load import bulk_load
from engine.language.loader import load_protocol
from engine.registry.db import make_engine
from engine.registry.tables import utcnow
from engine.synthetic.generate import practices
from engine.synthetic.outcomes import Effect, OutcomeModel
from tests.browser.conftest import Pages
from tests.browser.support import CLOCK_AHEAD, ROOT, Clock, copy_database, shot, start_server

PEOPLE = 6000
PILOT = ("central", "north")


def _start_month(today: dt.date) -> str:
    d = today.replace(day=1)
    for _ in range(17):
        d = (d - dt.timedelta(days=1)).replace(day=1)
    return d.strftime("%Y-%m")


@pytest.fixture(scope="module")
def outcome_registry(seeded, tmp_path_factory):
    db, seeded_protocols = seeded
    tmp = tmp_path_factory.mktemp("outcomes")
    protocols = tmp / "protocols"  # the seeded library and the outcome measures the page counts with
    shutil.copytree(seeded_protocols, protocols)
    shutil.copy(ROOT / "protocols" / "pilot-outcomes.yaml", protocols)
    shutil.copytree(ROOT / "protocols" / "shared", protocols / "shared")
    url = copy_database(db, tmp / "carepath.db")
    today = (utcnow() + CLOCK_AHEAD).date()
    start = dt.date.fromisoformat(_start_month(today) + "-01")
    pilot = frozenset(p.ods for p in practices() if p.locality in PILOT)
    engine = make_engine(url)
    # people 1000.. of the population: NHS numbers clear of the demo patients'
    bulk_load(engine, PEOPLE, seed=2, as_of=today, start=1000, workers=1,
              outcomes=OutcomeModel(effect=Effect(pilot, start, -0.10), record=False))
    engine.dispose()
    return tmp / "carepath.db", protocols, today


@pytest.fixture
def outcome_pages(browser, outcome_registry, tmp_path):
    db, protocols, _ = outcome_registry
    srv = start_server(copy_database(db, tmp_path / "carepath.db"), protocols, Clock(CLOCK_AHEAD), migrate=False)
    p = Pages(browser, srv)
    yield p
    p.close()
    srv.stop()


def test_outcome_spc_charts_funnel_and_pilot_comparison(outcome_pages, outcome_registry):
    db, protocols, today = outcome_registry
    page = outcome_pages.login("auditor")
    page.goto("/app/audit")
    page.set_default_timeout(300_000)  # the first visit counts 35 months with the protocol route
    page.get_by_role("link", name=re.compile("Outcomes: emergency admissions")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Outcomes: emergency admissions", timeout=300_000)
    page.set_default_timeout(15_000)  # later visits are served from the kept table
    # the table the page counted with: the protocol route over this registry (the server runs in this process)
    table = outcomes_web._cache["table"]
    assert outcomes_web._cache["key"][1:3] == (today, load_protocol(protocols / "pilot-outcomes.yaml").key)
    expect(page.locator(".lede")).to_contain_text("Aged 75 or over: emergency admissions")
    expect(page.locator(".lede")).to_contain_text("counted by the outcome measures of the protocol pilot-outcomes@1.0.0")
    expect(page.locator(".lede")).to_contain_text("age-sex standardised")

    # the area's XmR chart: one point a month, the mean and two process limits; special-cause points are
    # exactly those the engine's Making Data Count rules mark
    n_months = len(table.months)
    area = page.locator("#spc svg")
    expect(area).to_have_count(1)
    expect(area.locator("circle.spc-point")).to_have_count(n_months)
    expect(area.locator("line.spc-mean")).to_have_count(1)
    expect(area.locator("line.spc-limit")).to_have_count(2)
    chart = spc.xmr([p.standardised for p in rates.series(table, "emergency_admission", "75-plus")])
    marked = {i for idx in chart.rules.values() for i in idx}
    expect(area.locator("circle.special")).to_have_count(len(marked))
    expect(page.locator("#spc figcaption")).to_contain_text(chart.variation)
    shot(page, "outcomes-area")

    # MDTs: one chart each (9), each with its limits
    page.get_by_label("Level", exact=True).select_option("mdt")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile("level=mdt"))
    expect(page.locator("figure.spc-figure")).to_have_count(9)
    expect(page.locator("figure.spc-figure svg line.spc-limit")).to_have_count(18)
    shot(page, "outcomes-mdts")
    # localities: five
    page.get_by_label("Level", exact=True).select_option("locality")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("figure.spc-figure")).to_have_count(5)

    # the funnel between practices: 95 % and 99.8 % limits, one point per practice; a point opens that
    # practice's own chart
    funnel = page.locator("#funnel-chart svg")
    expect(funnel.locator("polyline")).to_have_count(4)
    n_practices = sum(u.ratio is not None for u in rates.funnel(table, "emergency_admission", "75-plus", "practice")[0])
    expect(funnel.locator("g.point")).to_have_count(n_practices)
    funnel.locator("g.point a").first.click()
    expect(page).to_have_url(re.compile("level=practice&unit="))
    expect(page.locator("figure.spc-figure")).to_have_count(1)
    expect(page.locator("#spc-table tbody tr")).to_have_count(n_months)
    shot(page, "outcomes-practice")

    # the pilot comparison: two localities' practices from the planted start month
    page.goto("/app/audit/outcomes")
    page.locator("#pilot").fill("central,north")
    page.locator("#start").fill(_start_month(today))
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#did-result")).to_contain_text("Difference-in-differences")
    expect(page.locator("#did-result")).to_contain_text("95% CI")
    expect(page.locator("#did-table tbody tr")).to_have_count(2)
    expect(page.locator("#caveats")).to_contain_text("parallel trends")
    expect(page.locator("#placebo")).to_contain_text("pretend start")
    expect(page.locator("#savings-scenario")).to_contain_text("Scenario (not a measured saving)")
    expect(page.locator("#spc svg line.pilot-start")).to_have_count(1)
    before = [m.strftime("%Y-%m") for m in table.months].index(_start_month(today))
    expect(page.locator("#spc .small").first).to_contain_text(f"calculated from the {before} months before the pilot start")
    shot(page, "outcomes-pilot-comparison")

    # a practice code that is not in the data is said plainly
    page.goto("/app/audit/outcomes?pilot=Z99999&start=" + _start_month(today))
    expect(page.locator("#outcomes-error")).to_contain_text("not a practice, MDT or locality")
