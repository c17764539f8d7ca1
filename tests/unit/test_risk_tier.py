"""engine/evaluation/risk.py: the tier the worklist and MDT lists use, from fresh or stored evaluations."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from engine.evaluation.evaluator import evaluate
from engine.evaluation.risk import mdt_reasons, patient_tier, worklist_priority
from tests.unit.cached import shipped_library
from engine.records.model import Fact, Patient, PatientRecord

ROOT = Path(__file__).resolve().parents[2]
REF = dt.date(2026, 11, 20)


def _patient(*facts):
    return PatientRecord(patient=Patient(nhs_number="9434765919", birth_date="1950-01-01", practice="E96609",
                                         locality="north", mdt="north-1"), facts=list(facts))


def _fact(fid, code, day, **kw):
    return Fact(id=fid, kind=kw.pop("kind", "condition"), codes=[{"system": "snomed", "code": code}], start=day, **kw)


def test_tier_from_an_evaluation_and_from_the_stored_result():
    lib = shipped_library()
    rec = _patient(_fact("c", "195951007", "2015-01-01"), _fact("h", "10633002", "2019-01-01"),
                   _fact("a1", "32485007", "2026-03-01", kind="encounter", care_setting="acute"),
                   _fact("a2", "32485007", "2026-08-01", kind="encounter", care_setting="acute"))
    ev = evaluate(rec, lib.in_force(REF), lib.agreements_in_force(REF), as_of=REF)
    t = patient_tier(ev)
    assert (t.level, t.tier, t.protocol) == (3, "case-management", "risk-stratification")
    stored = {p.protocol: p.model_dump(mode="json") for p in ev.protocols}
    assert patient_tier(stored) == t
    # results stored before `tier` existed: the risk-tier-<n> flag
    old = {"risk-stratification": {"flags": [{"code": "risk-tier-2"}, {"code": "other"}]}}
    assert patient_tier(old).level == 2
    assert patient_tier({}) is None and patient_tier(None) is None


def test_worklist_priority_orders_by_priority_then_tier_then_lateness():
    now = dt.datetime(2026, 11, 20, 9)
    later = now + dt.timedelta(days=10)
    assert worklist_priority("urgent", None, later, now) > worklist_priority("high", 3, later, now)
    assert worklist_priority("routine", 3, later, now) > worklist_priority("routine", 1, later, now)
    assert worklist_priority("routine", 1, now - dt.timedelta(days=14), now) > worklist_priority("routine", 1, later, now)
    assert worklist_priority("routine", 1, now - dt.timedelta(days=400), now) == 2 * worklist_priority("routine", 1, later, now)


def test_mdt_reasons():
    assert mdt_reasons(1) == []
    assert mdt_reasons(3, new_escalations=1) == ["case management (risk tier 3)", "1 new escalation(s)"]
    assert mdt_reasons(None, overdue_urgent=2, red_flags=1) == ["2 overdue urgent or high task(s)", "1 red flag(s)"]


def test_why_lines_are_words_not_formulas_and_say_a_reason_once():
    """Issue 16 item 10: the risk tier's why read "risk score 9 (>= 8) = +3 ..." and the falls why repeated
    itself. Relations are words; score points read "+3 for ..."; the same reason appears once."""
    from engine.evaluation.explain import RELATION_WORDS, _unique

    assert RELATION_WORDS[">="] == "at least" and RELATION_WORDS["<"] == "below"
    assert _unique(["no falls assessment recorded", "fall on 2026-10-01", "no falls assessment recorded"]) == [
        "no falls assessment recorded", "fall on 2026-10-01"]
