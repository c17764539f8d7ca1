"""Each clinical fix of asthma / COPD / depression 1.1.0 (issue 13) has a case named "1.0.0 error: ..." in the
1.1.0 case file. Such a case passes on 1.1.0 (test_protocol_library.py) and must fail on the published 1.0.0
file: run here against 1.0.0 on every engine, it has to report at least one difference."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from protocol_cases import run_case, shipped_cases

from engine.language.loader import load_protocol

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
PAIRS = {"asthma@1.1.0.tests.yaml": "asthma.yaml", "copd@1.1.0.tests.yaml": "copd.yaml",
         "depression@1.1.0.tests.yaml": "depression.yaml"}
FILES = {new: shipped_cases(PROTOCOLS / new) for new in PAIRS}
OLD = {old: load_protocol(PROTOCOLS / old) for old in PAIRS.values()}
CASES = [(new, old, c) for new, old in PAIRS.items() for c in FILES[new].cases if c.name.startswith("1.0.0 error")]


def test_every_fixed_protocol_has_fix_cases():
    assert {new for new, _, _ in CASES} == set(PAIRS)


@pytest.mark.parametrize("engine", ["durable", "python", "batch"])
@pytest.mark.parametrize("new, old, case", CASES, ids=[f"{n}::{c.name}" for n, _, c in CASES])
def test_fix_case_fails_on_1_0_0(new, old, case, engine):
    cf = copy.copy(FILES[new])
    cf.protocol = OLD[old]
    assert cf.protocol.version == "1.0.0"
    outcome = run_case(cf, case, engine)
    assert outcome.problems, f"{new}: {case.name!r} passes on {old} (1.0.0): it does not show the fix"
