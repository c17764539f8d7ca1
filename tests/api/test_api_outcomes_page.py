"""The outcomes page (issue 19) shows the protocol route's figures: its monthly events, person-years and
standardised rates are those of the pilot-outcomes measures counted by the DuckDB route over the same people
written as a population folder (engine/app/outcomes/protocol_route.py) — the registry's records go through
the registry export and the same route, not through a second definition. A&E, whose codelist the site has not
supplied, is said to be not countable, with no chart of zeros. Three months only (api.web.outcomes.MONTHS)."""
from __future__ import annotations

import datetime as dt

import html
import re
import shutil

import pytest

import api.web.outcomes as outcomes_page
from engine.app.outcomes.protocol_route import from_population
from engine.app.outcomes.rates import series
from engine.app.registry_load import bulk_load
from engine.language.loader import load_protocol
from engine.synthetic.generate import write_population
from engine.synthetic.outcomes import OutcomeModel
from tests.api.support import ROOT, close_api, copy_protocols, make_api

N, SEED, MONTHS = 300, 31, 3


@pytest.fixture(scope="module")
def outcomes_api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outcomes-page")
    protocols = copy_protocols(tmp / "protocols")
    shutil.copy(ROOT / "protocols" / "pilot-outcomes.yaml", protocols / "pilot-outcomes.yaml")
    shutil.copytree(ROOT / "protocols" / "shared", protocols / "shared")
    api = make_api(f"sqlite:///{tmp / 'carepath.db'}", protocols, seed=False)
    today = api.clock().date()
    bulk_load(api.state.engines.write, N, seed=SEED, as_of=today, workers=1, outcomes=OutcomeModel())
    write_population(tmp / "pop", N, seed=SEED, as_of=today, workers=1, outcomes=OutcomeModel())
    proto = load_protocol(protocols / "pilot-outcomes.yaml")
    route = from_population(tmp / "pop", proto, today, months=MONTHS)
    _web_login(api)
    yield api, route
    close_api(api)


def _web_login(api) -> None:
    c = api.client
    page = c.get("/app/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert c.post("/app/login", data={"username": "clinical.lead", "password": "clinical.lead-demo-pw",
                                      "csrf_token": csrf}, follow_redirects=False).status_code == 303


def _rows(text: str) -> list[list[str]]:
    body = re.search(r'<table class="table compact-table" id="spc-table">.*?<tbody>(.*?)</tbody>', text, re.S).group(1)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


@pytest.mark.parametrize("cohort,outcome", [("75-plus", "emergency_admission"), ("tier-1", "bed_days")])
def test_the_page_shows_the_protocol_routes_figures(outcomes_api, monkeypatch, cohort, outcome):
    api, route = outcomes_api
    monkeypatch.setattr(outcomes_page, "MONTHS", MONTHS)
    r = api.client.get(f"/app/audit/outcomes?cohort={cohort}&outcome={outcome}")
    assert r.status_code == 200, r.text
    assert "counted by the outcome measures of the protocol pilot-outcomes@1.0.0" in r.text
    want = [[p.month, str(int(p.events)), f"{p.person_years:.1f}",
             f"{p.crude:.1f}" if p.crude is not None else "–",
             f"{p.standardised:.1f}" if p.standardised is not None else "–"]
            for p in series(route, outcome, cohort)]
    assert sum(int(w[1]) for w in want) > 0  # something to compare
    assert [row[:5] for row in _rows(r.text)] == want


def test_the_table_is_counted_once_a_day_and_says_when(outcomes_api, monkeypatch):
    """A delivery does not make the next visit wait for a recount (complete months change only as late records
    arrive); the page says when it counted, and counts again on the next day."""
    api, _ = outcomes_api
    monkeypatch.setattr(outcomes_page, "MONTHS", MONTHS)
    first = api.client.get("/app/audit/outcomes")
    assert first.status_code == 200 and 'id="counted-at"' in first.text
    counted = re.search(r'<span id="counted-at">Counted ([^<]+) from the registry', first.text).group(1)
    table = outcomes_page._cache["table"]
    r = api.post("/ingest/records", user="admin", json={"source": "test", "records": [
        {"patient": {"nhs_number": "9990000999", "birth_date": "1940-01-01", "sex": "female", "practice": "A81001"},
         "facts": []}]})
    assert r.status_code == 200, r.text
    assert outcomes_page._cache["table"] is table and counted in api.client.get("/app/audit/outcomes").text
    monkeypatch.setattr(api.clock, "offset", api.clock.offset + dt.timedelta(days=1))  # the session ends too
    _web_login(api)
    again = api.client.get("/app/audit/outcomes")
    assert again.status_code == 200 and 'id="spc-table"' in again.text
    assert outcomes_page._cache["table"] is not table and outcomes_page._cache["key"][1] == table.as_of + dt.timedelta(days=1)


def test_ae_is_not_countable_until_the_site_supplies_its_codelist(outcomes_api, monkeypatch):
    api, _ = outcomes_api
    monkeypatch.setattr(outcomes_page, "MONTHS", MONTHS)
    r = api.client.get("/app/audit/outcomes?cohort=75-plus&outcome=ae_attendance")
    assert r.status_code == 200
    assert "A&amp;E attendances cannot be counted: codelist not supplied: AE_ATTENDANCE" in r.text
    assert 'id="spc-table"' not in r.text and "spc-figure" not in r.text


def test_the_process_audit_page_leaves_outcome_measures_to_the_outcomes_page(tmp_path):
    """A `value:` measure counts events per person: on the process audit page its "rate" read as a process
    measure (admissions-75-plus at 100 % on the demo patients), so it is not listed there and the page points
    to the outcomes page instead."""
    protocols = copy_protocols(tmp_path / "protocols")
    shutil.copy(ROOT / "protocols" / "pilot-outcomes.yaml", protocols / "pilot-outcomes.yaml")
    shutil.copytree(ROOT / "protocols" / "shared", protocols / "shared")
    api = make_api(f"sqlite:///{tmp_path / 'carepath.db'}", protocols, seed=True)  # the demo patients, evaluated
    try:
        stored = {x["measure"] for x in api.get("/audit/measures").json()["rows"] if x["protocol"] == "pilot-outcomes"}
        assert "admissions-75-plus" in stored  # the outcome measures are stored and in the figures
        _web_login(api)
        r = api.client.get("/app/audit")
        assert r.status_code == 200, r.text
        note = re.search(r'<p class="small" id="outcome-measures-note">(.*?)</p>', r.text, re.S)
        assert note and "admissions-75-plus" in note.group(1) and "/app/audit/outcomes" in note.group(1)
        assert "measure=admissions-75-plus" not in r.text  # not offered as a process measure to chart
        assert "measure=DM020" in r.text  # the diabetes pathway's measures still are
    finally:
        close_api(api)
