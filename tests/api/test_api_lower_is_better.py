"""Issue 16 point 4: a measure where lower is better (`improvement: decrease`, e.g. CMS122 poor HbA1c control)
was shown on the audit page like any other: highest rate first, above the area's limits green, no warning. Here
a fixture protocol's inverse measure (no HbA1c in 12 months) on the demo population: the page says "lower is
better", ranks practices lowest rate first, colours above the limits as the concerning side, and the FHIR
summary MeasureReports carry improvementNotation from the declaration."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.api.support import close_api, make_api

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "declared-cluster"
INVERSE = """  - id: DMNOHBA1C
    title: No HbA1c in the last 12 months
    numerator: last_hba1c is missing
    improvement: decrease
"""


@pytest.fixture(scope="module")
def inverse_api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inverse")
    protocols = tmp / "protocols"
    protocols.mkdir()
    text = (FIXTURE / "footcare.yaml").read_text()
    assert text.rstrip().endswith("numerator: last_foot_exam exists")
    (protocols / "footcare.yaml").write_text(text.rstrip() + "\n" + INVERSE)
    shutil.copytree(FIXTURE / "valuesets", protocols / "valuesets")
    (protocols / "agreements").mkdir()
    a = make_api(f"sqlite:///{tmp / 'carepath.db'}", protocols, seed=True)
    yield a
    close_api(a)


def _login(api):
    c = api.client
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/app/login").text).group(1)
    r = c.post("/app/login", data={"username": "clinical.lead", "password": "clinical.lead-demo-pw", "csrf_token": csrf},
               follow_redirects=False)
    assert r.status_code == 303
    return c


def _table_rows(html):
    table = html.split('id="unit-table"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', table, re.S)
    out = []
    for name, cells in rows:
        nums = re.findall(r'<td class="num">([^<]*)</td>', cells)
        rate = float(nums[4].rstrip("%")) if nums[4].strip() not in ("", "–", "—") else None
        [(cls, words)] = re.findall(r'class="comparison comparison-([a-z-]+)">([^<]*)</span>', cells)
        out.append((name.strip(), rate, cls, words))
    return out


def test_audit_page_shows_an_inverse_measure_as_lower_is_better(inverse_api):
    c = _login(inverse_api)
    html = c.get("/app/audit?measure=DMNOHBA1C&protocol=footcare-fixture&unit_kind=practice").text
    assert 'id="lower-is-better"' in html and "Lower is better" in html
    assert re.search(r'<h2 id="chosen-h">DMNOHBA1C: [^<]*<span class="tag lower-is-better">lower is better</span>', html)
    area = html.split('id="area-figure"', 1)[1].split("</p>", 1)[0]
    assert "</strong>, lower is better (" in area and "in the numerator of" in area
    assert "lowest (best) first" in html and "(concerning: lower is better)" in html
    assert "key-worse" in html.split("above the area's 95% limits")[0].rsplit("<p", 1)[1]
    rows = _table_rows(html)
    rates = [r for _, r, _, _ in rows]
    # the demo's three practices are all too small to rank (< 10 eligible): shown lowest rate first all the same
    assert len(rates) == 3 and None not in rates and len(set(rates)) > 1
    assert rates == sorted(rates)
    for name, rate, cls, words in rows:
        expect = {"above": "worse", "below": "better"}.get(words.split(" (")[0].strip().lower(), None)
        if expect:
            assert cls == expect and f"({expect})" in words, (name, cls, words)
        else:
            assert cls in ("within", "no-data"), (name, cls, words)
    # the other measures of the same protocol are unchanged: higher is better, no label
    usual = c.get("/app/audit?measure=DMHBA1C&protocol=footcare-fixture&unit_kind=practice").text
    assert 'id="lower-is-better"' not in usual and "lowest (best) first" not in usual
    usual_rates = [r for _, r, _, _ in _table_rows(usual)]
    assert len(set(usual_rates)) > 1 and usual_rates == sorted(usual_rates, reverse=True)
    # the measures table labels the inverse measure only
    listing = html.split("<caption>All measures, whole area</caption>", 1)[1].split("</table>", 1)[0]
    [inverse_row] = [r for r in listing.split("<tr") if ">DMNOHBA1C<" in r]
    assert "lower is better" in inverse_row
    assert all("lower is better" not in r for r in listing.split("<tr") if ">DMHBA1C<" in r or ">DMFOOT<" in r)


def test_fhir_summary_reports_carry_the_declared_improvement_notation(inverse_api):
    def notations(measure):
        r = inverse_api.get("/fhir/MeasureReport/summary", params={"measure": measure, "unit_kind": "practice"})
        assert r.status_code == 200, r.text
        return {e["resource"]["improvementNotation"]["coding"][0]["code"] for e in r.json()["entry"]}
    assert notations("DMNOHBA1C") == {"decrease"}
    assert notations("DMHBA1C") == {"increase"}
