"""eCQM conformance: every published test case of the eight kits (CMS122, CMS165, CMS135, CMS144, CMS2,
CMS159, CMS69, CMS22), on every engine.

Per case on durable-rules and the plain-Python reference; the batch (DuckDB) engine over each whole
kit at once, key for key against the per-patient engine.

The kits live beside the repository (../shared/conformance/ecqm/<kit>, see design.md). They are
external data nobody on this project wrote: a case that disagrees is a finding about carepath (or,
with evidence, about the case), never something to adjust the expectations for. A missing kit
folder is a failure, not a skip: this suite is part of the default test run.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.app.conformance import POPULATIONS, case_dirs, find_protocol, kit_measure, run_case, run_kit, summary_line

KITS_ROOT = (Path(__file__).parents[2] / ".." / "shared" / "conformance" / "ecqm").resolve()
PROTOCOLS = (Path(__file__).parents[2] / "protocols").resolve()
KITS = {"CMS122": 56, "CMS165": 68, "CMS135": 35, "CMS144": 39, "CMS2": 36, "CMS159": 67, "CMS69": 62,
        "CMS22": 43}  # published case counts (each kit's README)
ENGINES = ["durable", "python"]


def _params():
    out = []
    for kit in KITS:
        cases = case_dirs(KITS_ROOT / kit)
        if not cases:
            out.append(pytest.param(kit, None, id=f"{kit}-kit-missing"))
        out += [pytest.param(kit, c.name, id=f"{kit}-{c.name}") for c in cases]
    return out


_protocols: dict[str, tuple] = {}


def _kit(kit: str):
    kit_dir = KITS_ROOT / kit
    if not (kit_dir / "cases").is_dir():
        pytest.fail(f"eCQM conformance kit not found at {kit_dir} (expected the shared/ folder beside the "
                    f"repository, with {kit}/cases/<case>/bundle.json + expected.json)", pytrace=False)
    if kit not in _protocols:
        km = kit_measure(kit_dir)
        _protocols[kit] = (km, *find_protocol(km, PROTOCOLS))
    return kit_dir, _protocols[kit]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kit,case", _params())
def test_case(kit, case, engine):
    kit_dir, (km, proto, measure) = _kit(kit)
    assert case is not None
    res = run_case(kit, kit_dir / "cases" / case, proto, measure, km, engine)
    assert res.error is None, f"{kit}/{case}: {res.error}"
    if res.actual != res.expected:
        lines = [f"{kit}/{case} ({res.description}) on {engine}:"]
        lines += [f"  {d['population']}: expected {d['expected']}, got {d['actual']}" for d in res.differences]
        lines.append(f"  why: {res.why}")
        lines += [f"    {k} = {v}" for k, v in res.definitions.items()]
        pytest.fail("\n".join(lines), pytrace=False)
    assert set(res.actual) == set(POPULATIONS)


@pytest.mark.parametrize("kit", list(KITS))
def test_kit_is_complete_and_all_pass(kit):
    """The whole kit through run_kit (the CLI's path): every published case present, none failing."""
    kit_dir, _ = _kit(kit)
    results = run_kit(kit_dir, PROTOCOLS)
    assert len(results) == KITS[kit], f"{kit}: {len(results)} cases found, the kit publishes {KITS[kit]}"
    assert summary_line(results) == f"{KITS[kit]} passed, 0 failed"


@pytest.mark.parametrize("kit", list(KITS))
def test_batch_engine_over_the_whole_kit_fires_what_the_per_patient_engine_fires(kit):
    """The population engine (one DuckDB query for all of a kit's patients at once) agrees, key for
    key, with durable-rules per patient; with the per-case tests above this makes it conform too."""
    import datetime as dt
    import json

    from engine.engines.duckdb.batch import connect, fired_by_patient
    from engine.engines.derive import Context
    from engine.evaluation.evaluator import fired_conditions
    from engine.engines.duckdb.columnar import load_records
    from engine.records.fhir.bundle import import_bundle

    kit_dir, (km, proto, measure) = _kit(kit)
    records, periods = [], set()
    for c in case_dirs(kit_dir):
        exp = json.loads((c / "expected.json").read_text(encoding="utf-8"))
        periods.add((exp["measurement_period"]["start"], exp["measurement_period"]["end"]))
        records += import_bundle(json.loads((c / "bundle.json").read_text(encoding="utf-8")), source_system=c.name,
                                 single_patient=True).records
    assert len(periods) == 1, f"{kit}: cases with different measurement periods {periods}"
    start, end = (dt.date.fromisoformat(x) for x in periods.pop())
    assert len({r.patient.nhs_number for r in records}) == len(records) == KITS[kit]
    con = connect(threads=2)
    try:
        load_records(con, records)
        batch = fired_by_patient(con, proto, end, start)
    finally:
        con.close()
    ctx = Context.as_of(end, proto.period, start)
    for rec in records:
        per_patient, _ = fired_conditions(rec, proto, ctx, "durable")
        assert batch[rec.patient.nhs_number] == per_patient, rec.patient.source_ids


def test_protocols_are_mapped_to_kits_by_their_ecqm_url():
    for kit in KITS:
        _, (km, proto, measure) = _kit(kit)
        assert measure.id == kit
        assert measure.ecqm.url == km.url and measure.ecqm.version == km.version
        assert not measure.achievers_kept  # eCQM cascade: an excluded patient is never in the numerator


def test_cli_engines_protocols_and_failing_case_whys(tmp_path):
    """`carepath conformance KIT... --protocols DIR --engine E`: one summary line per kit and engine; a
    failing case prints every population step's why (exceptions and exclusions included)."""
    from typer.testing import CliRunner

    from cli.main import app

    kit = str(KITS_ROOT / "CMS2")
    res = CliRunner().invoke(app, ["conformance", kit, "--engine", "python", "--protocols", str(PROTOCOLS)])
    assert res.exit_code == 0, res.output
    assert res.output.count("36 passed, 0 failed") == 1
    # the same measure with its exceptions step removed: the exception cases fail, each showing its steps
    src = (PROTOCOLS / "ecqm" / "cms2-depression-screening.yaml").read_text(encoding="utf-8")
    broken = src.replace("    exceptions:\n      - has_reason_not_screened\n", "")
    assert broken != src
    (tmp_path / "cms2.yaml").write_text(broken, encoding="utf-8")
    (tmp_path / "valuesets").symlink_to(PROTOCOLS / "ecqm" / "valuesets")
    res = CliRunner().invoke(app, ["conformance", kit, "--engine", "python", "--protocols", str(tmp_path)])
    assert res.exit_code == 1
    assert "28 passed, 8 failed" in res.output  # the kit's 8 exception cases
    assert "denominator-exception: expected 1, got 0" in res.output
    assert "[excl] exclusion: no" in res.output and "[num] numerator: no" in res.output
    res = CliRunner().invoke(app, ["conformance", kit, "--protocols", str(tmp_path / "nowhere")])
    assert res.exit_code == 2


def test_a_changed_protocol_file_is_read_again(tmp_path):
    """The kits share one loaded library (engine/app/conformance.py keeps it while none of its files changes):
    an edited protocol file is loaded afresh, not answered from the kept library."""
    from engine.app.conformance import find_protocol

    src = (PROTOCOLS / "ecqm" / "cms2-depression-screening.yaml").read_text(encoding="utf-8")
    (tmp_path / "valuesets").symlink_to(PROTOCOLS / "ecqm" / "valuesets")
    (tmp_path / "cms2.yaml").write_text(src, encoding="utf-8")
    km = kit_measure(KITS_ROOT / "CMS2")
    proto, measure = find_protocol(km, tmp_path)
    assert measure.has_exceptions
    assert find_protocol(km, tmp_path)[0] is proto  # nothing changed: the kept library
    (tmp_path / "cms2.yaml").write_text(src.replace("    exceptions:\n      - has_reason_not_screened\n", ""),
                                        encoding="utf-8")
    proto2, measure2 = find_protocol(km, tmp_path)
    assert proto2 is not proto and not measure2.has_exceptions
