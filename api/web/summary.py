"""A patient's summary across care settings, for the MDT case conference and the care plan page:
conditions, latest key results, hospital admissions, where the record came from, and the current
care plan at a glance. Terms come from the protocols' value sets (the codelists' own wording)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from engine.protocols.library import Library
from engine.records.model import Fact, PatientRecord

# Friendlier names for the value sets that hold results (value set name -> label); others are tidied.
RESULT_LABELS = {
    "hba1c": "HbA1c", "systolic_bp": "Systolic BP", "diastolic_bp": "Diastolic BP", "egfr": "eGFR",
    "urine_acr": "Urine ACR", "cholesterol": "Total cholesterol", "creatinine": "Creatinine", "bmi": "BMI",
}
SETTING_NAMES = {"gp": "GP", "acute": "Hospital (acute)", "community": "Community", "mental-health": "Mental health",
                 "social-care": "Social care", "other": "Other"}


@dataclass
class Result:
    label: str
    value: float
    unit: str | None
    date: dt.date
    setting: str
    source: str


@dataclass
class Item:
    text: str
    date: dt.date
    setting: str
    source: str
    end: dt.date | None = None


@dataclass
class Summary:
    conditions: list[Item] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    admissions: list[Item] = field(default_factory=list)
    settings: dict[str, int] = field(default_factory=dict)  # care setting -> number of facts
    sources: list[str] = field(default_factory=list)


def _terms(library: Library) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for p in library.protocols:
        for vs in p.valuesets.values():
            for k, term in vs.terms.items():
                out.setdefault(k, term)
    return out


def _term(f: Fact, terms: dict) -> str:
    for c in f.codes:
        t = terms.get((c.system, c.code)) or c.display
        if t:
            return t
    c = f.codes[0]
    return f"{c.code} ({c.system.rsplit('/', 1)[-1] or 'code'})"


def _result_sets(library: Library, as_of: dt.date) -> list[tuple[str, object]]:
    """(label, value set) for every value set with a unit in the protocols in force: the key results."""
    seen, out = set(), []
    for p in library.in_force(as_of):
        for name, vs in p.valuesets.items():
            if vs.unit and name not in seen:
                seen.add(name)
                out.append((RESULT_LABELS.get(name, name.replace("_", " ").capitalize()), vs))
    order = list(RESULT_LABELS)
    out.sort(key=lambda x: order.index(_key(x[0])) if _key(x[0]) in order else len(order))
    return out


def _key(label: str) -> str:
    return next((k for k, v in RESULT_LABELS.items() if v == label), label)


def summarise(record: PatientRecord, library: Library, as_of: dt.date) -> Summary:
    terms = _terms(library)
    s = Summary()
    for f in record.facts:
        setting = f.care_setting.value
        s.settings[setting] = s.settings.get(setting, 0) + 1
        if f.source_system not in s.sources:
            s.sources.append(f.source_system)
    seen = set()
    for f in sorted((f for f in record.facts if f.kind.value == "condition"), key=lambda f: f.start, reverse=True):
        text = _term(f, terms)
        if text in seen:
            continue
        seen.add(text)
        s.conditions.append(Item(text, f.day, f.care_setting.value, f.source_system, f.end_day))
    for label, vs in _result_sets(library, as_of):
        facts = [f for f in record.facts if f.value is not None and f.day <= as_of and vs.matches_fact(f) is not None]
        if facts:
            f = max(facts, key=lambda f: (f.start, f.id))
            s.results.append(Result(label, f.value, f.unit, f.day, f.care_setting.value, f.source_system))
    for f in sorted(record.facts, key=lambda f: f.start, reverse=True):
        admission = f.kind.value == "encounter" and (f.care_setting.value in ("acute", "mental-health")
                                                      or str(f.attrs.get("class", "")).lower() in ("imp", "inpatient", "emer"))
        if admission:
            s.admissions.append(Item(_term(f, terms), f.day, f.care_setting.value, f.source_system, f.end_day))
    return s
