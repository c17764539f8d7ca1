"""The type 2 diabetes pathway's own cases (protocols/t2dm-annual-care.tests.yaml), on the rule engine and the reference."""
from __future__ import annotations

from pathlib import Path

import pytest
from protocol_cases import check_case, shipped_cases

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = ROOT / "protocols" / "t2dm-annual-care.tests.yaml"
CASES = shipped_cases(CASES_FILE)


def test_the_case_file_covers_enough():
    assert CASES.protocol.id == "t2dm-annual-care"
    assert len(CASES.cases) >= 12
    # every rule of the pathway is shown firing in at least one case
    fired = {r for c in CASES.cases for r in c.expect.get("rules_fired", [])}
    assert {r.id for r in CASES.protocol.rules} <= fired
    statuses = {w.get("status") for c in CASES.cases for w in (c.expect.get("care_plan") or {}).values()}
    assert {"met", "due", "overdue", "excepted"} <= statuses


@pytest.mark.parametrize("engine", ["durable", "python"])
@pytest.mark.parametrize("case", CASES.cases, ids=lambda c: c.name)
def test_case(case, engine):
    problems = check_case(CASES, case, engine)
    assert not problems, f"{CASES_FILE.name}: {case.name}\n  " + "\n  ".join(problems)


def test_a_wrong_expectation_is_caught():
    """The checker itself: flip one expectation and it must report it."""
    import copy
    case = copy.deepcopy(next(c for c in CASES.cases if c.name.startswith("HbA1c done exactly 12 months")))
    case.expect["care_plan"]["hba1c"]["status"] = "met"
    case.expect["tasks"][0]["due"] = "2026-12-03T09:00"
    case.expect["measures"]["DM020"]["numerator"] = True
    problems = check_case(CASES, case)
    assert len(problems) == 3, problems
