"""The shipped role agreements: each change of pilot-area-roles / central-locality-roles 1.1.0 shown on a patient
from the protocols' own cases, failing on 1.0.0 and passing on 1.1.0.

- referral tasks for patients nobody has referred go to the practice, the task being the referral (renal,
  heart failure service, NHS Talking Therapies, frailty clinic, pulmonary rehabilitation, home oxygen, Care Act);
- the two diabetes foot services (NICE NG19): active foot problem -> multidisciplinary foot care service (acute),
  moderate / high risk -> foot protection service (community podiatry), in Central too;
- structured education: a provider and a role that belong together;
- opening hours: no task of a GP practice falls due while it is closed; 24/7 services run through the night.
"""
from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
from protocol_cases import protocol_text, shipped_cases, shipped_library

from engine.calendar import parse_response
from engine.evaluation.evaluator import Options, evaluate
from engine.language.agreements import load_agreement, resolve
from engine.language.library import version_key

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ROOT / "protocols"
AGREEMENTS = PROTOCOLS / "agreements"
GENERATIONS = {  # in the order the library gives agreements in force (by id)
    "1.0.0": [load_agreement(AGREEMENTS / "central-locality-roles.yaml"), load_agreement(AGREEMENTS / "pilot-area-roles.yaml")],
    "1.1.0": [load_agreement(AGREEMENTS / "central-locality-roles@1.1.0.yaml"),
              load_agreement(AGREEMENTS / "pilot-area-roles@1.1.0.yaml")],
}
_FILES: dict[str, object] = {}
FRIDAY_1600 = dt.datetime(2026, 11, 20, 16, 0)
SATURDAY_2300 = dt.datetime(2026, 11, 21, 23, 0)


def _case(file_name: str, name_start: str):
    if file_name not in _FILES:
        _FILES[file_name] = shipped_cases(PROTOCOLS / file_name)
    cf = _FILES[file_name]
    case = next(c for c in cf.cases if c.name.startswith(name_start))
    return cf, case


def task(generation: str, file_name: str, name_start: str, source: str, raised: dt.datetime | None = None,
         agreements: list | None = None, escalation: bool = False, **patient):
    """The task `source` (rule:<id>) raised (at `raised`, default 09:00 on the case's date) for the patient of a shipped
    case, assigned by one generation of the agreements (or the `agreements` given)."""
    cf, case = _case(file_name, name_start)
    record = copy.deepcopy(case.record)
    for k, v in patient.items():
        setattr(record.patient, k, v)
    ev = evaluate(record, [cf.protocol_for(case)], agreements if agreements is not None else GENERATIONS[generation],
                  as_of=case.as_of, options=Options(engine="python", raised_at=raised))
    found = [t for t in ev.protocols[0].tasks if t.provenance.source == source and (t.kind == "escalation") == escalation]
    assert len(found) == 1, f"{name_start}: no single task for {source} (have {[t.title for t in ev.protocols[0].tasks]})"
    return found[0]


def _who(t) -> tuple:
    return t.assigned.provider, t.assigned.team, t.assigned.role


