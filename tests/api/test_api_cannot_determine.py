"""A measure that needs a declared codelist the site has not supplied: patients it cannot be determined for are
left out of the rate and counted apart, in the API's audit figures, the drill-down and the audit web page; care
plans show the activity as unknown, with the reason, and raise no task for it."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.api.support import AMINA, close_api, make_api

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "declared-cluster"


@pytest.fixture
def footcare_api(tmp_path, monkeypatch):
    monkeypatch.delenv("CAREPATH_SITE_CODELISTS", raising=False)
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    shutil.copy(FIXTURE / "footcare.yaml", protocols / "footcare.yaml")
    shutil.copytree(FIXTURE / "valuesets", protocols / "valuesets")
    (protocols / "agreements").mkdir()
    a = make_api(f"sqlite:///{tmp_path / 'carepath.db'}", protocols, seed=True)
    yield a
    close_api(a)


def test_audit_leaves_undetermined_patients_out_of_the_rate(footcare_api):
    api = footcare_api
    rows = {r["measure"]: r for r in api.get("/audit/measures?unit_kind=area").json()["rows"]}
    foot, hba1c = rows["DMFOOT"], rows["DMHBA1C"]
    assert hba1c["denominator"] > 0 and hba1c["cannot_determine"] == 0
    # everyone on the register is undetermined for the foot measure: none counted as not met
    assert foot["cannot_determine"] == hba1c["denominator"] and foot["missing_codelists"] == ["FOOTEXAM_COD"]
    assert (foot["denominator"], foot["numerator"], foot["rate"]) == (0, 0, None)

    drill = api.get("/audit/measures/DMFOOT/patients?unit_kind=area").json()["patients"]
    assert len(drill) == foot["cannot_determine"] and {p["group"] for p in drill} == {"cannot-determine"}
    assert all("cannot determine — codelist FOOTEXAM_COD not supplied" in p["why"] for p in drill)

    plan = api.get(f"/patients/{AMINA}/care-plan").json()
    [proto] = [p for p in plan["protocols"] if p["protocol"] == "footcare-fixture"]
    items = {i["activity"]: i for i in proto["care_plan"]}
    assert items["foot-exam"]["status"] == "unknown"
    assert "cannot determine — codelist FOOTEXAM_COD not supplied" in items["foot-exam"]["provenance"]["why"]
    assert {c["id"] for c in proto["cannot_determine"]} >= {"foot-exam", "DMFOOT", "foot-exam-overdue"}
    tasks = api.get(f"/patients/{AMINA}/care-plan").json().get("open_tasks", [])
    assert not any("foot" in t["title"].lower() for t in tasks)


def test_audit_page_says_how_many_cannot_be_determined(footcare_api):
    c = footcare_api.client
    page = c.get("/app/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = c.post("/app/login", data={"username": "clinical.lead", "password": "clinical.lead-demo-pw", "csrf_token": csrf},
               follow_redirects=False)
    assert r.status_code == 303
    n = footcare_api.get("/audit/measures?unit_kind=area").json()["rows"]
    n = next(r for r in n if r["measure"] == "DMFOOT")["cannot_determine"]
    html = c.get("/app/audit?measure=DMFOOT&protocol=footcare-fixture").text
    assert "Cannot determine" in html
    assert re.search(rf"Cannot determine for {n} patients?: codelist FOOTEXAM_COD not supplied", html)
    drill = c.get("/app/audit/DMFOOT/patients?protocol=footcare-fixture&unit_kind=area").text
    assert "Cannot determine (codelist not supplied)" in drill


def test_a_codelist_imported_while_the_service_runs_takes_effect_without_a_restart(footcare_api, tmp_path):
    """`carepath codelists import` writes the site file; the running service's library reloads when a codelist it
    reads changes (engine.language.library.library_inputs), so the next evaluation decides what was "cannot
    determine" (before: the library was reloaded only when a protocol file changed, i.e. after a restart)."""
    from typer.testing import CliRunner

    from cli.main import app

    api = footcare_api
    api.client.app.state.carepath.protocols.check_every = 0  # look for changed files on every request
    plan = api.get(f"/patients/{AMINA}/care-plan").json()
    [proto] = [p for p in plan["protocols"] if p["protocol"] == "footcare-fixture"]
    assert {i["activity"]: i["status"] for i in proto["care_plan"]}["foot-exam"] == "unknown"
    download = tmp_path / "footexam_cod-20241205.csv"  # an OpenCodelists download (code,term)
    download.write_text("code,term\n401191002,Diabetic foot examination\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["codelists", "import", str(download), "--cluster", "FOOTEXAM_COD",
                                 "--protocols", str(api.protocols_dir)])
    assert r.exit_code == 0, r.output
    assert (api.protocols_dir / "valuesets" / "site" / "footexam_cod.csv").exists()
    r = api.post(f"/patients/{AMINA}/reevaluate")
    assert r.status_code == 200, r.text
    plan = api.get(f"/patients/{AMINA}/care-plan").json()
    [proto] = [p for p in plan["protocols"] if p["protocol"] == "footcare-fixture"]
    status = {i["activity"]: i["status"] for i in proto["care_plan"]}["foot-exam"]
    assert status in ("due", "overdue", "met"), proto["care_plan"]
    assert not {c["id"] for c in proto["cannot_determine"]} & {"foot-exam", "DMFOOT", "foot-exam-overdue"}
    foot = next(r for r in api.get("/audit/measures?unit_kind=area").json()["rows"] if r["measure"] == "DMFOOT")
    assert foot["denominator"] >= 1  # this patient now counts in the measure


