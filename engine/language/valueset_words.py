"""The words for a value set, from what it is: the published cluster (or codelist) it is drawn from, not the
identifier a protocol gives it. Why-lines and the review document then read "no coronary heart disease code
recorded", not "no chd recorded", in every protocol version, published ones included (their files never
change: the words come from the cluster each value set declares or its codelist's `source` column,
PUBLISHER:CLUSTER:VERSION).

A value set gets its cluster's words when it is the whole of one cluster (a `where:` that picks a cluster out
of a multi-cluster file counts as the whole of it); a subset (`where: {severity: [moderate, severe]}`) or a
codelist of several clusters keeps its identifier, read as words. A cluster not in the table does too.
"""
from __future__ import annotations

# cluster (as in a codelist's `source` column or a `{cluster: ...}` declaration) -> words in a sentence.
# Descriptions of NHS Primary Care Domain clusters (QOF business rules), as a clinician says them; a
# diagnosis list is "... code" where "no <disease> recorded" would read as the disease being ruled out.
CLUSTER_WORDS: dict[str, str] = {
    # cardiovascular disease (QOF DM034 / DM035, NG238)
    "CHD_COD": "coronary heart disease code",
    "PAD_COD": "peripheral arterial disease code",
    "TIA_COD": "transient ischaemic attack code",
    "STRK_COD": "stroke code",
    "HSTRK_COD": "haemorrhagic stroke code",
    "MI_COD": "myocardial infarction code",
    "AFIB_COD": "atrial fibrillation code",
    "HFLVSD_COD": "heart failure due to left ventricular systolic dysfunction code",
    # diabetes
    "DMTYPE1_COD": "type 1 diabetes code",
    "DMTYPE2_COD": "type 2 diabetes code",
    "IFCCHBAM_COD": "HbA1c",
    "DMINVITE_COD": "diabetes care invitation",
    "DMPCADEC_COD": "diabetes care declined",
    "DMPCAPU_COD": "diabetes care unsuitable",
    "DMMAX_COD": "maximum tolerated diabetes therapy",
    "BLDTESTDEC_COD": "blood test declined",
    "DSEP_COD": "structured education referral",
    "NDASEPATT_COD": "structured education attended",
    # blood pressure and hypertension
    "SYSBP_COD": "systolic blood pressure",
    "DIABP_COD": "diastolic blood pressure",
    "HYPINVITE_COD": "hypertension care invitation",
    "HYPPCADEC_COD": "hypertension care declined",
    "HYPPCAPU_COD": "hypertension care unsuitable",
    "HTMAX_COD": "maximum tolerated antihypertensive therapy",
    "BPDEC_COD": "blood pressure check declined",
    # kidney
    "CKD1AND2_COD": "CKD stage 1 or 2 code",
    "CKDRES_COD": "CKD resolved code",
    "ckd35": "CKD stage 3 to 5 code",
    "CRE_COD": "serum creatinine",
    "tests/egfr": "eGFR",
    "tests/urinary-albumin-creatinine-ratio": "urine ACR",
    # lipids, risk, medicines
    "CHOL2_COD": "total cholesterol",
    "QRISKSCORE_COD": "QRISK score",
    "STAT_COD": "statin",
    "STATINDEC_COD": "statin declined",
    "ACE_COD": "ACE inhibitor",
    "AII_COD": "angiotensin II receptor blocker",
    "SGLT2IDRUG_COD": "SGLT2 inhibitor",
    "direct-acting-oral-anticoagulants-doac": "DOAC",
    "user/emilyherrett/arni-dmd": "sacubitril valsartan",
    "user/emilyherrett/mras-dmd": "mineralocorticoid receptor antagonist",
    "BMIVAL_COD": "BMI",
}


def source_cluster(source: str) -> str | None:
    """The cluster of a `source` cell: PUBLISHER:CLUSTER:VERSION -> CLUSTER (None when it is not one)."""
    parts = (source or "").split(":")
    return parts[1].strip() or None if len(parts) >= 3 else None


def valueset_words(clusters, where: dict | None = None) -> str | None:
    """The words for a value set drawn from `clusters` (the clusters of its codes, or the one it declares),
    None when it has no words of its own (it then reads as its identifier): a subset of a cluster, several
    clusters, or a cluster not in the table."""
    picked = set(clusters or ())
    if where:
        if set(where) != {"cluster"}:
            return None  # a subset of a cluster: its identifier says which part
        picked = set(where["cluster"])
    words = [CLUSTER_WORDS.get(c) for c in sorted(picked)]
    if not 1 <= len(words) <= 2 or None in words:
        return None
    return " or ".join(words)
