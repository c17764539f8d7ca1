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

from engine.conformance import POPULATIONS, case_dirs, find_protocol, kit_measure, run_case, run_kit, summary_line

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

    from engine.evaluate.batch import connect, fired_by_patient
    from engine.evaluate.derive import Context
    from engine.evaluate.evaluator import fired_conditions
    from engine.population.columnar import load_records
    from engine.records.fhir_import import import_bundle

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
