"""The register (population + since), resolved diagnoses, death, activity statuses, goals, rules and measures.

These go through the public entry point (engine.evaluation.evaluator.evaluate) and check its outputs.
"""
from __future__ import annotations

import datetime as dt

import pytest
from spec_support import fact, fired, record, run

VS = {"dx": ["d1", "d2"], "dx_resolved": ["r1"], "check": {"codes": ["c1"], "unit": "mmol/L"}, "declined": ["n1"],
      "bad": ["b1"]}
POPULATION = {"all": ["latest(dx) exists", "not latest(dx_resolved) after latest(dx)", "age >= 18"]}
ACTIVITY = """\
  - id: check
    title: Annual check
    every: 12 months
    done_by: latest(check)
    excepted_when: latest(declined) within 12 months
    role: nurse
"""
MEASURE = """\
  - id: M1
    title: Check value 5 or less
    denominator: not latest(bad) exists
    exclusions: [latest(declined) within 12 months]
    numerator: latest(check).value <= 5 mmol/L
    achievers_kept: {kept}
"""
REF = "2025-06-15"


@pytest.fixture
def proto(spec):
    return spec(valuesets=VS, population={"since": "earliest(dx)", **POPULATION}, activities=ACTIVITY,
                rules={"high": "latest(check).value > 8 mmol/L"}, measures=MEASURE.format(kept="true"))


def dx(day="2020-01-01", code="d1"):
    return fact(code, day, kind="condition")


# ---- register ------------------------------------------------------------------------------------------------------
def test_on_register(proto, engine_name):
    _, res = run(proto, record(dx()), REF, engine_name)
    assert res.on_register and "On the register" in res.register_why


def test_resolved_after_the_diagnosis_is_off_the_register(proto, engine_name):
    _, res = run(proto, record(dx(), fact("r1", "2022-01-01")), REF, engine_name)
    assert not res.on_register
    assert res.care_plan == [] and res.tasks == [] and res.flags == []
    assert "Not on the register" in res.register_why


def test_recoded_after_resolved_is_back_on_the_register(proto, engine_name):
    rec = record(dx(), fact("r1", "2022-01-01"), dx("2023-03-01", "d2"))
    _, res = run(proto, rec, REF, engine_name)
    assert res.on_register


def test_resolved_on_the_same_day_as_the_latest_diagnosis_stays_on(proto, engine_name):
    # `after` is strict: a resolved code on the diagnosis day does not take the patient off
    _, res = run(proto, record(dx("2022-01-01"), fact("r1", "2022-01-01")), REF, engine_name)
    assert res.on_register


def test_resolved_code_recorded_after_the_reference_date_does_not_count_yet(proto, engine_name):
    rec = record(dx(), fact("r1", "2025-07-01"))
    assert run(proto, rec, REF, engine_name)[1].on_register
    assert not run(proto, rec, "2025-07-01", engine_name)[1].on_register


def test_register_age_boundary(proto, engine_name):
    assert not run(proto, record(dx(), birth="2007-06-16"), REF, engine_name)[1].on_register
    assert run(proto, record(dx(), birth="2007-06-15"), REF, engine_name)[1].on_register


@pytest.mark.parametrize("death,dead", [("2025-06-01", True), ("2025-06-15", True), ("2025-06-16", False)])
def test_death_on_or_before_the_reference_date(proto, engine_name, death, dead):
    rec = record(dx(), fact("c1", "2025-01-01", 9, "mmol/L"), death=death)
    ev, res = run(proto, rec, REF, engine_name)
    assert ev.deceased is dead
    if dead:
        assert not res.on_register and res.care_plan == [] and res.tasks == [] and res.flags == [] and res.goals == []
        assert death in res.register_why
        (m,) = res.measures
        assert (m.initial_population, m.denominator, m.exclusion, m.numerator) == (False, False, False, False)
    else:
        assert res.on_register and {t.title for t in res.tasks} == {"Review high"}


