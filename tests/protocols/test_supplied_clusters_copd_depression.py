"""COPD 1.1.0 and depression 1.1.0 with their declared clusters supplied by a site.

Without the site's codelists these protocols say "cannot determine" for everything resting on MRC grade,
number of exacerbations, FEV1/FVC, spirometry unsuitable, pulmonary rehabilitation, SpO2, home oxygen referral
and PHQ-9 (protocols/copd@1.1.0.tests.yaml, protocols/depression@1.1.0.tests.yaml). Here the same protocol files
run with `CAREPATH_SITE_CODELISTS` pointing at tests/fixtures/supplied-clusters/site/ (TEST CODES, not SNOMED CT),
so the rules behind those clusters are shown working on every engine: COPD010 needs the exacerbation count,
post-admission rehabilitation counts from discharge and only for COPD admissions, "unable to do spirometry" stops
the confirmation task, very severe COPD is reviewed every 6 months, and a PHQ-9 is never the DEP003 review.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from protocol_cases import load_cases, run_case

from engine.language.loader import load_protocol

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "supplied-clusters"
SITE_ENV = "CAREPATH_SITE_CODELISTS"
ENGINES = ("durable", "python", "batch")


def _load_supplied():
    """The fixture case files, loaded with the site folder in force (the protocols keep the supplied codes)."""
    before = os.environ.get(SITE_ENV)
    os.environ[SITE_ENV] = str(FIXTURE / "site")
    try:
        return {f.name: load_cases(f) for f in sorted(FIXTURE.glob("*.tests.yaml"))}
    finally:
        if before is None:
            os.environ.pop(SITE_ENV, None)
        else:
            os.environ[SITE_ENV] = before


FILES = _load_supplied()
CASES = [(name, c, e) for name, cf in FILES.items() for c in cf.cases for e in ENGINES]


def test_the_fixture_supplies_every_declared_cluster():
    for cf in FILES.values():
        assert cf.protocol.missing_clusters == [], cf.protocol.key
        assert cf.protocol.undetermined == {}, cf.protocol.key


@pytest.mark.parametrize("file_name, case, engine", CASES, ids=[f"{n}::{c.name}::{e}" for n, c, e in CASES])
def test_case_with_supplied_clusters(file_name, case, engine):
    outcome = run_case(FILES[file_name], case, engine)
    assert outcome.passed, (f"{file_name}:{case.line}: {case.name} [{engine}]\n  " + "\n  ".join(outcome.problems)
                            + "\n  why:\n    " + "\n    ".join(outcome.why))


@pytest.mark.parametrize("protocol_file", ["copd@1.1.0.yaml", "depression@1.1.0.yaml"])
def test_every_rule_waiting_for_a_cluster_is_shown_firing_once_supplied(protocol_file, monkeypatch):
    monkeypatch.delenv(SITE_ENV, raising=False)
    shipped = load_protocol(ROOT / "protocols" / protocol_file)
    waiting = {k.split(":", 1)[1] for k in shipped.undetermined if k.startswith("rule:") and k.count(":") == 1}
    assert waiting, f"{protocol_file}: expected rules that wait for a site codelist"
    shown = set()
    for cf in FILES.values():
        if cf.protocol.key == shipped.key:
            for c in cf.cases:
                shown |= set(c.expect.get("rules_fired") or [])
    assert waiting <= shown, f"{protocol_file}: never shown firing with the clusters supplied: {sorted(waiting - shown)}"
