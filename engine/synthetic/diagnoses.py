"""ICD-10 diagnoses of the synthetic population's emergency admissions (issue 19: the Hospital Frailty Risk
Score on synthetic data).

    add(p)          # after p.build(): every emergency admission of p gets a primary and secondary diagnoses

Each emergency admission (an acute inpatient encounter coded from emergency_admission.csv, by either the flat
rates or the hazard model of outcomes.py) gets ICD-10 diagnoses as `condition` facts: system ICD-10, from the
acute PAS, at the admission's start, `attrs` {"diagnosis": "primary" | "secondary", "encounter": <the
admission's fact id>}, ending when the stay ends (the hospital episode's diagnosis fields, as HES APC holds
them; on patient pages they are past diagnoses with their published term, not current conditions).

They are drawn from a random stream of their own (`"{seed}:{index}:icd10"`) and appended after every other
fact of the person, so every other draw, fact and fact id is exactly what it was without them: take the ICD-10
facts away and the record is the one the generator wrote before (tests/unit/test_synthetic_diagnoses.py).

Codes only from published lists (never invented):
* the 109 HFRS categories, protocols/valuesets/hfrs_icd10.csv (Gilbert et al., Lancet 2018): acute reasons
  for admission, injuries and falls, and the frailty syndromes;
* long-term conditions, protocols/valuesets/icd10_admission_diagnoses.csv (OpenSAFELY codelists, provenance
  per row and in the value sets' README).

The model (assumptions chosen to give the HFRS a realistic spread, not estimates):
* Primary diagnosis: with probability min(0.6, 0.12 x the summed weights of the person's conditions) an
  exacerbation of one of them (weights: heart failure 3, COPD 3, asthma 1.5, diabetes 1, AF 1); else, with
  probability FALL[eFI category], an injury from a fall (an injury category as primary, a fall as the external
  cause); else an acute medical category, chosen in proportion to its share in the HFRS development cohort.
* Secondary diagnoses: each long-term condition of the person with probability 0.8; each HFRS category with
  probability min(0.6, INTENSITY[eFI category] x its share in the published frail group (the table's
  `frail_group_percent`)). The eFI category is the one the record's frailty codes come from (fit under 65).
"""
from __future__ import annotations

import csv
import random
from functools import lru_cache
from itertools import accumulate
from pathlib import Path

VALUESETS = Path(__file__).resolve().parents[2] / "protocols" / "valuesets"
ICD10 = "http://hl7.org/fhir/sid/icd-10"

PRIMARY_WEIGHT = {"hf": 3.0, "copd": 3.0, "asthma": 1.5, "dm": 1.0, "af": 1.0}
SECONDARY_CONDITION = 0.8
FALL = {"fit": 0.04, "mild": 0.10, "moderate": 0.18, "severe": 0.25}
INTENSITY = {"young": 0.02, "fit": 0.08, "mild": 0.22, "moderate": 0.38, "severe": 0.55}
# HFRS categories by role (all rows of hfrs_icd10.csv)
INJURIES = ("S72", "S06", "S00", "S42", "S22", "S32", "S01", "S09", "S80", "S51")
FALLS = ("W19", "W18", "W10", "W01", "W06")
ACUTE = ("J18", "N39", "L03", "J22", "A09", "A41", "R55", "E86", "E87", "N17", "K52", "R11", "K59", "R50",
         "J69", "G40", "I63", "G45", "F05", "R40", "R56", "K92", "K26", "I95", "R13", "J96", "E16", "A04")
# condition -> (primary codes, secondary codes) from icd10_admission_diagnoses.csv
CONDITION_CODES = {
    "hf": (("I500", "I501", "I509"), ("I500", "I509")),
    "copd": (("J440", "J441"), ("J449",)),
    "asthma": (("J45", "J46"), ("J45",)),
    "af": (("I480", "I481", "I482", "I489"), ("I480", "I481", "I482", "I489")),
    "hyp": ((), ("I10",)),
    "depression": ((), ("F321", "F329", "F331", "F339")),
}


@lru_cache(maxsize=None)
def hfrs_rows() -> dict[str, dict]:
    with (VALUESETS / "hfrs_icd10.csv").open(newline="", encoding="utf-8-sig") as fh:
        return {r["code"].strip(): r for r in csv.DictReader(fh)}


@lru_cache(maxsize=None)
def terms() -> dict[str, str]:
    """ICD-10 code -> its term in the published list it comes from (shown on patient pages)."""
    with (VALUESETS / "icd10_admission_diagnoses.csv").open(newline="", encoding="utf-8-sig") as fh:
        out = {r["code"].strip(): r["term"].strip() for r in csv.DictReader(fh)}
    return {**{c: r["term"].strip() for c, r in hfrs_rows().items()}, **out}