# ---- activity status: met / due / overdue / excepted, and next due -------------------------------------------------
@pytest.mark.parametrize("done,status,next_due", [
    ("2025-04-15", "met", "2026-04-15"),      # 2 months ago
    ("2024-07-16", "met", "2025-07-16"),      # 11 months less a day: still within 12 - due_soon (1 month)
    ("2024-07-15", "due", "2025-07-15"),      # exactly 11 months: inside the due-soon month
    ("2024-07-01", "due", "2025-07-01"),      # 11.5 months
    ("2024-06-16", "due", "2025-06-16"),      # 12 months less a day
    ("2024-06-15", "overdue", "2025-06-15"),  # exactly 12 months: outside the interval
    ("2023-01-01", "overdue", "2024-01-01"),
])
def test_activity_status_by_last_done(proto, engine_name, done, status, next_due):
    _, res = run(proto, record(dx(), fact("c1", done, 5, "mmol/L")), REF, engine_name)
    (item,) = res.care_plan
    assert (item.status, item.last_done, item.next_due) == (status, dt.date.fromisoformat(done), dt.date.fromisoformat(next_due))
    assert done in item.provenance.why
    flag = next(f for f in res.flags if f.kind == "compliance")
    assert flag.level == status
    tasks = [t for t in res.tasks if t.kind == "activity"]
    assert [t.title for t in tasks] == ([f"Annual check {status}"] if status in ("due", "overdue") else [])


def test_never_done_and_joined_less_than_an_interval_ago_is_due(proto, engine_name):
    _, res = run(proto, record(dx("2025-03-01")), REF, engine_name)
    (item,) = res.care_plan
    assert (item.status, item.last_done, item.next_due) == ("due", None, dt.date(2026, 3, 1))


def test_never_done_and_joined_long_ago_is_overdue(proto, engine_name):
    _, res = run(proto, record(dx("2020-01-01")), REF, engine_name)
    (item,) = res.care_plan
    assert (item.status, item.next_due) == ("overdue", dt.date(2021, 1, 1))
    assert "no record" in item.provenance.why


def test_without_since_never_done_is_overdue_now(spec, engine_name):
    p = spec(valuesets=VS, population=POPULATION, activities=ACTIVITY)
    _, res = run(p, record(dx("2025-03-01")), REF, engine_name)
    (item,) = res.care_plan
    assert (item.status, item.next_due) == ("overdue", dt.date(2025, 6, 15))


def test_excepted_when_not_done(proto, engine_name):
    _, res = run(proto, record(dx(), fact("n1", "2025-01-01")), REF, engine_name)
    (item,) = res.care_plan
    assert item.status == "excepted" and "2025-01-01" in item.provenance.why
    assert [t for t in res.tasks if t.kind == "activity"] == []


def test_done_beats_excepted(proto, engine_name):
    _, res = run(proto, record(dx(), fact("n1", "2025-01-01"), fact("c1", "2025-03-01", 5, "mmol/L")), REF, engine_name)
    assert res.care_plan[0].status == "met"


def test_an_old_exception_does_not_apply(proto, engine_name):
    _, res = run(proto, record(dx(), fact("n1", "2024-06-15")), REF, engine_name)
    assert res.care_plan[0].status == "overdue"


def test_done_when_and_due_soon(spec, engine_name):
    activity = """\
  - id: check
    title: Annual check
    every: 12 months
    due_soon: 2 months
    done_by: latest(check)
    done_when: latest(check).value > 0 mmol/L
    role: nurse
"""
    p = spec(valuesets=VS, population=POPULATION, activities=activity)
    # 10.5 months ago: inside the 2-month due-soon window -> due
    assert run(p, record(dx(), fact("c1", "2024-08-01", 5, "mmol/L")), REF, engine_name)[1].care_plan[0].status == "due"
    assert run(p, record(dx(), fact("c1", "2024-09-01", 5, "mmol/L")), REF, engine_name)[1].care_plan[0].status == "met"
    # done_when fails (no value): not done, whatever the date
    no_value = record(dx(), fact("c1", "2025-06-01"))
    assert not {"activity:check:recent", "activity:check:in_interval"} & fired(p, no_value, REF, engine_name)
    assert run(p, no_value, REF, engine_name)[1].care_plan[0].status != "met"


def test_activity_keys(proto, engine_name):
    keys = fired(proto, record(dx(), fact("c1", "2024-07-01", 5, "mmol/L"), fact("n1", "2025-01-01")), REF, engine_name)
    assert {k for k in keys if k.startswith("activity:")} == {"activity:check:in_interval", "activity:check:excepted"}


