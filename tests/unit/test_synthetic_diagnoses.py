"""ICD-10 diagnoses of the synthetic emergency admissions (engine/synthetic/diagnoses.py): drawn from a stream of
their own and appended last, so taking them away gives back exactly the record the generator wrote without them;
codes only from the published lists; conditions and frailty show in them."""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from statistics import mean

import pytest

from engine.app.outcomes.risk_model import hfrs_points
from engine.synthetic import diagnoses
from engine.synthetic.generate import _Person, person
from engine.synthetic.outcomes import OutcomeModel

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 6, 30)
ICD10 = diagnoses.ICD10


def _without_icd10(p) -> list:
    return [f for f in p.facts if f[2] != ICD10]


@pytest.fixture(scope="module")
def people():
    return [person(i, 5, AS_OF) for i in range(1200)]


@pytest.mark.parametrize("model", [None, OutcomeModel(), OutcomeModel(record=False)], ids=["flat", "hazard", "hazard-fast"])
def test_taking_the_diagnoses_away_gives_the_record_drawn_without_them(model):
    added = 0
    for i in range(150):
        with_dx = person(i, 5, AS_OF, model)
        plain = _Person(i, 5, AS_OF, model)
        plain.build()  # the generator without diagnoses.add
        assert _without_icd10(with_dx) == plain.facts  # every other fact, id and draw unchanged
        assert with_dx.patient_row(i) == plain.patient_row(i)
        n = len(with_dx.facts) - len(plain.facts)
        assert with_dx.facts[len(plain.facts):] == [f for f in with_dx.facts if f[2] == ICD10]  # appended last
        added += n
    assert added > 50


def test_every_emergency_admission_has_one_primary_and_codes_from_published_lists(people):
    hfrs = set(hfrs_points())
    with (ROOT / "protocols" / "valuesets" / "icd10_admission_diagnoses.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["source"].startswith("OPENSAFELY:") for r in rows)
    listed = hfrs | {r["code"] for r in rows}
    admissions = 0
    for p in people:
        adm = {f[0]: f for f in diagnoses.admissions(p)}
        dx = [f for f in p.facts if f[2] == ICD10]
        admissions += len(adm)
        for f in dx:
            assert f[3] in listed, f[3]
            assert f[1] == "condition" and f[9] == "acute-pas" and f[10] == "acute"
            enc = adm[f[13]["encounter"]]  # the admission it belongs to, at its start
            assert f[4] == enc[4] and f[5] == enc[5]  # a diagnosis of the stay: from admission to discharge
        for fid in adm:
            mine = [f for f in dx if f[13]["encounter"] == fid]
            assert [f[13]["diagnosis"] for f in mine][:1] == ["primary"]
            assert sum(f[13]["diagnosis"] == "primary" for f in mine) == 1
            assert len({f[3] for f in mine}) == len(mine)  # a code once per admission
    assert admissions > 100


def test_conditions_and_frailty_show_in_the_diagnoses(people):
    pts = hfrs_points()
    hf_coded = hf_admitted = 0
    per_admission: dict[str, list[float]] = {"fit": [], "mild": [], "moderate": [], "severe": []}
    for p in people:
        adm = diagnoses.admissions(p)
        if not adm:
            continue
        codes = [f[3] for f in p.facts if f[2] == ICD10]
        if p.hf:
            hf_admitted += 1
            hf_coded += any(c.startswith("I50") for c in codes)
        if p.age >= 65:
            points = sum(pts.get(c[:3], 0.0) for c in codes)
            per_admission[p.frailty_category].append(points / len(adm))
    assert hf_admitted and hf_coded >= 0.7 * hf_admitted
    means = [mean(per_admission[k]) for k in ("fit", "mild", "moderate", "severe")]
    assert means == sorted(means) and means[-1] > 2 * means[0], means  # frailer people, more HFRS points


def test_the_codes_the_model_names_are_in_their_lists():
    acute_w, frail = diagnoses._tables()  # raises if a named code is missing from hfrs_icd10.csv / the ICD-10 list
    assert len(frail) == 109 and len(acute_w) == len(diagnoses.ACUTE) and all(w > 0 for w in acute_w)


def test_the_records_carry_the_published_term():
    """Patient pages show a diagnosis by its term (a clinician cannot read J18), as a past diagnosis."""
    from engine.synthetic.generate import generate

    terms = diagnoses.terms()
    seen = 0
    for rec in generate(80, seed=5, as_of=AS_OF):
        for f in rec.facts:
            c = f.codes[0]
            if c.system == ICD10:
                assert c.display == terms[c.code] and c.display
                assert f.end is not None or f.status is None
                seen += 1
    assert seen > 5 and terms["J18"] == "Pneumonia, organism unspecified" and terms["I500"] == "Congestive heart failure"