@lru_cache(maxsize=None)
def condition_codes() -> dict[str, str]:
    """code -> condition of icd10_admission_diagnoses.csv."""
    with (VALUESETS / "icd10_admission_diagnoses.csv").open(newline="", encoding="utf-8-sig") as fh:
        return {r["code"].strip(): r["condition"].strip() for r in csv.DictReader(fh)}


def _share(row: dict, column: str) -> float:
    return float(row[column].strip().rstrip("%")) / 100


@lru_cache(maxsize=None)
def _tables():
    rows = hfrs_rows()
    known = condition_codes()
    for codes in (INJURIES, FALLS, ACUTE):
        missing = [c for c in codes if c not in rows]
        if missing:
            raise ValueError(f"not HFRS categories: {missing}")
    for cond, (prim, sec) in CONDITION_CODES.items():
        bad = [c for c in prim + sec if known.get(c) != cond]
        if bad:
            raise ValueError(f"{cond}: codes not in icd10_admission_diagnoses.csv as {cond}: {bad}")
    acute_w = [_share(rows[c], "development_cohort_percent") for c in ACUTE]
    frail = [(c, _share(r, "frail_group_percent")) for c, r in rows.items()]
    return acute_w, frail


@lru_cache(maxsize=None)
def _acute_cum() -> tuple[float, ...]:
    return tuple(accumulate(_tables()[0]))


@lru_cache(maxsize=None)
def _frail_chances(intensity: float) -> tuple[tuple[str, float], ...]:
    """(HFRS category, chance it is coded at one admission) for a person of this intensity."""
    return tuple((c, min(0.6, intensity * share)) for c, share in _tables()[1])


@lru_cache(maxsize=None)
def _emergency_codes() -> frozenset[str]:
    from engine.synthetic import realcodes

    return frozenset(realcodes.real("emergency_admission"))


def admissions(p) -> list[list]:
    """The person's emergency admissions (fact rows), in the order they were written."""
    codes = _emergency_codes()
    return [f for f in p.facts if f[3] in codes and f[1] == "encounter" and f[10] == "acute"]


def _conditions(p) -> list[str]:
    return [c for c in ("dm", "hyp", "hf", "copd", "asthma", "depression", "af") if getattr(p, c, False)]


def add(p) -> int:
    """Append the ICD-10 diagnoses of every emergency admission of `p`; the number of facts added."""
    adm = admissions(p)
    if not adm:
        return 0
    acute_cum = _acute_cum()
    rng = random.Random(f"{p.seed}:{p.index}:icd10")
    r = rng.random
    conds = _conditions(p)
    category = getattr(p, "frailty_category", None) or "fit"
    if p.age < 65:
        category = "fit"
    frail = _frail_chances(INTENSITY["young" if p.age < 65 else category])
    type1 = getattr(p, "dm_type1", None)
    dm_code = "E10" if (type1 if type1 is not None else p.age < 30) else "E11"
    weights = [(c, PRIMARY_WEIGHT[c]) for c in conds if c in PRIMARY_WEIGHT]
    total_w = sum(w for _, w in weights)
    added = 0
    for enc in adm:
        start, fid = enc[4], enc[0]
        codes: list[str] = []
        u = r()
        if weights and u < min(0.6, 0.12 * total_w):  # an exacerbation of a long-term condition
            x, pick = r() * total_w, weights[-1][0]
            for c, w in weights:
                if x < w:
                    pick = c
                    break
                x -= w
            prim = (dm_code,) if pick == "dm" else CONDITION_CODES[pick][0]
            codes.append(prim[int(r() * len(prim))])
        elif r() < FALL[category]:  # an injury from a fall, with the fall as the external cause
            codes.append(INJURIES[int(r() * len(INJURIES))])
            codes.append(FALLS[int(r() * len(FALLS))])
        else:
            codes.append(rng.choices(ACUTE, cum_weights=acute_cum)[0])
        for c in conds:
            if r() < SECONDARY_CONDITION:
                sec = (dm_code,) if c == "dm" else CONDITION_CODES[c][1]
                code = sec[int(r() * len(sec))]
                if code not in codes:
                    codes.append(code)
        for code, chance in frail:
            if r() < chance and code not in codes:
                codes.append(code)
        for i, code in enumerate(codes):  # a diagnosis of this stay: it ends with the stay (open while still in)
            p.add("condition", code, start, system=ICD10, source="acute-pas", setting="acute", end=enc[5],
                  attrs={"diagnosis": "primary" if i == 0 else "secondary", "encounter": fid})
            added += 1
    return added