# ---- referral tasks go to the practice, the task being the referral ---------------------------------------------------
REFERRALS = [
    # (case file, case, rule, patient changes, (provider, team, role) from 1.1.0, task title from 1.1.0)
    ("t2dm-annual-care.tests.yaml", "eGFR 28", "rule:egfr-below-30", {},
     ("gp-practices", "GP", "gp"), "Refer to renal medicine (eGFR below 30)"),
    ("t2dm-annual-care@1.1.0.tests.yaml", "eGFR 29 in North", "rule:egfr-below-30", {},
     ("gp-practices", "GP", "gp"), "Refer to renal medicine (eGFR below 30)"),
    ("t2dm-annual-care.tests.yaml", "Urine ACR 70 -", "rule:acr-70-or-more", {},
     ("gp-practices", "GP", "gp"), "Refer to renal medicine (ACR 70 or more), unless due to diabetes already optimally treated"),
    ("t2dm-annual-care@1.1.0.tests.yaml", "HbA1c 80 and ACR 75 in East", "rule:acr-70-or-more", {},
     ("gp-practices", "GP", "gp"), "Refer to renal medicine (ACR 70 or more), unless due to diabetes already optimally treated"),
    ("heart-failure.tests.yaml", "Two emergency admissions", "rule:repeated-admissions", {},
     ("gp-practices", "GP", "gp"), "Refer to the heart failure service (cardiology) after repeated admissions"),
    ("depression.tests.yaml", "PHQ-9 16 this month", "rule:talking-therapies", {},
     ("gp-practices", "GP", "gp"), "Offer NHS Talking Therapies: refer, or help the patient to self-refer"),
    ("depression.tests.yaml", "PHQ-9 16 this month", "rule:talking-therapies",
     {"locality": "north", "mdt": "north-1", "practice": "E96609"},
     ("gp-practices", "GP", "gp"), "Offer NHS Talking Therapies: refer, or help the patient to self-refer"),
    ("frailty.tests.yaml", "Severe frailty, two admissions", "rule:comprehensive-geriatric-assessment", {},
     ("gp-practices", "GP", "gp"), "Refer to the frailty clinic (care of the elderly) for a comprehensive geriatric assessment"),
    ("copd.tests.yaml", "SpO2 92% on air", "rule:low-oxygen-saturation", {},
     ("gp-practices", "GP", "gp"), "Refer for long-term oxygen assessment"),  # the protocol's GP task, kept
    ("copd.tests.yaml", "Admitted 2 weeks ago", "rule:rehab-after-admission", {},
     ("gp-practices", "practice nursing", "practice-nurse"), "Refer to pulmonary rehabilitation (to start within 4 weeks of discharge)"),
    ("frailty.tests.yaml", "Severe frailty and no carer", "rule:care-act-assessment", {},
     ("pcn-care-coordinators", "care coordinators", "care-coordinator"), "Refer to adult social care for a Care Act needs assessment"),
]


@pytest.mark.parametrize("file_name, case, source, patient, who, title", REFERRALS,
                         ids=[f"{r[2]}:{r[1]}" for r in REFERRALS])
def test_a_referral_task_goes_to_the_practice_as_the_referral(file_name, case, source, patient, who, title):
    new = task("1.1.0", file_name, case, source, **patient)
    assert (_who(new), new.title, new.assigned.agreement.split("@")[1]) == (who, title, "1.1.0")
    old = task("1.0.0", file_name, case, source, **patient)
    assert old.assigned.provider != who[0]  # 1.0.0: the service the patient was never referred to


# ---- the two diabetes foot services (NICE NG19) ------------------------------------------------------------------------
def test_central_active_foot_problem_goes_to_the_multidisciplinary_foot_care_service():
    name = "Active foot ulcer seen this week"
    new = task("1.1.0", "t2dm-annual-care.tests.yaml", name, "rule:active-foot-problem")
    assert _who(new) == ("acute-foot-mdt", "multidisciplinary foot care service", "podiatrist")
    old = task("1.0.0", "t2dm-annual-care.tests.yaml", name, "rule:active-foot-problem")
    assert old.assigned.provider == "community-podiatry"  # 1.0.0: the foot protection service
    # every locality: the acute multidisciplinary foot care service, never the foot protection service
    for loc, mdt, practice in (("south", "south-1", "G07098"), ("north", "north-1", "E96609")):
        t = task("1.1.0", "t2dm-annual-care.tests.yaml", name, "rule:active-foot-problem", locality=loc, mdt=mdt, practice=practice)
        assert (t.assigned.provider, t.assigned.team) == ("acute-diabetology", "multidisciplinary foot care service")


