"""Random small patients, dated and valued around every threshold: every engine agrees with the reference.

The plain-Python evaluation of the lowered conditions (engine="python") is the reference; each engine in
ENGINES must give the same fired condition keys and the same Evaluation (model_dump), item for item
(the reference itself is checked against durable-rules).
"""
from __future__ import annotations

import datetime as dt
import random

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_support import fired, nhs, protocol_text, write_protocol

from engine.evaluation.evaluator import Options, evaluate
from engine.language.loader import load_protocol
from engine.records.model import Fact, Patient, PatientRecord

VALUESETS = {
    "dx": ["d1"], "dx_resolved": ["r1"], "invite": ["i1"], "declined": ["n1"], "frail": ["f1"],
    "hba1c": {"codes": ["h1"], "unit": "mmol/mol", "analyte": "hba1c"},
    "sbp": {"codes": ["s1"], "unit": "mmHg"},
}
DEFINE = {
    "last_hba1c": "latest(hba1c) within 12 months",
    "is_frail": "latest(frail) exists",
    "invited_twice": "count(invite within 12 months) >= 2 and not (latest(invite within 12 months) within 6 days after "
                     "earliest(invite within 12 months))",
}
RULES = {
    "high": "last_hba1c.value >= 58 mmol/mol and not is_frail",
    "high_pct": "last_hba1c.value >= 7.5 %",
    "very_high": "max(hba1c within 12 months).value > 75 mmol/mol",
    "low_twice": "count(hba1c where value < 48 mmol/mol) >= 2",
    "bp": "age < 80 and latest(sbp within 12 months).value >= 140 mmHg or age >= 80 and latest(sbp within 12 months).value >= 150 mmHg",
    "bp_after_hba1c": "latest(sbp) after latest(hba1c)",
    "bp_soon_after": "sbp within 30 days after latest(hba1c)",
    "bp_just_before": "sbp within 2 weeks before earliest(hba1c)",
    "in_period": "hba1c during period",
    "frail_overlaps": "frail overlaps period",
    "no_value": "last_hba1c.value is missing",
    "none": "last_hba1c is missing",
    "final": "count(hba1c where status in ('final', 'amended')) >= 1",
    "old_at_start": "age_at_period_start >= 65",
    "lowest": "min(hba1c).value <= 48 mmol/mol",
    "dates": "latest(hba1c).date >= period_start and earliest(dx) before latest(hba1c)",
    "nested": {"any": [{"all": ["is_frail", {"not": "last_hba1c.value > 75 mmol/mol"}]}, {"not": "latest(sbp) exists"}]},
    "invited": "invited_twice",
}
ACTIVITIES = """\
  - id: hba1c
    title: HbA1c check
    every: 12 months
    done_by: latest(hba1c)
    excepted_when: latest(declined) within 12 months or invited_twice
    role: nurse
  - id: bp
    title: Blood pressure
    every: 26 weeks
    due_soon: 2 weeks
    done_by: latest(sbp)
    done_when: latest(sbp).value > 0 mmHg
    role: hca
"""
GOALS = """\
  - id: g48
    title: HbA1c 48 or below
    when: not is_frail
    target: last_hba1c.value <= 48 mmol/mol
"""
MEASURES = """\
  - id: M1
    title: HbA1c 58 or below
    denominator: not is_frail and not (earliest(dx) within 9 months)
    exclusions: [latest(declined) within 12 months, invited_twice]
    numerator: last_hba1c.value <= 58 mmol/mol
    achievers_kept: true
  - id: M2
    title: HbA1c 75 or below (frail)
    denominator: is_frail
    exclusions: [latest(declined) within 12 months]
    numerator: last_hba1c.value <= 75 mmol/mol
"""
POPULATION = {"since": "earliest(dx)",
              "all": ["latest(dx) exists", "not latest(dx_resolved) after latest(dx)", "age >= 17"]}


@pytest.fixture(scope="module")
def proto(tmp_path_factory):
    text = protocol_text(valuesets=VALUESETS, define=DEFINE, rules=RULES, population=POPULATION,
                         activities=ACTIVITIES, goals=GOALS, measures=MEASURES)
    return load_protocol(write_protocol(tmp_path_factory.mktemp("agree"), text))


