"""engine/app/conformance.py: kit -> protocol mapping, failure reports, renderers, and the `ecqm:` metadata."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from engine.app.conformance import KitError, render_json, render_text, run_kit
from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol
from tests.one_measure_protocol import one_measure_protocol

ROOT = Path(__file__).parents[2]
KIT = (ROOT / ".." / "shared" / "conformance" / "ecqm" / "CMS122").resolve()
PROTOCOLS = ROOT / "protocols"


@pytest.fixture
def small_kit(tmp_path):
    """A copy of two CMS122 cases; the second one's expectation deliberately wrong (a copy, never the kit)."""
    if not (KIT / "cases").is_dir():
        pytest.fail(f"eCQM kit not found at {KIT}", pytrace=False)
    kit = tmp_path / "CMS122"
    (kit / "cases").mkdir(parents=True)
    shutil.copy(KIT / "terminology.json", kit / "terminology.json")
    for name in ("IPPass-OfficeVisit", "NUMFail-HbA1cLessThan9"):
        shutil.copytree(KIT / "cases" / name, kit / "cases" / name)
    exp = kit / "cases" / "NUMFail-HbA1cLessThan9" / "expected.json"
    data = json.loads(exp.read_text())
    data["populations"]["numerator"] = 1
    exp.write_text(json.dumps(data))
    return kit


def test_a_failing_case_names_the_population_expected_actual_and_the_definitions(small_kit):
    results = run_kit(small_kit, PROTOCOLS)
    ok, bad = results
    assert ok.passed and not bad.passed
    assert bad.differences == [{"population": "numerator", "expected": 1, "actual": 0}]
    assert "numerator not met" in bad.why
    assert bad.definitions["most_recent_glycemic_status"].startswith("observation 17855-8 2025-12-31")
    out = io.StringIO()
    render_text(results, Console(file=out, width=200))
    text = out.getvalue()
    assert "numerator: expected 1, got 0" in text and "poor_or_unknown_glycemic_control = no" in text
    assert text.rstrip().splitlines()[-1] == "1 passed, 1 failed"
    data = json.loads(render_json(results))
    assert (data["passed"], data["failed"]) == (1, 1)
    assert data["cases"][1]["differences"][0]["population"] == "numerator"


def test_a_kit_no_protocol_implements(small_kit, tmp_path):
    empty = tmp_path / "no-protocols"
    empty.mkdir()
    with pytest.raises(KitError, match="no protocol under .* declares a measure with ecqm url"):
        run_kit(small_kit, empty)
    with pytest.raises(KitError, match="no such kit folder"):
        run_kit(tmp_path / "nowhere", PROTOCOLS)


def test_a_version_mismatch_is_reported(small_kit):
    term = json.loads((small_kit / "terminology.json").read_text())
    term["measure"]["version"] = "9.9.999"
    (small_kit / "terminology.json").write_text(json.dumps(term))
    with pytest.raises(KitError, match="version 9.9.999, but .* implements 0.5.000"):
        run_kit(small_kit, PROTOCOLS)


def test_ecqm_metadata_is_read():
    proto = load_protocol(PROTOCOLS / "ecqm" / "cms165-controlling-bp.yaml")
    (m,) = proto.measures
    assert (m.id, m.ecqm.url, m.ecqm.version) == (
        "CMS165", "https://madie.cms.gov/Measure/CMS165FHIRControllingHighBloodPressure", "0.5.000")


@pytest.mark.parametrize("ecqm,message", [
    ("    ecqm: {url: not a url}", "is not a canonical measure URL"),
    ("    ecqm: {url: 'https://madie.cms.gov/Measure/X', version: 0.5}", "was read as a number"),
    ("    ecqm: {url: 'https://madie.cms.gov/Measure/X', version: 'v1'}", "is not a measure version"),
    ("    ecqm: {url: 'https://madie.cms.gov/Measure/X', versoin: '1.0'}", "unknown field 'versoin'"),
    ("    ecqm: {version: '1.0'}", "is missing 'url'"),
])
def test_ecqm_metadata_is_validated(tmp_path, ecqm, message):
    with pytest.raises(ProtocolError) as e:
        load_protocol(one_measure_protocol(tmp_path, ecqm))
    assert message in str(e.value) and "m.yaml:" in str(e.value)


def test_cli_conformance_exit_code_and_last_line(small_kit):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["conformance", str(small_kit)])
    assert result.exit_code == 1
    assert result.output.rstrip().splitlines()[-1] == "1 passed, 1 failed"
    assert "numerator: expected 1, got 0" in result.output
    ok = CliRunner().invoke(app, ["conformance", str(KIT), "--format", "json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["failed"] == 0
    missing = CliRunner().invoke(app, ["conformance", str(small_kit.parent / "nope")])
    assert missing.exit_code == 2