@pytest.mark.parametrize("case, source", [("High foot risk 2 months ago", "rule:foot-high-risk-refer"),
                                          ("Moderate foot risk 11 months ago", "rule:foot-moderate-risk-refer")])
def test_central_foot_risk_referrals_go_to_the_foot_protection_service_by_its_own_agreement(case, source):
    central_new, central_old = GENERATIONS["1.1.0"][0], GENERATIONS["1.0.0"][0]
    new = task("", "t2dm-annual-care@1.1.0.tests.yaml", case, source, agreements=[central_new])
    assert _who(new) == ("community-podiatry", "foot protection service", "podiatrist")
    old = task("", "t2dm-annual-care@1.1.0.tests.yaml", case, source, agreements=[central_old])
    assert old.assigned.team == "practice nursing"  # 1.0.0 alone: the pathway's wildcard, a practice nurse
    with_area = task("1.1.0", "t2dm-annual-care@1.1.0.tests.yaml", case, source)
    assert with_area.assigned.provider == "community-podiatry"


# ---- structured education: provider and role belong together -----------------------------------------------------------
PRACTICE_ROLES = {"gp", "practice-nurse", "healthcare-assistant"}


def test_structured_education_provider_and_role_agree():
    name = "Diagnosed 4 months ago, not referred to education"
    for generation, consistent in (("1.1.0", True), ("1.0.0", False)):
        t = task(generation, "t2dm-annual-care@1.1.0.tests.yaml", name, "rule:structured-education")
        kind = GENERATIONS[generation][1].parties[t.assigned.provider]
        assert ((t.assigned.role in PRACTICE_ROLES) == (kind == "gp")) is consistent, (generation, _who(t), kind)
    t = task("1.1.0", "t2dm-annual-care@1.1.0.tests.yaml", name, "rule:structured-education")
    assert _who(t) == ("gp-practices", "practice nursing", "practice-nurse")
    assert t.title == "Refer to diabetes structured education"  # the protocol's practice-nurse task, kept


# ---- opening hours ------------------------------------------------------------------------------------------------------
def _gp_open(when: dt.datetime) -> bool:
    return GENERATIONS["1.1.0"][1].hours["gp-practices"].is_open(when) or when.time() == dt.time(18, 30)


def test_a_same_day_duty_gp_task_raised_friday_afternoon_is_due_before_the_practice_closes():
    name = "Severe hypertension 182/100"
    new = task("1.1.0", "hypertension.tests.yaml", name, "rule:severe-hypertension", raised=FRIDAY_1600)
    assert new.due == dt.datetime(2026, 11, 20, 18, 30) and _gp_open(new.due)
    old = task("1.0.0", "hypertension.tests.yaml", name, "rule:severe-hypertension", raised=FRIDAY_1600)
    assert old.due == dt.datetime(2026, 11, 20, 20, 0) and not _gp_open(old.due)  # 4 wall-clock hours: closed


def test_raised_at_the_weekend_a_duty_gp_task_is_due_when_the_practice_opens_and_the_crisis_team_works_the_night():
    name = "PHQ-9 item 9 scored 1 yesterday"
    gp_new = task("1.1.0", "depression.tests.yaml", name, "rule:self-harm-thoughts", raised=SATURDAY_2300)
    gp_old = task("1.0.0", "depression.tests.yaml", name, "rule:self-harm-thoughts", raised=SATURDAY_2300)
    assert gp_new.due == dt.datetime(2026, 11, 23, 8, 0)  # Monday 08:00
    assert gp_old.due == dt.datetime(2026, 11, 22, 3, 0) and not _gp_open(gp_old.due)  # Sunday 03:00, closed
    crisis = task("1.1.0", "depression.tests.yaml", name, "rule:self-harm-thoughts", raised=SATURDAY_2300, escalation=True)
    assert (crisis.assigned.provider, crisis.due) == ("community-mental-health", dt.datetime(2026, 11, 22, 3, 0))