# ---- strategies: dates and values clustered at the edges ---------------------------------------------------------------
REFS = [dt.date(2025, 6, 15), dt.date(2024, 2, 29), dt.date(2025, 3, 31), dt.date(2026, 11, 20)]
EDGE_AGO = [relativedelta(), relativedelta(days=-1), relativedelta(days=1), relativedelta(months=12),
            relativedelta(months=12, days=-1), relativedelta(months=11), relativedelta(months=11, days=-1),
            relativedelta(months=6), relativedelta(months=6, days=-1), relativedelta(months=5, days=14),
            relativedelta(months=9), relativedelta(days=30), relativedelta(days=14), relativedelta(days=6),
            relativedelta(days=7), relativedelta(weeks=24), relativedelta(weeks=26), relativedelta(years=2)]
HBA1C = [(v, "mmol/mol") for v in (40, 47.9, 48, 48.1, 53, 57.9, 58, 58.1, 75, 75.1, 90)] + \
        [(v, "%") for v in (6.5, 7.0, 7.45, 7.5, 9.0, 9.5)] + [(58, None), (120, "mmHg"), (None, None)]
SBP = [(v, "mmHg") for v in (0, 120, 139, 140, 149, 150, 151)] + [(140, "mm[Hg]"), (None, None), (140, "kg")]
CODES = ["d1", "r1", "i1", "n1", "f1", "h1", "h1", "h1", "s1", "s1", "zz"]


def build_patient(choice, integer) -> tuple[PatientRecord, dt.date]:
    """One random patient and reference date; choice(options) / integer(lo, hi) supply the randomness."""
    ref = choice(REFS)
    birth = ref - relativedelta(years=choice([16, 17, 40, 64, 65, 79, 80, 90])) + dt.timedelta(days=choice([-1, 0, 1, 100]))
    death = None
    if integer(0, 9) == 0:
        death = max(birth, ref + dt.timedelta(days=choice([-30, -1, 0, 1])))
    facts = []
    for i in range(integer(0, 9)):
        code = choice(CODES)
        day = ref - choice(EDGE_AGO) if choice([True, False]) else ref - dt.timedelta(days=integer(-5, 800))
        start = dt.datetime.combine(day, dt.time(choice([0, 9, 17, 23])))
        value = unit = end = None
        if code == "h1":
            value, unit = choice(HBA1C)
        elif code == "s1":
            value, unit = choice(SBP)
        elif code in ("f1", "d1") and choice([True, False]):
            end = start + dt.timedelta(days=integer(0, 500))
        status = choice([None, None, "final", "amended", "preliminary", "entered-in-error"])
        facts.append(Fact(id=f"f{i}", kind="observation", codes=[{"system": "snomed", "code": code}], start=start,
                          end=end, value=value, unit=unit, status=status, source_system="gen"))
    patient = Patient(nhs_number=nhs(integer(0, 50)), birth_date=birth, death_date=death, locality="central")
    return PatientRecord(patient=patient, facts=facts), ref


@st.composite
def patients(draw):
    return build_patient(lambda options: draw(st.sampled_from(options)), lambda lo, hi: draw(st.integers(lo, hi)))


# Examples per engine: the batch engine starts a DuckDB query per patient here, so it gets fewer (its own
# population-scale equivalence test runs many patients per query).
EXAMPLES = {"batch": 16}
DEFAULT_EXAMPLES = 150


