"""Published codes for the synthetic population (issue 13 item 7).

Every code here is read from a shipped, published codelist (protocols/valuesets/*.csv, each row with its
`source` = PUBLISHER:CLUSTER:VERSION), picked by the row's term so the population prescribes what English
practices prescribe (ramipril, not every ACE-inhibitor AMP in equal shares). Nothing is invented.

The protocol versions in force before 2027-04-01 still read the older lists (`*_local.csv`, and the
synthetic code system for medicines): `LEGACY` names, per concept, the older coding a fact carries as its
*second* coding (a CodeableConcept may hold several codings), so those versions keep evaluating on the
same population. A published code always comes first.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

VALUESETS = Path(__file__).resolve().parents[2] / "protocols" / "valuesets"
SCT = "http://snomed.info/sct"
DMD = "https://dmd.nhs.uk"
SYN = "https://carepath.example/CodeSystem/synthetic"


@lru_cache(maxsize=None)
def rows(file: str) -> tuple[dict, ...]:
    with (VALUESETS / file).open(newline="", encoding="utf-8-sig") as fh:
        return tuple(csv.DictReader(fh))


@lru_cache(maxsize=None)
def by_term(file: str, *words: str) -> tuple[str, ...]:
    """Codes of `file` whose term contains one of `words` (case-insensitive); every code when no word."""
    out = tuple(r["code"].strip() for r in rows(file)
                if not words or any(r["term"].strip().lower() == w[1:].lower() if w.startswith("=")
                                    else w.lower() in r["term"].lower() for w in words))
    if not out:
        raise ValueError(f"{file}: no row with a term containing {words}")
    return out


def published(file: str) -> bool:
    """A list whose rows all carry a published source (not carepath's unverified or made-up codes)."""
    return all(not (r.get("source") or "").startswith(("LOCAL:unverified", "SYNTHETIC")) for r in rows(file))


# concept -> (file, term words): the real codes the generator draws
REAL: dict[str, tuple[str, tuple[str, ...]]] = {
    # medicines (dm+d), the commonly prescribed strengths
    "ramipril": ("ace_cod.csv", ("Ramipril 5mg", "Ramipril 2.5mg", "Ramipril 10mg")),
    "lisinopril": ("ace_cod.csv", ("Lisinopril 10mg", "Lisinopril 20mg")),
    "losartan": ("aii_cod.csv", ("Losartan 50mg", "Losartan 100mg")),
    "candesartan": ("aii_cod.csv", ("Candesartan 8mg", "Candesartan 4mg")),
    "indapamide": ("diuretics_dmd.csv", ("Indapamide 2.5mg", "Bendroflumethiazide 2.5mg")),
    "furosemide": ("diuretics_dmd.csv", ("Furosemide 40mg tablets", "Furosemide 20mg tablets")),
    "bisoprolol": ("beta_blocker_medications.csv", ("Bisoprolol 2.5mg tablets", "Bisoprolol 5mg tablets",
                                                     "Bisoprolol 1.25mg tablets")),
    "spironolactone": ("mras_dmd.csv", ("Spironolactone 25mg tablets",)),
    "sacubitril": ("arni_dmd.csv", ()),
    "dapagliflozin": ("sglt2idrug_cod.csv", ("Dapagliflozin 10mg", "Empagliflozin 10mg")),
    "sertraline": ("antidepressants_ssri_dmd.csv", ("Sertraline 50mg tablets", "Citalopram 20mg tablets",
                                                    "Fluoxetine 20mg capsules")),
    "mirtazapine": ("antidepressants_other_dmd.csv", ("Mirtazapine 15mg tablets", "Mirtazapine 30mg tablets")),
    "apixaban": ("doac_dmd.csv", ("Apixaban 5mg", "Apixaban 2.5mg", "Edoxaban 60mg", "Rivaroxaban 20mg")),
    "warfarin": ("warfarin_dmd.csv", ("Warfarin 1mg tablets", "Warfarin 3mg tablets")),
    "aspirin": ("antiplatelets_dmd.csv", ("Aspirin 75mg dispersible", "Clopidogrel 75mg")),
    "salbutamol-inhaler": ("salbutamol_inhalers_nhsdrug.csv", ("Salbutamol 100micrograms/dose inhaler",)),
    "beclometasone-inhaler": ("asttrtatrisk1_cod.csv", ("Clenil Modulite", "Fostair", "Symbicort")),
    "ics-laba-inhaler": ("asttrtatrisk1_cod.csv", ("Fostair", "Symbicort")),  # COPD: ICS + LABA
    "prednisolone": ("c19corstedrug_cod.csv", ("Prednisolone 5mg tablets",)),
    # clinical codes
    "cholesterol": ("chol2_cod.csv", ("Serum cholesterol level",)),       # also in cholesterol_local.csv
    "creatinine": ("cre_cod.csv", ("Serum creatinine level",)),           # also in creatinine_local.csv
    "qrisk": ("qriskscore_cod.csv", ("QRISK3",)),                         # also in clinical_local.csv (qrisk)
    "education_referral": ("dsep_cod.csv", ()),
    "education_attended": ("ndasepatt_cod.csv", ()),
    "statin_declined": ("statindec_cod.csv", ()),
    "chd": ("chd_cod.csv", ("Myocardial infarction", "Angina", "Ischaemic heart disease", "Ischemic heart disease")),
    "stroke": ("strk_cod.csv", ("Cerebral infarction", "Cerebrovascular accident")),
    "tia": ("tia_cod.csv", ()),
    "pad": ("pad_cod.csv", ("Peripheral arterial disease", "Peripheral vascular disease", "Intermittent claudication")),
    "hyp_res": ("hypres_cod.csv", ()),
    "hf_res": ("hfres_cod.csv", ()),
    "hf_lvsd": ("hflvsd_cod.csv", ()),
    "potassium": ("potassium.csv", ("Serum potassium",)),
    "weight": ("weight_snomed.csv", ("=Body weight",)),
    "emergency_admission": ("emergency_admission.csv", ("Emergency hospital admission (procedure)",)),
    "asthma_res": ("astres_cod.csv", ()),
    "act": ("astcontass_cod.csv", ("=Asthma control test score",)),      # also in clinical_local.csv (act)
    "acq": ("astcontass_cod.csv", ("Asthma Control Questionnaire",)),
    "asthma_exacerbations": ("astexacb_cod.csv", ()),
    "asthma_plan": ("writpastp_cod.csv", ("Asthma self-management plan agreed",)),  # also in clinical_local.csv
    "asthma_admission": ("astadmsn_cod.csv", ()),
    "copd_res": ("copdres_cod.csv", ()),
    "copd_admission": ("copdadmsn_cod.csv", ()),
    "depression_res": ("depres_cod.csv", ()),
    "depression_review": ("deprvw_cod.csv", ()),
    "self_harm_risk": ("risk_of_self_harm.csv", ("Thoughts of self harm",)),
    "iapt_referral": ("iapt_referral.csv", ("improving access to psychological therapies",)),
    "carer": ("carer.csv", ("Caregiver",)),
    "not_carer": ("notcarer.csv", ("Not a carer",)),
    "efi_score": ("efi_cod.csv", ()),
    "af": ("afib_cod.csv", ("Atrial fibrillation", "Paroxysmal atrial fibrillation")),
    "haemoglobin": ("haemoglobin.csv", ("Haemoglobin estimation",)),
    "hyp_max": ("qof_pca_invite_codes.csv", ()),  # filtered by cluster below
}

# concept -> the older coding the versions in force before 2027-04-01 read (second coding of the fact)
LEGACY: dict[str, tuple[str, str]] = {
    "ramipril": (SYN, "ramipril"), "lisinopril": (SYN, "lisinopril"), "losartan": (SYN, "losartan"),
    "indapamide": (SYN, "indapamide"), "bisoprolol": (SYN, "bisoprolol"), "furosemide": (SYN, "furosemide"),
    "spironolactone": (SYN, "spironolactone"), "dapagliflozin": (SYN, "dapagliflozin"),
    "sertraline": (SYN, "sertraline"), "mirtazapine": (SYN, "mirtazapine"),
    "salbutamol-inhaler": (SYN, "salbutamol-inhaler"), "beclometasone-inhaler": (SYN, "beclometasone-inhaler"),
    "prednisolone": (SYN, "prednisolone"), "ics-laba-inhaler": (SYN, "ics-laba-inhaler"),
    "weight": (SCT, "27113001"),  # clinical_local.csv (body-weight), read by heart-failure 1.0.0
    "depression_review": (SYN, "depression-review"),
    "iapt_referral": (SYN, "talking-therapies-referral"),
    "statin_declined": (SYN, "statin-declined"),
    "education_attended": (SYN, "structured-education-attended"),
    # Not "education_referral": t2dm 1.0.0 / 1.1.0 read the referral as 755621000000101, which the clinical
    # review found is a contraceptive-implant code. The generator never writes it: those versions count no
    # education referrals on synthetic data (the error is theirs; 1.2.0 reads DSEP_COD).
}


@lru_cache(maxsize=None)
def real(concept: str) -> tuple[str, ...]:
    file, words = REAL[concept]
    if concept == "hyp_max":
        return tuple(r["code"] for r in rows(file) if r.get("cluster") == "HTMAX_COD")
    return by_term(file, *words)


def legacy(concept: str, code: str) -> tuple[tuple[str, str], ...] | None:
    """The older coding a fact with `code` (of `concept`) carries too, unless it is that same code."""
    c = LEGACY.get(concept)
    return (c,) if c and c[1] != code else None
