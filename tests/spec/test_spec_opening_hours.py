"""Spec: task due times follow the assigned provider's opening hours (role agreement `hours:`), on every engine.

Due times are computed after the engine has decided which conditions held (engine.evaluation.evaluator), so
each engine must give the same due times; these run the same small protocol and agreement on each.
"""
from __future__ import annotations

import datetime as dt

from spec_support import fact, record, write_protocol

from engine.evaluation.evaluator import Options, evaluate
from engine.language.agreements import load_agreement
from engine.language.loader import load_protocol

PROTOCOL = """\
protocol: spec-hours
version: 1.0.0
title: Spec protocol
status: draft
effective: 2020-01-01
owner: spec tests
evidence: [spec]
valuesets:
  marker: {codes: [m1]}
population: 'age >= 0'
rules:
  - id: duty-gp
    when: 'latest(marker) exists'
    then: {task: {title: Duty GP task, role: gp, priority: urgent}}
    because: spec
  - id: same-day
    when: 'latest(marker) exists'
    then: {task: {title: Same-day GP task, role: gp, priority: urgent, within: 1 days}}
    because: spec
  - id: crisis
    when: 'latest(marker) exists'
    then: {task: {title: Crisis response, role: ucr-clinician, priority: urgent}}
    because: spec
  - id: specialist
    when: 'latest(marker) exists'
    then: {task: {title: Specialist review, role: consultant, priority: routine}}
    because: spec
  - id: own-referral
    when: 'latest(marker) exists'
    then: {task: {title: Consider a referral to the clinic, role: gp, priority: routine}}
    because: spec
"""

AGREEMENT = """\
agreement: spec-roles
version: 1.0.0
title: Spec roles
owner: spec tests
parties:
  - {id: practice, kind: gp, hours: {weekdays: "08:00-18:30", bank_holidays: closed}}
  - {id: ucr, kind: community, hours: 24/7}
  - {id: clinic, kind: acute, name: Specialist clinic}
assign:
  - {activity: spec-hours/*, provider: practice, respond: {urgent: 4 hours, routine: 5 working days}}
  - {activity: spec-hours/rule:crisis, provider: ucr, respond: {urgent: 2 hours}}
  - {activity: spec-hours/rule:specialist, provider: practice, role: gp, refer_to: clinic, respond: {routine: 1 working days}}
  - {activity: spec-hours/rule:own-referral, provider: practice, role: gp, refer_to: clinic, action: Refer, respond: {routine: 1 working days}}
"""


def _tasks(tmp_path, engine_name, raised: dt.datetime) -> dict:
    proto = load_protocol(write_protocol(tmp_path, PROTOCOL))
    (tmp_path / "roles.yaml").write_text(AGREEMENT, encoding="utf-8")
    agreement = load_agreement(tmp_path / "roles.yaml")
    rec = record(fact("m1", "2026-01-05"))
    ev = evaluate(rec, [proto], [agreement], as_of=raised.date(), options=Options(engine=engine_name, raised_at=raised))
    return {t.provenance.source: t for t in ev.protocols[0].tasks}


def test_four_hours_at_a_practice_run_in_its_opening_hours(tmp_path, engine_name):
    # Friday 16:00: 2.5 hours to the 18:30 close, then 1.5 hours from Monday 08:00
    assert _tasks(tmp_path, engine_name, dt.datetime(2026, 11, 20, 16, 0))["rule:duty-gp"].due == dt.datetime(2026, 11, 23, 9, 30)
    # Friday 16:30: 2 hours on Friday, 2 on Monday
    assert _tasks(tmp_path, engine_name, dt.datetime(2026, 11, 20, 16, 30))["rule:duty-gp"].due == dt.datetime(2026, 11, 23, 10, 0)
    # before the spring bank holiday (Monday 31 May 2027): Tuesday
    assert _tasks(tmp_path, engine_name, dt.datetime(2027, 5, 28, 16, 30))["rule:duty-gp"].due == dt.datetime(2027, 6, 1, 10, 0)


def test_a_round_the_clock_service_is_due_in_the_night(tmp_path, engine_name):
    tasks = _tasks(tmp_path, engine_name, dt.datetime(2026, 11, 21, 23, 0))  # Saturday 23:00
    assert tasks["rule:crisis"].due == dt.datetime(2026, 11, 22, 1, 0)  # Sunday 01:00
    assert tasks["rule:crisis"].assigned.provider == "ucr"
    assert tasks["rule:duty-gp"].due == dt.datetime(2026, 11, 23, 12, 0)  # the practice: Monday 08:00 + 4 hours


def test_a_clinical_deadline_in_closed_time_moves_back_to_the_last_closing_time(tmp_path, engine_name):
    # same day, raised Friday 16:00: `within: 1 days` is Saturday 16:00 with the practice closed -> Friday 18:30
    tasks = _tasks(tmp_path, engine_name, dt.datetime(2026, 11, 20, 16, 0))
    assert tasks["rule:same-day"].due == dt.datetime(2026, 11, 20, 18, 30)
    # raised on Saturday morning: the practice first opens on Monday, 08:00
    tasks = _tasks(tmp_path, engine_name, dt.datetime(2026, 11, 21, 10, 0))
    assert tasks["rule:same-day"].due == dt.datetime(2026, 11, 23, 8, 0)


def test_working_days_skip_bank_holidays_and_a_referral_task_names_the_service(tmp_path, engine_name):
    # 1 working day from Thursday 24 December 2026: Christmas Day (Fri) and Boxing Day observed (Mon 28th) skipped
    tasks = _tasks(tmp_path, engine_name, dt.datetime(2026, 12, 24, 9, 0))
    assert tasks["rule:specialist"].due == dt.datetime(2026, 12, 29, 9, 0)
    # the referral is the practice's task, named for the clinic it goes to
    assert tasks["rule:specialist"].title == "Refer to Specialist clinic: Specialist review"
    assert (tasks["rule:specialist"].assigned.provider, tasks["rule:specialist"].assigned.role) == ("practice", "gp")
    # a task the protocol already gives to the GP keeps the protocol's own words
    assert tasks["rule:own-referral"].title == "Consider a referral to the clinic"