def test_every_engine_agrees_with_the_reference(proto, engine_name):
    reference = "durable" if engine_name == "python" else "python"

    @settings(max_examples=EXAMPLES.get(engine_name, DEFAULT_EXAMPLES), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(case=patients())
    def check(case):
        rec, ref = case
        assert fired(proto, rec, ref, engine_name) == fired(proto, rec, ref, reference)
        want = evaluate(rec, [proto], [], as_of=ref, options=Options(engine=reference)).model_dump()
        got = evaluate(rec, [proto], [], as_of=ref, options=Options(engine=engine_name)).model_dump()
        assert got == want

    check()


def test_the_generator_reaches_the_interesting_cases(proto):
    """Guard against a generator that never gets near a threshold: 400 seeded patients hit every key below."""
    rnd = random.Random(20250615)
    seen: set[str] = set()
    for _ in range(400):
        rec, ref = build_patient(rnd.choice, rnd.randint)
        seen |= fired(proto, rec, ref, "python")
    wanted = {"population", "rule:high", "rule:high_pct", "rule:very_high", "rule:low_twice", "rule:bp",
              "rule:bp_after_hba1c", "rule:bp_soon_after", "rule:bp_just_before", "rule:in_period",
              "rule:frail_overlaps", "rule:no_value", "rule:final", "rule:old_at_start", "rule:invited",
              "activity:hba1c:recent", "activity:hba1c:in_interval", "activity:hba1c:excepted",
              "activity:bp:recent", "activity:bp:in_interval", "measure:M1:num", "measure:M1:excl", "measure:M2:den"}
    assert wanted <= seen, sorted(wanted - seen)


# ---- the shipped diabetes pathway, with its role agreement ----------------------------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
T2DM_FACTS = [  # (code, kind, [(value, unit), ...])
    ("44054006", "condition", [(None, None)]),                       # type 2 diabetes
    ("315051004", "condition", [(None, None)]),                      # diabetes resolved
    ("999791000000106", "observation", HBA1C),                       # HbA1c
    ("72313002", "observation", SBP),                                # systolic BP
    ("1091811000000102", "observation", [(v, "mmHg") for v in (80, 89, 90, 91)]),
    ("1011481000000105", "observation", [(v, "mL/min/{1.73_m2}") for v in (29, 30, 31, 75)]),
    ("1023491000000104", "observation", [(v, "mg/mmol") for v in (3, 69.9, 70, 71)]),
    ("925831000000107", "observation", [(None, None)]),              # moderate frailty
    ("716031000000106", "observation", [(None, None)]),              # declined diabetes care
    ("185756006", "observation", [(None, None)]),                    # invitation letter
    ("116471000119100", "observation", [(None, None)]),              # blood test declined
    ("407569005", "observation", [(None, None)]),                    # maximal tolerated therapy
    ("371087003", "condition", [(None, None)]),                      # active foot ulcer
    ("401191002", "procedure", [(None, None)]),                      # foot examination
    ("390735004", "procedure", [(None, None)]),                      # retinal screening
    ("sulfonylurea-gliclazide", "medication", [(None, None)]),
]


@pytest.fixture(scope="module")
def t2dm():
    from engine.language.agreements import load_agreement
    return (load_protocol(ROOT / "protocols" / "t2dm-annual-care.yaml"),
            load_agreement(ROOT / "protocols" / "agreements" / "central-locality-roles.yaml"))


@st.composite
def t2dm_patients(draw):
    choice, integer = (lambda options: draw(st.sampled_from(options))), (lambda lo, hi: draw(st.integers(lo, hi)))
    ref = choice(REFS)
    birth = ref - relativedelta(years=choice([16, 17, 40, 79, 80, 90])) + dt.timedelta(days=choice([-1, 0, 1]))
    death = max(birth, ref + dt.timedelta(days=choice([-1, 0, 1]))) if integer(0, 9) == 0 else None
    facts = []
    for i in range(integer(0, 12)):
        code, kind, values = choice(T2DM_FACTS)
        value, unit = choice(values)
        day = ref - choice(EDGE_AGO) if choice([True, False]) else ref - dt.timedelta(days=integer(-5, 800))
        system = "https://carepath.example/CodeSystem/synthetic" if code.startswith("sulfonylurea") else "snomed"
        facts.append(Fact(id=f"t{i}", kind=kind, codes=[{"system": system, "code": code}],
                          start=dt.datetime.combine(day, dt.time(choice([8, 13]))), value=value, unit=unit,
                          status=choice([None, "final", "entered-in-error"]), source_system="gen"))
    patient = Patient(nhs_number=nhs(integer(0, 50)), birth_date=birth, death_date=death, locality="central",
                      mdt="central-1", practice="A81001")
    return PatientRecord(patient=patient, facts=facts), ref


def test_every_engine_agrees_on_the_t2dm_pathway(t2dm, engine_name):
    proto, agreement = t2dm
    reference = "durable" if engine_name == "python" else "python"

    @settings(max_examples=EXAMPLES.get(engine_name, DEFAULT_EXAMPLES) // 2, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(case=t2dm_patients())
    def check(case):
        rec, ref = case
        want = evaluate(rec, [proto], [agreement], as_of=ref, options=Options(engine=reference)).model_dump()
        got = evaluate(rec, [proto], [agreement], as_of=ref, options=Options(engine=engine_name)).model_dump()
        assert got == want

    check()