# ---- rules, goals --------------------------------------------------------------------------------------------------
def test_rules_only_act_on_the_register(proto, engine_name):
    rec = record(dx(), fact("c1", "2025-01-01", 9, "mmol/L"), fact("r1", "2025-02-01"))
    assert "rule:high" in fired(proto, rec, REF, engine_name)  # the condition held ...
    _, res = run(proto, rec, REF, engine_name)
    assert res.tasks == [] and res.flags == []                 # ... but the patient is off the register


def test_rule_outputs(proto, engine_name):
    _, res = run(proto, record(dx(), fact("c1", "2025-01-01", 9, "mmol/L")), REF, engine_name)
    (flag,) = [f for f in res.flags if f.kind == "clinical"]
    assert flag.code == "high" and flag.level == "info"
    (task,) = [t for t in res.tasks if t.kind == "rule"]
    assert task.title == "Review high" and task.raised_at == dt.datetime(2025, 6, 15, 9, 0)
    assert "9 mmol/L" in task.provenance.why and "2025-01-01" in task.provenance.why


def test_goals(spec, engine_name):
    goals = """\
  - id: low
    title: Check value 5 or less
    when: not latest(bad) exists
    target: latest(check).value <= 5 mmol/L
"""
    p = spec(valuesets=VS, population=POPULATION, goals=goals)
    (g,) = run(p, record(dx(), fact("c1", "2025-01-01", 5, "mmol/L")), REF, engine_name)[1].goals
    assert g.status == "achieved" and "5 mmol/L" in g.provenance.why
    assert run(p, record(dx(), fact("c1", "2025-01-01", 6, "mmol/L")), REF, engine_name)[1].goals[0].status == "not-achieved"
    assert run(p, record(dx()), REF, engine_name)[1].goals[0].status == "not-achieved"
    assert run(p, record(dx(), fact("b1", "2025-01-01")), REF, engine_name)[1].goals == []  # does not apply


# ---- measures ------------------------------------------------------------------------------------------------------
def measure(res):
    (m,) = res.measures
    return m.initial_population, m.denominator, m.exclusion, m.numerator


@pytest.mark.parametrize("kept", [True, False])
def test_measure_populations(spec, engine_name, kept):
    p = spec(valuesets=VS, population=POPULATION, measures=MEASURE.format(kept=str(kept).lower()))
    run_ = lambda *facts, **kw: measure(run(p, record(*facts, **kw), REF, engine_name)[1])  # noqa: E731
    assert run_() == (False, False, False, False)                                           # not on the register
    assert run_(dx(), fact("c1", "2025-01-01", 4, "mmol/L")) == (True, True, False, True)
    assert run_(dx(), fact("c1", "2025-01-01", 6, "mmol/L")) == (True, True, False, False)
    assert run_(dx()) == (True, True, False, False)                                         # missing: not met
    assert run_(dx(), fact("b1", "2025-01-01"), fact("c1", "2025-01-01", 4, "mmol/L")) == (True, False, False, False)
    assert run_(dx(), fact("n1", "2025-01-01"), fact("c1", "2025-01-01", 6, "mmol/L")) == (True, True, True, False)
    # an achiever who also has an exclusion: QOF keeps achievers (achievers_kept: true)
    achiever = run_(dx(), fact("n1", "2025-01-01"), fact("c1", "2025-01-01", 4, "mmol/L"))
    assert achiever == ((True, True, False, True) if kept else (True, True, True, False))


def test_measure_initial_population_can_differ_from_the_register(spec, engine_name):
    measures = """\
  - id: M2
    title: Anyone with a check
    initial_population: latest(check) exists
    numerator: latest(check).value <= 5 mmol/L
"""
    p = spec(valuesets=VS, population=POPULATION, measures=measures)
    # not on the register (no diagnosis), still measured
    assert measure(run(p, record(fact("c1", "2025-01-01", 4, "mmol/L")), REF, engine_name)[1]) == (True, True, False, True)


def test_measure_why_names_the_value(spec, engine_name):
    p = spec(valuesets=VS, population=POPULATION, measures=MEASURE.format(kept="true"))
    (m,) = run(p, record(dx(), fact("c1", "2025-01-01", 6.5, "mmol/L")), REF, engine_name)[1].measures
    assert "numerator not met" in m.provenance.why and "6.5 mmol/L" in m.provenance.why
