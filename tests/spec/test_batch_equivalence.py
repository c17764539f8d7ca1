"""The batch engine (DuckDB, whole population) against the per-patient engines: zero differing patients.

1. Hypothesis builds small populations of patients whose facts crowd the places where engines could disagree (at
   least 51 random patients per protocol per run): window edges (exactly N months ago, leap days), thresholds,
   same-day ties, identical ids from different systems, unit conversions (and inconvertible units), entered-in-
   error facts, multi-coded facts, attributes, open-ended facts. Every protocol under protocols/ that loads is
   evaluated for each population by durable-rules (one patient at a time) and by the batch engine (one query): the
   fired condition keys and the summary facts must be identical.
2. The first 2,000 patients of the synthetic population generator go through both as well.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from dateutil.relativedelta import relativedelta
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.engines.duckdb import batch
from engine.engines.derive import Context
from engine.evaluation.evaluator import fired_conditions
from engine.ir.lowering import lowered_for
from engine.ir.lowering import summary_fact
from engine.engines.duckdb.columnar import load_records
from engine.language.library import load_library
from engine.records.model import Fact, FactKind, Patient, PatientRecord
from engine.records.nhs_number import make_nhs_number
from tests.protocols.protocol_cases import repeated_by_a_higher_version

ROOT = Path(__file__).resolve().parents[2]
# Examples per protocol: more for the diabetes pathway's newest version, fewer for the others (its superseded
# versions included: the same node types, compiled by the same code) so the suite stays quick as the library
# grows. A soak run: CAREPATH_EQUIVALENCE_EXAMPLES=300 CAREPATH_EQUIVALENCE_RANDOM=1.
EXAMPLES = int(os.environ.get("CAREPATH_EQUIVALENCE_EXAMPLES", "0"))
EXAMPLES_MAIN, EXAMPLES_OTHERS = EXAMPLES or 6, EXAMPLES or 3
# The generator's first patients through both engines: 2,000 for the diabetes pathway (newest version), fewer for
# the others (durable-rules derives ~50 facts per patient in Python); CAREPATH_EQUIVALENCE_GENERATED=2000 runs all
# at 2,000.
GENERATED_MAIN, GENERATED_OTHERS = 2000, int(os.environ.get("CAREPATH_EQUIVALENCE_GENERATED", "200"))
# Each hypothesis example is a population of 17-24 random patients, so every protocol meets at least 51
# random patients per run (3 examples; the batch engine's cost is per population, durable-rules' per
# patient). Soak: CAREPATH_EQUIVALENCE_EXAMPLES=300 CAREPATH_EQUIVALENCE_RANDOM=1 (thousands of patients).
PATIENTS_MIN = int(os.environ.get("CAREPATH_EQUIVALENCE_PATIENTS", "17"))
MAIN_PROTOCOL = "t2dm-annual-care"


def _protocols():
    """Every protocol version, a text re-issued unchanged by a higher version once (as the higher one)."""
    lib = load_library([ROOT / "protocols"])
    repeated = repeated_by_a_higher_version(lib)
    return {p.key: p for p in lib.protocols if p.key not in repeated}


PROTOCOLS = _protocols()
MAIN_KEY = max((p for p in PROTOCOLS.values() if p.id == MAIN_PROTOCOL), key=lambda p: tuple(map(int, p.version.split(".")))).key
REFS = [dt.date(2026, 3, 31), dt.date(2024, 2, 29), dt.date(2025, 6, 15), dt.date(2026, 12, 31)]
THRESHOLDS = [0.0, 3.0, 6.5, 7.0, 7.5, 9.0, 9.000001, 29.99, 30.0, 48.0, 53.0, 58.0, 58.000001, 64.0, 70.0, 75.0,
              80.0, 90.0, 139.0, 140.0, 150.0]
UNITS = [None, "%", "mmol/mol", "mmHg", "mm[Hg]", "umol/L", "mmol/L", "mg/mmol", "kg/m2", "mL/min/1.73m2", "ng/L"]
STATUSES = [None, "final", "entered-in-error", "Entered-in-Error", "finished", "completed", "active", "amended",
            "cancelled", "preliminary"]
ATTRS = [{}, {}, {"category": "laboratory"}, {"category": "survey"}, {"intent": "order"},
         {"intent": "order", "do_not_perform": True}, {"do_not_perform": False},
         {"verification_status": "refuted"}, {"verification_status": "confirmed"},
         {"category": ["survey", "laboratory"]}, {"value_string": "positive"}, {"value_boolean": False},
         {"discharge_disposition": {"system": "http://snomed.info/sct", "code": "428361000124107"}},
         {"discharge_disposition": {"system": "snomed", "code": "999"}}]
AGES = [10, 16, 17, 18, 40, 65, 66, 75, 76, 79, 80, 95]
OFFSET_MONTHS = [0, 1, 3, 6, 9, 10, 11, 12, 13, 24, 36]
TIMES = [dt.time(0, 0), dt.time(9, 30), dt.time(23, 59, 59)]
KINDS = [k.value for k in FactKind if k != FactKind.exception]


def _codes(proto) -> list[tuple[str, str]]:
    """A few codes of every value set the protocol declares, plus one no value set holds."""
    out = []
    for name in sorted(proto.valuesets):
        out += sorted(proto.valuesets[name].codes)[:3]
    return sorted(set(out)) + [("http://snomed.info/sct", "1000000000")]


@st.composite
def facts(draw, codes, ref):
    if draw(st.booleans()):
        day = ref - relativedelta(months=draw(st.sampled_from(OFFSET_MONTHS))) + dt.timedelta(days=draw(st.integers(-1, 1)))
    else:
        day = ref - dt.timedelta(days=draw(st.integers(-1100, 5)))
    start = dt.datetime.combine(day, draw(st.sampled_from(TIMES)))
    end = draw(st.one_of(st.none(), st.integers(0, 500).map(lambda d: start + dt.timedelta(days=d)),
                         st.integers(0, 30).map(lambda h: start + dt.timedelta(hours=h))))
    value = draw(st.one_of(st.none(), st.sampled_from(THRESHOLDS),
                           st.floats(0, 250, allow_nan=False, allow_infinity=False)))
    system, code = draw(st.sampled_from(codes))
    more = draw(st.lists(st.sampled_from(codes), max_size=1))
    return dict(kind=draw(st.sampled_from(KINDS)), codes=[{"system": system, "code": code}] + [
        {"system": s, "code": c} for s, c in more], start=start, end=end, value=value,
        unit=draw(st.sampled_from(UNITS)), status=draw(st.sampled_from(STATUSES)),
        source_system=draw(st.sampled_from(["gp-system", "pathology-lims", "acute-pas"])),
        care_setting=draw(st.sampled_from(["gp", "acute", "community"])),
        value_codes=[{"system": s, "code": c} for s, c in draw(st.lists(st.sampled_from(codes), max_size=1))],
        attrs=draw(st.sampled_from(ATTRS)), id=draw(st.sampled_from(["a", "b", "c", "d", "e"])))


@st.composite
def populations(draw, codes, ref):
    records = []
    for i in range(draw(st.integers(PATIENTS_MIN, PATIENTS_MIN + 7))):
        raw = draw(st.lists(facts(codes, ref), max_size=18))
        seen, fs = set(), []
        for j, f in enumerate(raw):
            if (f["source_system"], f["id"]) in seen:  # ids are unique per source system in a record
                f["id"] = f"{f['id']}{j}"
            seen.add((f["source_system"], f["id"]))
            fs.append(Fact(**f))
        birth = ref - relativedelta(years=draw(st.sampled_from(AGES))) + dt.timedelta(days=draw(st.integers(-1, 1)))
        nhs = make_nhs_number(400000000 + i * 13) or make_nhs_number(400000000 + i * 13 + 1)
        records.append(PatientRecord(patient=Patient(nhs_number=nhs, birth_date=birth,
                                                     sex=draw(st.sampled_from(["female", "male", "unknown"]))),
                                     facts=fs))
    return records


@pytest.fixture(scope="module")
def con():
    c = batch.connect(threads=2)
    yield c
    c.close()


def compare_engines(con, proto, records, ref, period_start=None) -> list[str]:
    """Differences between durable-rules (per patient) and the batch engine (all at once), as text."""
    load_records(con, records)
    both = batch.results_by_patient(con, proto, ref, period_start)
    fired_b = {k: v[0] for k, v in both.items()}
    summ_b = {k: v[1] for k, v in both.items()}
    ctx = Context.as_of(ref, proto.period, period_start)
    lowered = lowered_for(proto)
    problems = []
    for rec in records:
        nhs = rec.patient.nhs_number
        fired_d, deriver = fired_conditions(rec, proto, ctx, engine="durable")
        if fired_d != fired_b.get(nhs):
            problems.append(f"{nhs}: durable-only {sorted(fired_d - fired_b.get(nhs, set()))}, "
                            f"batch-only {sorted(fired_b.get(nhs, set()) - fired_d)}")
        fact = summary_fact(lowered, deriver)  # the fact durable-rules was given
        if fact != summ_b.get(nhs):
            diff = {k: (v, summ_b.get(nhs, {}).get(k)) for k, v in fact.items() if summ_b.get(nhs, {}).get(k) != v}
            problems.append(f"{nhs}: summary fields differ (per patient, batch): {diff}")
    return problems


@pytest.mark.parametrize("key", sorted(PROTOCOLS))
def test_hypothesis_patients_identical_across_engines(key, con):
    proto = PROTOCOLS[key]
    codes = _codes(proto)

    @settings(max_examples=EXAMPLES_MAIN if key == MAIN_KEY else EXAMPLES_OTHERS, deadline=None,
              derandomize=not os.environ.get("CAREPATH_EQUIVALENCE_RANDOM"),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(data=st.data())
    def check(data):
        ref = data.draw(st.sampled_from(REFS))
        period_start = data.draw(st.sampled_from([None, dt.date(ref.year, 1, 1)]))
        records = data.draw(populations(codes, ref))
        problems = compare_engines(con, proto, records, ref, period_start)
        assert not problems, "\n".join(problems[:5])

    check()


def test_month_arithmetic_matches_relativedelta(con):
    """DuckDB's date +/- INTERVAL n MONTH/YEAR clamps to month end exactly as relativedelta does."""
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(0, 1200, 3)] + [dt.date(2024, 2, 29), dt.date(2024, 1, 31)]
    for unit, amounts in (("MONTH", (1, 6, 9, 12, 13)), ("YEAR", (1, 4))):
        for n in amounts:
            rows = con.execute(
                "SELECT d, CAST(d + INTERVAL (?) " + unit + " AS DATE), CAST(d - INTERVAL (?) " + unit + " AS DATE) "
                "FROM unnest(?::DATE[]) t(d)", [n, n, days]).fetchall()
            kw = {"months" if unit == "MONTH" else "years": n}
            for d, plus, minus in rows:
                assert (plus, minus) == (d + relativedelta(**kw), d - relativedelta(**kw)), (unit, n, d)


@pytest.fixture(scope="module")
def generated():
    from engine.synthetic.generate import generate

    ref = dt.date(2026, 3, 31)
    return ref, list(generate(max(GENERATED_MAIN, GENERATED_OTHERS), seed=7, as_of=ref))


@pytest.mark.parametrize("key", sorted(PROTOCOLS))
def test_generated_population_identical_across_engines(key, con, generated):
    ref, records = generated
    proto = PROTOCOLS[key]
    n = GENERATED_MAIN if key == MAIN_KEY else GENERATED_OTHERS
    problems = compare_engines(con, proto, records[:n], ref)
    assert not problems, f"{key}: {len(problems)} of {n} patients differ\n" + "\n".join(problems[:5])


def test_unsupported_node_raises_naming_it():
    from engine.ir import nodes as ir
    @__import__("dataclasses").dataclass(frozen=True)
    class Mystery:
        type = ir.BOOL

    c = batch.Compiler(PROTOCOLS[sorted(PROTOCOLS)[0]], Context.as_of(REFS[0], ir.Duration(12, "months")),
                       batch.default_tables(), '"vs"')
    with pytest.raises(NotImplementedError, match="Mystery"):
        c.expr(Mystery(), batch._Joins())
