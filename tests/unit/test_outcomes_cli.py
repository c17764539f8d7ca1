"""`carepath outcomes report` counts with the pilot-outcomes protocol's outcome measures (the protocol route)
over a generated population, writes the same numbers as the report, and the series as FHIR MeasureReports."""
import json

from typer.testing import CliRunner

from cli.main import app
from engine.synthetic.generate import practices

PILOT = {p.ods for p in practices() if p.locality in ("central", "north")}


def test_outcomes_report_command(tmp_path):
    out, fhir = tmp_path / "report.json", tmp_path / "series.json"
    r = CliRunner().invoke(app, ["outcomes", "report", "--synthetic", "800", "--as-of", "2026-11-01", "--months", "12",
                                 "--workers", "1", "--level", "mdt", "--unit", "central-1", "--pilot", "central,north",
                                 "--start", "2026-05", "--plant-effect", "-0.10", "--out", str(out), "--fhir", str(fhir)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["schema"] == "carepath.outcomes/v1" and rep["people"] == 800 and rep["unit_name"] == "central-1"
    assert rep["source"].startswith("synthetic population: 800 people, seed 1; protocol measures pilot-outcomes@")
    assert rep["cohort"] == "75-plus" and "tier-3" in rep["cohorts"]
    assert len(rep["series"]) == 12 and 0 < rep["comparison"]["pilot_practices"] <= len(PILOT)
    assert "XmR" in r.output and "Difference-in-differences" in r.output and "Scenario (not a measured saving)" in r.output
    b = json.loads(fhir.read_text())
    assert b["resourceType"] == "Bundle" and b["total"] == 12
    first = b["entry"][0]["resource"]
    assert first["resourceType"] == "MeasureReport" and first["period"] == {"start": "2025-11-01", "end": "2025-11-30"}
    assert first["group"][0]["measureScore"]["value"] == round(rep["series"][0]["standardised"], 3)
    marked = {i for idx in rep["spc"]["rules"].values() for i in idx}
    flagged = {i for i, e in enumerate(b["entry"]) if any(x["url"].endswith("spc-special-cause") for x in e["resource"]["extension"])}
    assert flagged == marked
    # a cohort the protocol does not have is refused in words, before anything is counted
    bad = CliRunner().invoke(app, ["outcomes", "report", "--synthetic", "200", "--cohort", "nobody"])
    assert bad.exit_code == 2 and "no cohort 'nobody'" in bad.output