def test_snapshots_and_trend_count_cannot_determine_apart(footcare_api):
    """A reporting snapshot stores how many patients' result could not be determined (issue 13: only the live
    figures counted them), the trend returns it, and the audit page shows it under the trend."""
    api = footcare_api
    live = next(r for r in api.get("/audit/measures?unit_kind=area").json()["rows"] if r["measure"] == "DMFOOT")
    today = api.clock().date().isoformat()
    assert api.post("/audit/snapshots", user="auditor", json={"as_of": today}).status_code == 201
    [point] = api.get("/audit/trend", params={"measure": "DMFOOT", "protocol": "footcare-fixture"}).json()["points"]
    assert point["cannot_determine"] == live["cannot_determine"] > 0
    assert (point["denominator"], point["numerator"], point["rate"]) == (0, 0, None)
    [hba1c] = api.get("/audit/trend", params={"measure": "DMHBA1C", "protocol": "footcare-fixture"}).json()["points"]
    assert hba1c["cannot_determine"] == 0 and hba1c["denominator"] > 0
    c = api.client
    page = c.get("/app/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    c.post("/app/login", data={"username": "clinical.lead", "password": "clinical.lead-demo-pw", "csrf_token": csrf},
           follow_redirects=False)
    html = c.get("/app/audit?measure=DMFOOT&protocol=footcare-fixture").text
    row = re.search(r'<tr class="trend-cannot-determine"><th scope="row">Area cannot determine</th>(.*?)</tr>', html)
    assert row and f'<td class="num">{point["cannot_determine"]}</td>' in row.group(1)
    assert '<th scope="col" class="num">Cannot determine</th><th scope="col">95% CI</th>' in html  # per-unit column


def test_drill_down_groups_exceptions_apart():
    """A denominator exception (QOF personalised care adjustment) is its own drill-down group, not "not met"."""
    from api.routers.audit import _group
    from api.web.audit import GROUP_NAMES

    base = {"initial_population": True, "denominator": True, "exclusion": False, "numerator": False}
    assert _group({**base, "exception": True}) == "exception"
    assert _group({**base, "exception": False}) == "not-met"
    assert _group({**base, "exclusion": True}) == "excluded"
    assert _group({**base, "numerator": True}) == "numerator"
    assert GROUP_NAMES["exception"] == "Exception (personalised care adjustment)"
