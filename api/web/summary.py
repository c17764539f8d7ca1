"""A patient's summary across care settings, for the MDT case conference and the care plan page:
conditions, latest key results, hospital admissions, where the record came from, and the current
care plan at a glance. Terms come from the protocols' value sets (the codelists' own wording)."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from engine.ir.unit_display import display_unit
from engine.language.library import Library
from engine.records.model import Fact, PatientRecord

# Friendlier names for the value sets that hold results (value set name -> label); others are tidied.
RESULT_LABELS = {
    "hba1c": "HbA1c", "systolic_bp": "Systolic BP", "diastolic_bp": "Diastolic BP", "egfr": "eGFR",
    "urine_acr": "Urine ACR", "cholesterol": "Total cholesterol", "creatinine": "Creatinine", "bmi": "BMI",
}
# Encounter classes (FHIR v3 ActCode, as imported into attrs.class) that are a stay in hospital.
INPATIENT = {"imp", "inpatient", "acute", "nonac", "ss", "obsenc", "prenc"}
# Read / CTV3-era markers some codelist terms still carry: "[D]" (working diagnosis), "[X]" (ICD-10 chapter),
# "[V]", "[SO]", "[RFC]" ... They mean nothing to a reader of a summary.
TERM_MARKER = re.compile(r"\[(?:[A-Z]{1,3})\]\s*")
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


unit_display = display_unit  # one table of display units: engine.ir.unit_display

def clean_term(text: str) -> str:
    return TERM_MARKER.sub("", text).strip()


@dataclass
class Summary:
    conditions: list[Item] = field(default_factory=list)  # active (no end date, or ending after the day)
    past_conditions: list[Item] = field(default_factory=list)  # resolved before the day
    results: list[Result] = field(default_factory=list)
    medicines: list[Item] = field(default_factory=list)  # current: issued in the last 6 months, not ended
    admissions: list[Item] = field(default_factory=list)  # hospital stays and A&E attendances
    settings: dict[str, int] = field(default_factory=dict)  # care setting -> number of facts
    sources: list[str] = field(default_factory=list)


def _terms(library: Library) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for p in library.protocols:
        for vs in p.valuesets.values():
            for k, term in vs.terms.items():
                out.setdefault(k, term)
    return out


def _term(f: Fact, terms: dict, fallback: str | None = None) -> str:
    """The codelist's own wording, else the sender's display text, else what kind of thing it is —
    never a bare code (a clinician cannot read 1109421000000105)."""
    for c in f.codes:
        t = terms.get((c.system, c.code)) or c.display
        if t:
            return clean_term(t)
    if fallback:
        return fallback
    return {"condition": "Condition (not in carepath's codelists)", "medication": "Medicine (not in carepath's codelists)",
            "encounter": "Contact"}.get(f.kind.value, "Record entry (not in carepath's codelists)")


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
        item = Item(text, f.day, f.care_setting.value, f.source_system, f.end_day)
        (s.past_conditions if f.end_day is not None and f.end_day < as_of else s.conditions).append(item)
    for label, vs in _result_sets(library, as_of):
        facts = [f for f in record.facts if f.value is not None and f.day <= as_of and vs.matches_fact(f) is not None]
        if facts:
            f = max(facts, key=lambda f: (f.start, f.id))
            s.results.append(Result(label, f.value, unit_display(f.unit), f.day, f.care_setting.value, f.source_system))
    recent = as_of - dt.timedelta(days=183)
    seen = set()
    for f in sorted((f for f in record.facts if f.kind.value == "medication"), key=lambda f: f.start, reverse=True):
        if f.day > as_of or f.day < recent or (f.end_day is not None and f.end_day < as_of) or f.attrs.get("do_not_perform"):
            continue
        text = _term(f, terms)
        if text not in seen:
            seen.add(text)
            s.medicines.append(Item(text, f.day, f.care_setting.value, f.source_system, f.end_day))
    for f in sorted(record.facts, key=lambda f: f.start, reverse=True):
        if f.kind.value != "encounter" or f.day > as_of:
            continue
        cls = str(f.attrs.get("class", "")).lower()
        if cls in INPATIENT or (f.care_setting.value == "acute" and not cls):
            s.admissions.append(Item(_term(f, terms, "Hospital admission"), f.day, f.care_setting.value, f.source_system, f.end_day))
        elif cls == "emer":
            s.admissions.append(Item(_term(f, terms, "A&E attendance"), f.day, f.care_setting.value, f.source_system, f.end_day))
    return s
