"""QOF personalised care adjustments (PCAs) as denominator exceptions (issue 15): t2dm-annual-care 1.3.0,
hypertension 1.2.0 and copd 1.2.0 write PCAs as `exceptions:` where 1.2.0 / 1.1.0 wrote them as `exclusions:`
with `achievers_kept: true`.

Each case named "(PCA) ..." in the new versions' case files passes on the new version (test_protocol_library.py,
and test_supplied_clusters_copd_depression.py for COPD014, whose clusters a site supplies). Here the same record
is evaluated with the published old version, on every engine, and what the old version said is checked:
- "... (1.x.0 excluded)": the old version excluded the patient (exclusion, no exception, not met);
- "... 1.x.0 not in the denominator": newly diagnosed was in the old denominator condition;
- otherwise ("as in 1.x.0", "still excluded"): the old version said the same as the new one.
So each "excluded" / "not in the denominator" case fails on the old version, and each achiever case shows that
the move changes nothing for a patient meeting the numerator.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from protocol_cases import MEASURE_SHORTHAND, run_case, shipped_cases

from engine.evaluation.evaluator import Options, evaluate
from engine.language.loader import load_protocol

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ROOT / "protocols"
SITE = ROOT / "tests" / "fixtures" / "supplied-clusters"
SITE_ENV = "CAREPATH_SITE_CODELISTS"
FIELDS = ("initial_population", "denominator", "exclusion", "exception", "numerator")
SHORTHAND = MEASURE_SHORTHAND  # the case files' shorthand, as `carepath test` reads it

# new case file -> (old protocol file, site codelists folder or None)
PAIRS = {
    PROTOCOLS / "t2dm-annual-care@1.3.0.tests.yaml": (PROTOCOLS / "t2dm-annual-care@1.2.0.yaml", None),
    PROTOCOLS / "hypertension@1.2.0.tests.yaml": (PROTOCOLS / "hypertension@1.1.0.yaml", None),
    SITE / "copd-1.2.0-pca-supplied.tests.yaml": (PROTOCOLS / "copd@1.1.0.yaml", SITE / "site"),
}


def _load(path: Path, site: Path | None):
    before = os.environ.get(SITE_ENV)
    if site is not None:
        os.environ[SITE_ENV] = str(site)
    else:
        os.environ.pop(SITE_ENV, None)
    try:
        return path.name.endswith(".tests.yaml") and shipped_cases(path) or load_protocol(path)
    finally:
        if before is None:
            os.environ.pop(SITE_ENV, None)
        else:
            os.environ[SITE_ENV] = before


LOADED = {new: (_load(new, site), _load(old, site)) for new, (old, site) in PAIRS.items()}
CASES = [(new, c) for new, (cf, _) in LOADED.items() for c in cf.cases if c.name.startswith("(PCA)")]


def _old_expectation(name: str, want: dict) -> dict:
    if "not in the denominator" in name:
        return dict(denominator=False, exclusion=False, exception=False, numerator=False)
    if " excluded)" in name:
        return dict(initial_population=True, denominator=True, exclusion=True, exception=False, numerator=False)
    return want


def test_each_new_version_has_pca_cases_of_both_kinds():
    for new in PAIRS:
        names = [c.name for n, c in CASES if n == new]
        assert any(" excluded)" in n for n in names), new.name  # a PCA and an unmet numerator: exclusion -> exception
        assert any("met" in n and "as in" in n for n in names), new.name  # an achiever with a PCA: numerator in both


def test_the_new_versions_have_exceptions_and_the_old_ones_none():
    for new, (cf, old) in LOADED.items():
        assert any(m.has_exceptions for m in cf.protocol.measures), cf.protocol.key
        assert not any(m.has_exceptions for m in old.measures), old.key
        assert cf.protocol.effective == old.effective  # superseded from the same date: the new version is in force


@pytest.mark.parametrize("engine", ["durable", "python", "batch"])
@pytest.mark.parametrize("new, case", CASES, ids=[f"{n.name}::{c.name}" for n, c in CASES])
def test_pca_case_on_the_old_version(new, case, engine):
    cf, old = LOADED[new]
    assert case.version is None
    ev = evaluate(case.record, [old], cf.agreements, as_of=case.as_of, options=Options(engine=engine))
    results = {m.measure: m for m in ev.protocols[0].measures}
    wanted = case.expect["measures"]
    for i, (mid, want) in enumerate(wanted.items()):
        want = SHORTHAND[want] if isinstance(want, str) else {k: v for k, v in want.items() if k in FIELDS}
        expected = _old_expectation(case.name, want) if i == 0 else want
        got = {k: getattr(results[mid], k) for k in expected}
        assert got == expected, f"{old.key} {mid}: {results[mid].provenance.why}"


def test_denominator_shorthand_fails_for_an_excepted_patient():
    """`denominator` (and `numerator`) in a case file also check "not excepted": before, an excepted patient
    passed `measures: {HYP009: denominator}`, so a case could not show that a PCA no longer applies."""
    new = PROTOCOLS / "hypertension@1.2.0.tests.yaml"
    cf = LOADED[new][0]
    case = next(c for c in cf.cases if c.name.startswith("(PCA) Aged 84, clinic 162/95, two invitations"))
    assert run_case(cf, case, "python").passed  # HYP009: excepted
    wrong = copy.deepcopy(case)
    wrong.expect["measures"]["HYP009"] = "denominator"
    outcome = run_case(cf, wrong, "python")
    assert any("expected exception False, got True" in p for p in outcome.problems), outcome.problems
