"""Stratification outputs: `segments:` (groups a patient is in), `score:` (a number reported with its lines)
and `tiers:` (the first tier, in the order written, whose condition holds; it may act like a rule).
Run on every engine; off the register nothing is stratified."""
from __future__ import annotations

import pytest
from spec_support import fact, fired, record, run

from engine.language.errors import ProtocolError

VS = {"ltc": ["l1", "l2", "l3"], "adm": ["e1"], "home": ["c1"], "reg": ["r1"]}
DEFINE = {
    "ltcs": "count(distinct code of ltc)",
    "admissions": "count(adm within 12 months)",
    "risk": {"sum": [{"points": 3, "when": "latest(home) exists"}, "admissions", "ltcs"]},
}
STRATA = """\
score: risk
segments:
  - {id: care-home, title: Care home resident, when: latest(home) exists}
  - {id: multimorbid, title: Two or more long-term conditions, when: ltcs >= 2}
  - {id: admitted, title: Emergency admission in 12 months, when: admissions >= 1}
tiers:
  - id: case-management
    level: 3
    title: Case management
    when: risk >= 6
    because: Top of the pyramid.
    then:
      task: {title: Allocate a case manager, role: community-matron, priority: high}
      flag: {code: risk-tier-3, level: info}
      escalation: {to: mdt, title: New to case management - discuss at MDT}
  - id: disease-management
    level: 2
    title: Disease management
    when: risk >= 3
    because: Middle of the pyramid.
    then: {flag: {code: risk-tier-2, level: info}}
  - id: self-care
    level: 1
    title: Supported self-care
    when: ltcs >= 1
    because: Base of the pyramid.
"""


@pytest.fixture
def strat(spec):
    return spec(valuesets=VS, define=DEFINE, population="latest(reg) exists", extra=STRATA)


def test_the_first_tier_that_holds_is_the_tier(strat, engine_name):
    rec = record(fact("r1", "2020-01-01"), fact("c1", "2021-01-01"), fact("l1", "2020-01-01"), fact("l2", "2020-01-01"),
                 fact("e1", "2025-03-01"))
    # conditions of lower tiers hold too; only the first counts
    assert {"tier:case-management", "tier:disease-management", "tier:self-care"} <= fired(strat, rec, engine=engine_name)
    _, res = run(strat, rec, engine=engine_name)
    assert (res.tier.tier, res.tier.level, res.tier.protocol, res.tier.version) == ("case-management", 3, "spec", "1.0.0")
    assert "Case management (tier 3): risk 6 (at least 6): +3 for " in res.tier.provenance.why
    assert res.tier.provenance.why.endswith("Top of the pyramid.")
    assert res.score.value == 6.0 and res.score.provenance.why.startswith("risk 6: +3 for ")
    assert [s.segment for s in res.segments] == ["care-home", "multimorbid", "admitted"]
    tasks = {t.key.split("|", 1)[1]: t for t in res.tasks}
    assert set(tasks) == {"spec|tier:case-management", "spec|tier:case-management|escalation"}
    assert tasks["spec|tier:case-management"].assigned.role == "community-matron"
    assert [(f.code, f.key.split("|", 1)[1]) for f in res.flags] == [("risk-tier-3", "spec|tier:case-management")]


def test_lower_tiers_and_no_tier(strat, engine_name):
    _, res = run(strat, record(fact("r1", "2020-01-01"), fact("l1", "2020-01-01"), fact("l2", "2020-01-01"),
                               fact("e1", "2025-03-01")), engine=engine_name)
    assert (res.tier.tier, res.score.value, [f.code for f in res.flags]) == ("disease-management", 3.0, ["risk-tier-2"])
    assert not res.tasks
    _, res = run(strat, record(fact("r1", "2020-01-01"), fact("l3", "2020-01-01")), engine=engine_name)
    assert (res.tier.tier, res.tier.level, res.score.value, res.segments) == ("self-care", 1, 1.0, [])
    _, res = run(strat, record(fact("r1", "2020-01-01")), engine=engine_name)
    assert res.on_register and res.tier is None and res.score.value == 0.0


def test_off_the_register_nothing_is_stratified(strat, engine_name):
    _, res = run(strat, record(fact("c1", "2021-01-01"), fact("e1", "2025-03-01")), engine=engine_name)
    assert not res.on_register and res.tier is None and res.score is None and res.segments == [] and not res.flags


def test_the_evaluation_reports_the_highest_tier_of_all_protocols(spec, strat):
    from engine.evaluation.evaluator import evaluate
    from spec_support import REF
    other = spec(pid="other", valuesets=VS, define=DEFINE, extra="tiers:\n  - {id: any, level: 2, title: Any, when: 'true', because: x}\n")
    rec = record(fact("r1", "2020-01-01"), fact("l1", "2020-01-01"))
    ev = evaluate(rec, [strat, other], as_of=REF)
    assert (ev.tier.protocol, ev.tier.tier) == ("other", "any")
    assert evaluate(record(), [strat], as_of=REF).tier is None


def test_a_missing_score_is_reported_missing(spec, engine_name):
    p = spec(valuesets={"h": {"codes": ["h1"], "unit": "mmol/mol"}}, define={"s": {"sum": ["latest(h).value"]}},
             extra="score: s\ntiers:\n  - {id: t, level: 1, title: T, when: s >= 0 mmol/mol, because: x}\n")
    _, res = run(p, record(), engine=engine_name)
    assert res.score.value is None and "missing" in res.score.provenance.why and res.tier is None


@pytest.mark.parametrize("extra, message", [
    ("score: rsik\n", "score 'rsik' is not a definition (expected the name of a number under define); did you mean 'risk'"),
    ("score: is_old\n", "score 'is_old' is a condition, not a number"),
    ("tiers:\n  - {id: a, level: 2, title: A, when: risk > 1, because: x}\n  - {id: b, level: 2, title: B, when: risk > 0, because: x}\n",
     "tier 'b' has the same level (2) as tier 'a'"),
    ("tiers:\n  - {id: a, level: high, title: A, when: risk > 1, because: x}\n", "tier level 'high' should be a whole number"),
    ("tiers:\n  - {id: a, level: 1, title: A, when: risk > 1}\n", "a tier is missing 'because'"),
    ("segments:\n  - {id: a, title: A, when: rsk > 1}\n", "did you mean 'risk'"),
    ("tiers:\n  - {id: a, level: 1, title: A, when: risk > 1, because: x}\n  - {id: a, level: 2, title: A, when: risk > 1, because: x}\n",
     "duplicate tier id 'a'"),
])
def test_load_errors(spec, extra, message):
    with pytest.raises(ProtocolError) as e:
        spec(valuesets={"a": ["a1"]}, define={"risk": "count(a)", "is_old": "age > 80"}, extra=extra)
    assert message in str(e.value)


def test_an_activity_with_when_is_only_for_part_of_the_register(spec, engine_name):
    acts = """\
  - id: review
    title: Frailty review
    when: latest(frail) exists
    every: 12 months
    done_by: latest(review)
    role: gp
"""
    p = spec(valuesets={"frail": ["f1"], "review": ["v1"]}, activities=acts)
    _, res = run(p, record(), engine=engine_name)
    assert res.on_register and res.care_plan == [] and res.tasks == []
    _, res = run(p, record(fact("f1", "2025-01-01")), engine=engine_name)
    assert [(i.activity, i.status) for i in res.care_plan] == [("review", "overdue")]
    _, res = run(p, record(fact("f1", "2025-01-01"), fact("v1", "2025-03-01")), engine=engine_name)
    assert [(i.activity, i.status) for i in res.care_plan] == [("review", "met")]
