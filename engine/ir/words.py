"""An identifier a protocol author wrote (`last_clinic_sbp`, `invites_12m`, `egfr_below_30_without_kfre`) read
as words when nothing better is known: underscores become spaces, the abbreviations clinicians would not
write in lower case or at all in a sentence are spelt out or cased ("last clinic systolic", "invites in the
last 12 months", "eGFR below 30 without KFRE"). Why-lines, the review document and the protocol pages use
it wherever they show a definition's or a value set's identifier (a `label:` or a cluster's words come
first).
"""
from __future__ import annotations

import re

# token (lower case) -> words
TOKEN_WORDS = {
    "hba1c": "HbA1c", "egfr": "eGFR", "acr": "ACR", "bp": "blood pressure", "sbp": "systolic", "dbp": "diastolic",
    "doac": "DOAC", "sglt2i": "SGLT2 inhibitor", "acei": "ACE inhibitor", "arb": "ARB", "ics": "inhaled steroid",
    "saba": "SABA", "mrc": "MRC", "hf": "heart failure", "cvd": "CVD", "chd": "CHD", "pad": "PAD", "tia": "TIA",
    "af": "AF", "ckd": "CKD", "qrisk": "QRISK", "bmi": "BMI", "fev1": "FEV1", "fvc": "FVC", "phq9": "PHQ-9",
    "spo2": "SpO2", "mra": "MRA", "arni": "ARNI", "hyp": "hypertension", "dm": "diabetes", "kfre": "KFRE",
    "copd": "COPD", "efi": "eFI", "ltc": "long-term condition", "ae": "A&E", "ed": "ED", "lvsd": "LVSD",
    "type1": "type 1", "type2": "type 2", "cha2ds2vasc": "CHA2DS2-VASc", "gp": "GP", "nhs": "NHS", "ace": "ACE",
    "act": "ACT", "acq": "ACQ", "cat": "CAT", "ucr": "UCR", "cga": "CGA", "mdt": "MDT",
}
_PERIOD = re.compile(r"^(\d+)(d|w|m|y)$")
_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}


def identifier_words(name: str) -> str:
    """`last_clinic_sbp` -> "last clinic systolic"; `invites_12m` -> "invites in the last 12 months" (a period
    at the end of an identifier is a look-back); `efi.score_code` -> "eFI score code"."""
    tokens = name.replace(".", "_").split("_")
    out = []
    for i, t in enumerate(tokens):
        if not t:
            continue
        m = _PERIOD.match(t.lower())
        if m:
            n, unit = int(m.group(1)), _UNITS[m.group(2)]
            span = f"{n} {unit[:-1] if n == 1 else unit}"
            out.append(f"in the last {span}" if i == len(tokens) - 1 else span)
            continue
        out.append(TOKEN_WORDS.get(t.lower(), t))
    return " ".join(out)


def identifier_is_words(name: str) -> bool:
    """True when an identifier already reads as words ("newly_diagnosed"); False when it holds an abbreviation,
    a number glued to a word ("invites_12m", "last_sbp") or names a state rather than a thing ("on_statin")."""
    tokens = name.lower().replace(".", "_").split("_")
    return not any(t in TOKEN_WORDS or t == "on" or (any(c.isdigit() for c in t) and any(c.isalpha() for c in t))
                   for t in tokens)
