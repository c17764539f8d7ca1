"""The risk-model check (engine/app/outcomes/risk_model.py, `carepath outcomes risk-model`): the inputs the
batch engine computes as of T agree with the per-patient evaluator, the outcome window is (T, T + 12 months],
the HFRS is the published points of distinct ICD-10 categories, and the report adds up. No test here depends
on how strongly the synthetic generator ties admissions to risk."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.app.outcomes.risk_model import (build_report, choose_protocol, collect, hfrs_points, outcome_end,
                                            records_end, render_text, risk_model_report)
from engine.engines.duckdb import batch
from engine.engines.duckdb.columnar import load_records
from engine.evaluation.evaluator import evaluate
from engine.records.model import Fact, Patient, PatientRecord
from engine.synthetic.generate import generate, write_population
from tests.unit.cached import shipped_library

ROOT = Path(__file__).resolve().parents[2]
T = dt.date(2025, 6, 30)
GEN_AS_OF = dt.date(2026, 6, 30)
ICD10 = "http://hl7.org/fhir/sid/icd-10"
SCT = "http://snomed.info/sct"
EMERGENCY = "183452005"  # Emergency hospital admission (GM-SDE emergency-admission, emergency_admission.csv)


@pytest.fixture(scope="module")
def lib():
    return shipped_library()


@pytest.fixture(scope="module")
def proto(lib):
    return choose_protocol(lib.protocols, "risk-stratification@1.1.0", T)


def _fact(i, code, day, system=SCT, kind="encounter", status="finished", setting="acute"):
    return Fact(id=f"f{i}", kind=kind, codes=[{"system": system, "code": code}], start=day, status=status,
                source_system="acute-pas", care_setting=setting)


def _person(nhs, birth, facts, death=None):
    return PatientRecord(patient=Patient(nhs_number=nhs, birth_date=birth, sex="female", practice="A81001",
                                         locality="central", mdt="central-1", death_date=death,
                                         registered_on=dt.date(2000, 1, 1)), facts=facts)


def _db(tmp_path, records) -> Path:
    path = tmp_path / "population.duckdb"
    con = batch.connect(str(path))
    load_records(con, records)
    con.close()
    return path


def _hand_made():
    end = outcome_end(T)
    day = dt.timedelta(days=1)
    a = _person("9990000026", dt.date(1940, 1, 1), [
        _fact(1, EMERGENCY, T),                    # on T: in the score (as of T), not in the outcome
        _fact(2, EMERGENCY, T + day),              # the day after T: outcome
        _fact(3, EMERGENCY, end),                  # the last day of the window: outcome
        _fact(4, EMERGENCY, end + day),            # after the window: neither
        _fact(5, EMERGENCY, T + 10 * day, status="entered-in-error"),  # never counted
        _fact(6, "F00.1", T - 300 * day, ICD10, "condition"),   # F00 7.1
        _fact(7, "W19", T - 200 * day, ICD10, "condition"),     # W19 3.2
        _fact(8, "W190", T - 100 * day, ICD10, "condition"),    # W19 again: a category counts once
        _fact(9, "R29.6", T - 800 * day, ICD10, "condition"),   # more than 2 years before T: not counted
        _fact(10, "N39", T + 5 * day, ICD10, "condition"),      # after T: not counted
        _fact(11, "Z99.9", T - 50 * day, ICD10, "condition", status="entered-in-error"),
        _fact(12, "I10", T - 50 * day, ICD10, "condition"),     # not one of the 109 categories
    ])
    b = _person("9990000034", dt.date(1990, 5, 5), [])                                  # no history, no admissions
    c = _person("9990000042", dt.date(1950, 3, 3), [_fact(1, EMERGENCY, T + 30 * day)], death=T + 100 * day)
    d = _person("9990000050", dt.date(1950, 3, 3), [], death=T - day)                    # died before T: not at risk
    return [a, b, c, d]


def test_outcome_window_hfrs_and_score_on_hand_made_records(tmp_path, proto):
    assert outcome_end(T) == dt.date(2026, 6, 30)
    a, b, c, d = _hand_made()
    people = {p.nhs_number: p for p in collect(_db(tmp_path, [a, b, c, d]), proto, T)}
    assert set(people) == {"9990000026", "9990000034", "9990000042"}
    pa, pb, pc = people["9990000026"], people["9990000034"], people["9990000042"]
    assert pa.admissions == 2 and pb.admissions == 0 and pc.admissions == 1
    pts = hfrs_points()
    assert pa.hfrs == pytest.approx(pts["F00"] + pts["W19"]) and pa.hfrs == pytest.approx(7.1 + 3.2)
    assert pa.icd10_coded and not pb.icd10_coded and pb.hfrs == 0
    assert pa.exposure == 1 and pc.died and pc.exposure == pytest.approx(100 / 365)
    for rec in (a, b, c):  # the score and tier as the per-patient evaluator gives them as of T
        res = evaluate(rec, [proto], as_of=T).protocols[0]
        got = people[rec.patient.nhs_number]
        assert got.score == res.score.value
        assert got.tier == (res.tier.tier if res.tier else None)
        assert got.in_population == res.on_register
    assert pa.score == 4  # one admission in the 12 months to T (2), aged 75+ (1) and 85+ (1)
    assert len(pts) == 109


def test_hfrs_table_rows_as_published():
    rows = (ROOT / "protocols" / "valuesets" / "hfrs_icd10.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("code,term,points,") and rows[0].endswith(",source")
    assert len(rows) == 110 and all(r.endswith(",GILBERT-LANCET-2018:HFRS:1") for r in rows[1:])
    pts = hfrs_points()
    assert (pts["F00"], pts["G81"], pts["R50"]) == (7.1, 4.4, 0.1)  # first, second and last rows of the table
    assert all(",hannesill/m4@d8f97260,GILBERT" in r for r in rows[1:])  # every row's points cross-checked


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    out = tmp_path_factory.mktemp("risk-pop") / "pop"
    write_population(out, 400, seed=7, as_of=GEN_AS_OF, workers=1)
    return out


def test_batch_inputs_agree_with_the_evaluator_on_synthetic_people(population, proto):
    people = {p.nhs_number: p for p in collect(population, proto, T)}
    end = outcome_end(T)
    checked = 0
    for rec in generate(60, seed=7, as_of=GEN_AS_OF):
        got = people.get(rec.patient.nhs_number)
        if got is None:  # died before T or registered after it
            assert (rec.patient.death_date and rec.patient.death_date <= T) or rec.patient.registered_on > T \
                or rec.patient.birth_date > T
            continue
        res = evaluate(rec, [proto], as_of=T).protocols[0]
        assert got.in_population == res.on_register
        if res.on_register:  # the evaluator gives a score and tier to people on the register only
            assert got.score == res.score.value
            assert got.tier == (res.tier.tier if res.tier else None)
        direct = sum(1 for f in rec.facts if any(c.code in _emergency_codes() for c in f.codes)
                     and T < f.start.date() <= end and f.status != "entered-in-error")
        assert got.admissions == direct
        checked += 1
    assert checked >= 30


def _emergency_codes() -> set[str]:
    lines = (ROOT / "protocols" / "valuesets" / "emergency_admission.csv").read_text(encoding="utf-8").splitlines()[1:]
    return {ln.split(",")[0] for ln in lines}


def test_command_report_structure_and_sums(population, tmp_path, shipped_library_once):
    svg = tmp_path / "calibration.svg"
    r = CliRunner().invoke(app, ["outcomes", "risk-model", "--population", str(population), "--as-of", T.isoformat(),
                                 "--protocols", str(ROOT / "protocols"), "--protocol", "risk-stratification@1.1.0",
                                 "--format", "json", "--svg", str(svg), "--chunk", "150"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["schema"] == "carepath.risk-model/v1" and rep["protocol"] == "risk-stratification@1.1.0"
    assert rep["outcome_window"] == ["2025-06-30", "2026-06-30"] and "retrospectively" in rep["note"]
    cohorts = {c["cohort"]: c for c in rep["cohorts"]}
    assert list(cohorts) == ["adults", "aged-65-plus", "aged-75-plus"]
    adults = cohorts["adults"]
    assert adults["people"] > 200 and adults["admissions"] > 0
    assert cohorts["aged-65-plus"]["people"] <= adults["people"]
    for c in rep["cohorts"]:
        models = {m["model"]: m for m in c["models"]}
        if "hfrs" in models:  # the generator's emergency admissions carry ICD-10 diagnoses (synthetic/diagnoses.py)
            h = models["hfrs"]
            assert "not_computed" not in h and h["people_with_icd10_codes"] > 0 and "discrimination" in h
            assert [b["band"] for b in h["bands"]] == ["low", "intermediate", "high"]
            assert all(b["people"] > 0 for b in h["bands"]), h["bands"]  # someone in every published risk group
            assert sum(b["people"] for b in h["bands"]) == h["people"] == c["people"]
            assert sum(b["admissions"] for b in h["bands"]) == c["admissions"]
        for m in c["models"]:
            if "deciles" not in m:
                continue
            assert sum(g["observed"] for g in m["deciles"]) == m["observed"] == c["admissions"]
            assert sum(g["people"] for g in m["deciles"]) == m["people"] == c["people"]
            assert sum(g["expected"] for g in m["deciles"]) == pytest.approx(m["expected"], abs=0.01)
            lo, hi = m["observed_over_expected_ci95"]
            assert m["observed_over_expected"] == pytest.approx(m["observed"] / m["expected"], abs=1e-3)
            assert lo < m["observed_over_expected"] < hi
            d = m["discrimination"]
            assert 0 <= d["ci95"][0] <= d["auc"] <= d["ci95"][1] <= 1
            assert d["with_outcome"] == c["with_admission"]
            assert [g["group"] for g in m["deciles"]] == list(range(1, 11))
    comps = cohorts["aged-65-plus"]["comparisons"]
    assert ("efi", "local") in [(x["model"], x["versus"]) for x in comps]
    tiers = rep["tiers"]
    assert [t["tier"] for t in tiers] == ["case-management", "disease-management", "supported-self-care", None]
    assert sum(t["people"] for t in tiers) == adults["people"]
    assert sum(t["admissions"] for t in tiers) == adults["admissions"]
    assert sum(t["with_admission"] for t in tiers) == adults["with_admission"]
    local = cohorts["adults"]["models"][0]
    assert sum(t["expected_from_local_score"] for t in tiers) == pytest.approx(local["expected"], abs=0.05)
    panels = sum(1 for c in rep["cohorts"] for m in c["models"] if "deciles" in m)
    assert panels >= 5 and svg.read_text().startswith("<svg") and svg.read_text().count("<circle") == 10 * panels
    text = render_text(rep)
    assert "Admissions by tier" in text and "DeLong" in text and "Caveats" in text
    assert "HFRS High risk (over 15 points)" in text
    assert f"{adults['people']} people, {adults['with_admission']} with an emergency admission" in text


def test_report_same_whatever_the_chunk_size(population, proto):
    a = risk_model_report(population, proto, T, chunk_size=400)
    last = records_end(population)
    b = build_report(collect(population, proto, T, chunk_size=97), proto, T, last_record=last)
    assert a == b and a["records_end"] == last.isoformat() and "warning" not in a
    assert dt.date(2026, 6, 1) <= last <= GEN_AS_OF
    late = risk_model_report(population, proto, dt.date(2025, 9, 30))  # window ends after the records do
    assert "before the end of the outcome window" in late["warning"] and "WARNING" in render_text(late)


def test_choosing_the_version_and_refusing_a_protocol_without_a_score(population, lib):
    assert choose_protocol(lib.protocols, "risk-stratification", dt.date(2026, 12, 1)).version == "1.0.0"  # in force
    assert choose_protocol(lib.protocols, "risk-stratification", dt.date(2026, 12, 7)).version == "1.1.1"
    assert choose_protocol(lib.protocols, "risk-stratification", dt.date(2027, 5, 1)).version == "1.1.1"
    assert choose_protocol(lib.protocols, "risk-stratification", dt.date(2020, 1, 1)).version == "1.1.1"  # newest
    with pytest.raises(ValueError, match="no protocol"):
        choose_protocol(lib.protocols, "risk-stratification@9.9.9", T)
    with pytest.raises(ValueError, match="no score"):
        collect(population, lib.find("frailty", "1.1.0"), T)


def test_the_registry_records_give_the_same_report(tmp_path, proto, shipped_library_once):
    """Without --population the command reads the registry's own records (as stored by ingest)."""
    from engine.registry.db import make_engine, upgrade
    from engine.registry.ingest import ingest_records

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(url)
    upgrade(engine)
    records = _hand_made()
    ingest_records(engine, records, source="test")
    engine.dispose()
    r = CliRunner().invoke(app, ["outcomes", "risk-model", "--database-url", url, "--as-of", T.isoformat(),
                                 "--protocols", str(ROOT / "protocols"), "--protocol", "risk-stratification@1.1.0",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    from_registry = json.loads(r.output)
    direct = risk_model_report(_db(tmp_path, records), proto, T)
    assert from_registry == direct
    assert from_registry["cohorts"][0]["people"] == 3 and from_registry["cohorts"][0]["admissions"] == 3
    hfrs = [m for m in from_registry["cohorts"][1]["models"] if m["model"] == "hfrs"][0]
    assert hfrs["people_with_icd10_codes"] == 1 and "discrimination" in hfrs
