"""Each clinical fix of asthma / COPD / depression 1.1.0 (issue 13) has a case named "1.0.0 error: ..." in the
1.1.0 case file, hypertension 1.3.0's (invitations only after the latest reading, QOF) cases named
"(1.3.0 fix) ..." and t2dm-annual-care 1.4.0's (blood pressure invitations only after the latest reading the targets
use, not an ABPM night or minimum reading) cases named "(1.4.0 fix) ...". Such a case passes on the new version (test_protocol_library.py) and must fail on the
published version before it: run here against that version on every engine, it has to report at least one
difference."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from protocol_cases import run_case, shipped_cases

from engine.language.library import version_key
from engine.language.loader import load_protocol

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
# new case file -> (the published version before it, the prefix of the cases that show the fix)
PAIRS = {"asthma@1.1.0.tests.yaml": ("asthma.yaml", "1.0.0 error"), "copd@1.1.0.tests.yaml": ("copd.yaml", "1.0.0 error"),
         "depression@1.1.0.tests.yaml": ("depression.yaml", "1.0.0 error"),
         "hypertension@1.3.0.tests.yaml": ("hypertension@1.2.0.yaml", "(1.3.0 fix)"),
         "t2dm-annual-care@1.4.0.tests.yaml": ("t2dm-annual-care@1.3.0.yaml", "(1.4.0 fix)")}
FILES = {new: shipped_cases(PROTOCOLS / new) for new in PAIRS}
OLD = {old: load_protocol(PROTOCOLS / old) for old, _ in PAIRS.values()}
CASES = [(new, old, c) for new, (old, prefix) in PAIRS.items() for c in FILES[new].cases if c.name.startswith(prefix)]


def test_every_fixed_protocol_has_fix_cases():
    assert {new for new, _, _ in CASES} == set(PAIRS)


@pytest.mark.parametrize("engine", ["durable", "python", "batch"])
@pytest.mark.parametrize("new, old, case", CASES, ids=[f"{n}::{c.name}" for n, _, c in CASES])
def test_fix_case_fails_on_the_version_before(new, old, case, engine):
    cf = copy.copy(FILES[new])
    cf.protocol = OLD[old]
    assert cf.protocol.id == FILES[new].protocol.id and version_key(cf.protocol.version) < version_key(FILES[new].protocol.version)
    outcome = run_case(cf, case, engine)
    assert outcome.problems, f"{new}: {case.name!r} passes on {old} ({cf.protocol.version}): it does not show the fix"
