"""Every shipped protocol's own cases (protocols/*.tests.yaml), in the default test run.

`carepath test protocols/` runs the same files. A case file names its protocol version; the 1.0.0 diabetes
cases (t2dm-annual-care.tests.yaml) run in test_t2dm.py on two engines and are not repeated here.
Coverage rules for the library: every pathway (latest version of each id, eCQMs aside) has a case file with
at least 10 cases, and every one of its rules and tiers is shown firing in at least one case (a rule that
depends on a declared codelist not supplied is shown as undetermined instead).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from protocol_cases import (case_files, protocol_text, repeated_by_a_higher_version, run_case, shipped_cases,
                            shipped_library)

from engine.language.library import version_key

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ROOT / "protocols"
COVERED_ELSEWHERE = {"t2dm-annual-care.tests.yaml"}  # tests/protocols/test_t2dm.py
FILES = {f.name: shipped_cases(f) for f in case_files([PROTOCOLS])}
# a version re-issued unchanged by a higher one (asthma 1.1.0 by 1.1.1) has the same cases on the same text: they run
# once, on the higher version (test_a_version_brought_forward_is_its_predecessors_text_and_cases checks both)
REPEATED = repeated_by_a_higher_version(shipped_library())
CASES = [(name, c) for name, cf in sorted(FILES.items())
         if name not in COVERED_ELSEWHERE and cf.protocol.key not in REPEATED for c in cf.cases]


@pytest.mark.parametrize("file_name, case", CASES, ids=[f"{n}::{c.name}" for n, c in CASES])
def test_case(file_name, case):
    outcome = run_case(FILES[file_name], case, "durable")
    assert outcome.passed, (f"{file_name}:{case.line}: {case.name}\n  " + "\n  ".join(outcome.problems)
                            + "\n  why:\n    " + "\n    ".join(outcome.why))


def _latest_pathways():
    lib = shipped_library()
    latest = {}
    for p in lib.protocols:
        if "ecqm" in Path(p.source).parts or p.status == "retired":
            continue
        if p.id not in latest or version_key(p.version) > version_key(latest[p.id].version):
            latest[p.id] = p
    return latest


LATEST = _latest_pathways()


@pytest.mark.parametrize("key", sorted(p.key for p in LATEST.values()))
def test_every_pathway_version_has_at_least_ten_cases(key):
    files = [cf for cf in FILES.values() if cf.protocol.key == key]
    assert files, f"{key}: no case file names this version (add <protocol>.tests.yaml beside it)"
    assert sum(len(cf.cases) for cf in files) >= 10


@pytest.mark.parametrize("key", sorted(p.key for p in LATEST.values()))
def test_every_rule_and_tier_is_shown_firing(key):
    proto = next(p for p in LATEST.values() if p.key == key)
    files = [cf for cf in FILES.values() if cf.protocol.key == key]
    shown = set()
    for cf in files:
        for c in cf.cases:
            shown |= set(c.expect.get("rules_fired") or [])
            # a rule that needs a declared cluster the library does not ship is shown as "cannot determine"
            # (its firing, with the cluster supplied, is shown by a test with site files, e.g.
            # test_frailty_with_site_codelists.py)
            shown |= {str(x).split(":", 1)[-1] for x in c.expect.get("cannot_determine") or []}
            if c.expect.get("tier") not in (None, "none"):
                shown.add(f"tier:{c.expect['tier']}")
            shown |= {f"title:{t['title'] if isinstance(t, dict) else t}" for t in c.expect.get("tasks") or []}
    # a rule that waits for a declared codelist no site has supplied cannot fire: a case shows it undetermined
    undetermined = {str(x).split(":", 1)[-1] for cf in files for c in cf.cases for x in c.expect.get("cannot_determine") or []}
    shown |= {r.id for r in proto.rules if f"rule:{r.id}" in proto.undetermined and r.id in undetermined}
    missing = [r.id for r in proto.rules if r.id not in shown and not (r.task and f"title:{r.task.title}" in shown)]
    missing += [f"tier:{t.id}" for t in proto.tiers if f"tier:{t.id}" not in shown]
    assert not missing, f"{key}: no case shows these firing: {missing}"


def test_a_wrong_expectation_is_reported_with_expected_actual_and_why():
    import copy
    cf = FILES["hypertension.tests.yaml"]
    case = copy.deepcopy(next(c for c in cf.cases if c.name.startswith("Severe hypertension")))
    case.expect["tasks"][0]["due"] = "2026-11-20T17:00"
    case.expect["flags"]["severe-hypertension"] = "amber"
    out = run_case(cf, case, "python")
    assert not out.passed and len(out.problems) == 2
    assert "expected due 2026-11-20 17:00:00, got 2026-11-20 13:00:00" in out.problems[0]
    assert "flag severe-hypertension: expected amber, got red" in out.problems[1]
    assert any(w.startswith("task 'Same-day assessment for target-organ damage': NG136") for w in out.why)


def _reissues():
    """(older, newer) where a higher published version takes effect before the older one's date: the older one is
    never in force. The shipped library does this only to bring a version forward unchanged (asthma 1.1.1 is
    1.1.0 from 2026-12-07 instead of 2027-04-01)."""
    lib = shipped_library()
    never = lib.never_in_force()
    out = []
    for older in sorted((p for p in lib.protocols if p.key in never), key=lambda p: p.key):
        higher = [p for p in lib.protocols if p.id == older.id and p.status == "active"
                  and version_key(p.version) > version_key(older.version)]
        following = min(higher, key=lambda p: version_key(p.version))
        if following.effective < older.effective:
            out.append((older, following))
    return out


REISSUES = _reissues()


def test_the_versions_brought_forward_are_found():
    assert {(o.key, n.key) for o, n in REISSUES} >= {("t2dm-annual-care@1.4.0", "t2dm-annual-care@1.4.1"),
                                                     ("asthma@1.1.0", "asthma@1.1.1")}


@pytest.mark.parametrize("older, newer", REISSUES, ids=[n.key for _, n in REISSUES])
def test_a_version_brought_forward_is_its_predecessors_text_and_cases(older, newer):
    """A version published to take effect before the one it pre-empts must say and do exactly what that one says:
    only its version, status and effective date (and header comments) differ; its cases are the same cases."""
    assert newer.id == older.id and newer.status == older.status == "active"
    assert protocol_text(newer.source) == protocol_text(older.source)
    old_cases = [cf for cf in FILES.values() if cf.protocol.key == older.key]
    new_cases = [cf for cf in FILES.values() if cf.protocol.key == newer.key]
    assert old_cases and new_cases
    assert ([(c.name, c.as_of, c.expect) for cf in new_cases for c in cf.cases]
            == [(c.name, c.as_of, c.expect) for cf in old_cases for c in cf.cases])