def test_urgent_community_response_runs_round_the_clock():
    t = task("1.1.0", "frailty.tests.yaml", "Severe frailty and a fall yesterday", "rule:fall-at-home-crisis",
             raised=SATURDAY_2300)
    assert (t.assigned.provider, t.due) == ("urgent-community-response", dt.datetime(2026, 11, 22, 1, 0))  # Sunday 01:00


def test_a_deadline_on_a_bank_holiday_moves_to_the_last_opening_time_before_it():
    # ACR 70: the 6-week clinical limit from Friday 20 November 2026 16:00 is New Year's Day 16:00, a bank holiday;
    # with 40 working days agreed (a test agreement) the clinical limit is the earlier and moves to 31 December 18:30
    from engine.language.agreements import Assign
    central = copy.deepcopy(GENERATIONS["1.1.0"][0])
    entry = next(a for a in central.assigns if a.target == "rule:acr-70-or-more")
    central.assigns = [Assign(**{**entry.__dict__, "respond": {"routine": parse_response("40 working days")}})]
    t = task("", "t2dm-annual-care.tests.yaml", "Urine ACR 70 -", "rule:acr-70-or-more", raised=FRIDAY_1600, agreements=[central])
    assert t.due == dt.datetime(2026, 12, 31, 18, 30)
    old = copy.deepcopy(central)
    old.hours = {}  # the same agreement without opening hours: due on the bank holiday
    assert task("", "t2dm-annual-care.tests.yaml", "Urine ACR 70 -", "rule:acr-70-or-more", raised=FRIDAY_1600,
                agreements=[old]).due == dt.datetime(2027, 1, 1, 16, 0)


# ---- the library: which version is in force, and every pathway assigned ---------------------------------------------
def test_the_new_agreements_take_effect_on_7_december_2026():
    """Published for 1 April 2027 (1.1.0), brought forward unchanged as 1.1.1 from 7 December 2026 (issue 13)."""
    lib = shipped_library()
    old, new = {"central-locality-roles@1.0.0", "pilot-area-roles@1.0.0"}, {"central-locality-roles@1.1.1", "pilot-area-roles@1.1.1"}
    assert {a.key for a in lib.agreements_in_force(dt.date(2026, 12, 6))} == old
    for day in (dt.date(2026, 12, 7), dt.date(2027, 3, 31), dt.date(2027, 4, 1)):
        assert {a.key for a in lib.agreements_in_force(day)} == new
    source = {a.key: a.source for a in lib.agreements}
    for agreement in ("central-locality-roles", "pilot-area-roles"):  # the same text, only the date differs
        assert protocol_text(source[f"{agreement}@1.1.1"]) == protocol_text(source[f"{agreement}@1.1.0"])


def test_every_pathway_task_is_assigned_in_every_mdt_to_a_party_with_opening_hours():
    lib = shipped_library()
    latest = {}
    for p in lib.protocols:
        if "ecqm" not in Path(p.source).parts and (p.id not in latest or version_key(p.version) > version_key(latest[p.id].version)):
            latest[p.id] = p
    agreements = GENERATIONS["1.1.0"]
    mdts = [(loc, mdt) for loc, ms in agreements[1].localities.items() for mdt in ms]
    missing, without_hours = [], []
    for proto in latest.values():
        targets = [a.id for a in proto.activities] + [f"rule:{r.id}" for r in proto.rules if r.task]
        targets += [f"tier:{t.id}" for t in proto.tiers if getattr(t, "task", None)]
        for target in targets:
            for loc, mdt in mdts:
                r = resolve(agreements, proto.id, target, {"locality": loc, "mdt": mdt, "practice": None})
                if r is None:
                    missing.append(f"{proto.key}/{target} in {mdt}")
                elif r.hours is None:
                    without_hours.append(f"{proto.key}/{target}: {r.assign.provider}")
    assert not missing
    assert not without_hours
