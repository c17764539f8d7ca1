"""The patient record model every setting's data is turned into.

One `Patient` plus a flat list of `Fact`s. A fact is one coded clinical event (a diagnosis, a
result, a prescription, a visit, ...) with when it happened, what value it carried and where it
came from. A flat, typed event list is what the protocol engine needs (ehrQL-style event
tables), and keeping every fact's source system and care setting is what lets a clinician trace
a care-plan line back to the record that caused it.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engine.records.nhs_number import normalise_nhs_number


# ---- plausibility rules, shared by every way in (API records, FHIR import, CLI, generator) ---------
#
# Dates: nothing before 1900-01-01 (no living patient was born earlier; the eCQM decks' oldest
# date is 1923). "Future" is measured against the real clock (UTC), never the service's clock:
# - a birth date may be at most 1 day after today (time zones);
# - a fact's start, a death date and a registration date at most FUTURE_TOLERANCE (5 years) after
#   now. Not 1 day: the eCQM decks (measurement period 2026) hold facts dated "after the
#   measurement period" up to 2027-02-19 and a death on 2027-01-01, protocol case files evaluate
#   as of dates up to 2026-12-18, and the engine-equivalence spec (tests/spec/test_batch_equivalence.py)
#   builds facts up to 1,100 days after its reference dates (to 2030-01-05) to prove later facts
#   are ignored; 5 years keeps all of them and still refuses 9999-12-31 or a year-3026 typo;
# - a fact's end (a medicine authorised until, a planned period) at most 10 years after now.
# Dates that far out overflow the engine's interval arithmetic (year 0 / year 10000), which is
# why an 0001-01-01 fact once stopped a patient's evaluation.
# Text: no control characters (C0 and C1, DEL) except tab / newline / carriage return in free
# text (a coding's display, string attrs), no bidirectional overrides or isolates (U+202A-U+202E,
# U+2066-U+2069: they make text display differently from what it says), no lone surrogates; and
# lengths within what the registry columns hold (names 200, ids 255, ...).
# Records read back from the registry are validated with TRUSTED (stored data is never refused on
# the way out: a row stored before a rule existed is reported as a data problem by evaluation).
EARLIEST_DATE = dt.date(1900, 1, 1)
BIRTH_FUTURE_TOLERANCE = dt.timedelta(days=1)
FUTURE_TOLERANCE = dt.timedelta(days=5 * 365 + 1)
END_FUTURE_TOLERANCE = dt.timedelta(days=3660)
TRUSTED = {"trusted": True}  # validation context for records read back from the registry
NAME_MAX, ID_MAX, SYSTEM_MAX, CODE_MAX, SHORT_MAX, DISPLAY_MAX, ATTR_TEXT_MAX = 200, 255, 500, 200, 100, 1000, 10_000
CODES_MAX, ATTRS_DEPTH_MAX = 100, 8
_BAD_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_BAD_FREE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _trusted(info: ValidationInfo | None) -> bool:
    return bool(info is not None and info.context and info.context.get("trusted"))


def real_now() -> dt.datetime:
    """Naive UTC from the real clock (the plausibility rules never follow a test's or service's clock)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def check_text(v: str | None, what: str, max_len: int, free_text: bool = False) -> str | None:
    """Refuse control characters, bidi overrides and over-long text (see the rules above)."""
    if v is None:
        return v
    if len(v) > max_len:
        raise ValueError(f"{what} is {len(v):,} characters long; at most {max_len:,} allowed")
    bad = (_BAD_FREE if free_text else _BAD_LINE).search(v)
    if bad:
        raise ValueError(f"{what} contains the control or bidirectional-override character U+{ord(bad.group()):04X} "
                         f"at position {bad.start()}")
    return v


def check_date(v: dt.date | dt.datetime | None, what: str, tolerance: dt.timedelta) -> Any:
    if v is None:
        return v
    now = real_now()
    if isinstance(v, dt.datetime):
        low, high = dt.datetime.combine(EARLIEST_DATE, dt.time()), now + tolerance
    else:
        low, high = EARLIEST_DATE, (now + tolerance).date()
    if v < low:
        raise ValueError(f"{what} {v.isoformat()} is before {EARLIEST_DATE.isoformat()}: not a plausible date")
    if v > high:
        raise ValueError(f"{what} {v.isoformat()} is in the future (after {high.isoformat()[:10]}): not a plausible date")
    return v


def _check_attrs(v: Any, path: str, depth: int = 0) -> None:
    if depth > ATTRS_DEPTH_MAX:
        raise ValueError(f"attrs{path} is nested more than {ATTRS_DEPTH_MAX} levels deep")
    if isinstance(v, str):
        check_text(v, f"attrs{path}", ATTR_TEXT_MAX, free_text=True)
    elif isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"attrs{path} is not a finite number")
    elif isinstance(v, dict):
        for k, x in v.items():
            check_text(str(k), f"attrs{path} key", SHORT_MAX)
            _check_attrs(x, f"{path}/{k}", depth + 1)
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _check_attrs(x, f"{path}/{i}", depth + 1)


class Sex(str, Enum):
    female = "female"
    male = "male"
    other = "other"
    unknown = "unknown"


class CareSetting(str, Enum):
    gp = "gp"
    acute = "acute"
    community = "community"
    mental_health = "mental-health"
    social_care = "social-care"
    other = "other"


class FactKind(str, Enum):
    condition = "condition"
    observation = "observation"
    medication = "medication"
    procedure = "procedure"
    encounter = "encounter"
    referral = "referral"
    exception = "exception"  # coded QOF-style exceptions (declined, unsuitable, no response)
    device = "device"
    other = "other"


class ExceptionType(str, Enum):
    declined = "declined"
    unsuitable = "unsuitable"
    invited_no_response = "invited-no-response"


# Code systems by canonical URI; short names are accepted on input.
SYSTEM_ALIASES = {
    "snomed": "http://snomed.info/sct",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "dmd": "https://dmd.nhs.uk",
    "icd10": "http://hl7.org/fhir/sid/icd-10",
    "icd-10": "http://hl7.org/fhir/sid/icd-10",
    "icd10cm": "http://hl7.org/fhir/sid/icd-10-cm",
    "cpt": "http://www.ama-assn.org/go/cpt",
    "hcpcs": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
}
# Different URIs known to name the same code system (e.g. HCPCS in VSAC vs QI-Core data).
SYSTEM_EQUIVALENTS = {
    "http://www.nlm.nih.gov/research/umls/hcpcs": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    "urn:oid:2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
    "http://snomed.info/sct/900000000000207008": "http://snomed.info/sct",
}


def canonical_system(system: str | None) -> str:
    if not system:
        return ""
    s = system.strip()
    s = SYSTEM_ALIASES.get(s.lower(), s)
    return SYSTEM_EQUIVALENTS.get(s, s)


class Coding(BaseModel):
    model_config = ConfigDict(frozen=True)
    system: str = ""
    code: str
    display: str | None = None

    @field_validator("system", mode="before")
    @classmethod
    def _canonical(cls, v: Any) -> str:
        if v is not None and not isinstance(v, str):  # e.g. [null, null]: a client's type confusion, not ours
            raise ValueError(f"system must be a string (a code system URI), got {type(v).__name__}")
        return canonical_system(v)

    @field_validator("system")
    @classmethod
    def _system_text(cls, v: str, info: ValidationInfo) -> str:
        return v if _trusted(info) else check_text(v, "system", SYSTEM_MAX)

    @field_validator("code")
    @classmethod
    def _code_not_blank(cls, v: str, info: ValidationInfo) -> str:
        v = v.strip()
        if not v:
            raise ValueError("code must not be blank")
        return v if _trusted(info) else check_text(v, "code", CODE_MAX)

    @field_validator("display")
    @classmethod
    def _display_text(cls, v: str | None, info: ValidationInfo) -> str | None:
        return v if _trusted(info) else check_text(v, "display", DISPLAY_MAX, free_text=True)


class Fact(BaseModel):
    """One coded event in a patient's record."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable id of the fact within its source system (used for idempotent ingest)")
    kind: FactKind
    codes: list[Coding] = Field(min_length=1, description="All codings of the event (any may match a value set)")
    start: dt.datetime = Field(description="When it happened / started (onset, effective, issued, period start)")
    end: dt.datetime | None = Field(default=None, description="When it ended (resolution, period end, medication end)")
    value: float | None = None
    unit: str | None = Field(default=None, description="UCUM unit of `value`")
    value_codes: list[Coding] = Field(default_factory=list, description="Coded value (e.g. 'Lives in nursing home')")
    status: str | None = Field(default=None, description="Source status, e.g. final / active / completed / cancelled")
    exception_type: ExceptionType | None = None
    source_system: str = "unknown"
    care_setting: CareSetting = CareSetting.gp
    attrs: dict[str, Any] = Field(default_factory=dict, description="Setting-specific extras (encounter class, verification status, ...)")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _dates_as_datetimes(cls, v: Any) -> Any:
        if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
            return dt.datetime.combine(v, dt.time())
        if isinstance(v, str) and len(v) == 10:
            return dt.datetime.fromisoformat(v)
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            try:
                return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
            except OverflowError:  # 0001-01-01T00:00+05:00 is in year 0 in UTC
                raise ValueError(f"{v.isoformat()} is outside the range of dates") from None
        return v

    @field_validator("start", "end", mode="wrap")
    @classmethod
    def _aware_strings(cls, v: Any, handler, info: ValidationInfo) -> Any:
        # pydantic parses an ISO string with an offset into an aware datetime after the "before"
        # validator; normalise it here too (an offset that crosses year 1 / 9999 is refused).
        v = handler(v)
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            try:
                v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
            except OverflowError:
                raise ValueError(f"{v.isoformat()} is outside the range of dates") from None
        if _trusted(info):
            return v
        return check_date(v, info.field_name, END_FUTURE_TOLERANCE if info.field_name == "end" else FUTURE_TOLERANCE)

    @field_validator("codes", "value_codes")
    @classmethod
    def _not_too_many_codes(cls, v: list, info: ValidationInfo) -> list:
        if len(v) > CODES_MAX and not _trusted(info):
            raise ValueError(f"{len(v)} codings; at most {CODES_MAX} allowed")
        return v

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is not None and v == v and not math.isfinite(v) and not _trusted(info):
            raise ValueError("value must be a finite number")
        return v

    @field_validator("id", "source_system", "unit", "status")
    @classmethod
    def _fact_text(cls, v: str | None, info: ValidationInfo) -> str | None:
        if _trusted(info):
            return v
        limit = {"id": ID_MAX, "source_system": SHORT_MAX}.get(info.field_name, 64)
        return check_text(v, info.field_name, limit)

    @field_validator("attrs")
    @classmethod
    def _attrs_text(cls, v: dict, info: ValidationInfo) -> dict:
        if not _trusted(info):
            _check_attrs(v, "")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Fact":
        if self.end is not None and self.end < self.start:
            raise ValueError(f"fact {self.id!r} ends ({self.end.isoformat()}) before it starts ({self.start.isoformat()})")
        if self.value is not None and self.value != self.value:  # NaN never crosses into the engine
            raise ValueError(f"fact {self.id!r} has a NaN value")
        if self.kind == FactKind.exception and self.exception_type is None:
            raise ValueError(f"exception fact {self.id!r} needs exception_type (declined / unsuitable / invited-no-response)")
        return self

    @property
    def day(self) -> dt.date:
        return self.start.date()

    @property
    def end_day(self) -> dt.date | None:
        return self.end.date() if self.end else None


class Patient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nhs_number: str
    birth_date: dt.date
    sex: Sex = Sex.unknown
    practice: str | None = Field(default=None, description="Registered GP practice ODS code, e.g. A81001")
    locality: str | None = None
    mdt: str | None = None
    death_date: dt.date | None = None
    registered_on: dt.date | None = Field(default=None, description="Date registered with the practice")
    given_name: str | None = None
    family_name: str | None = None
    source_ids: dict[str, str] = Field(default_factory=dict, description="Identifiers of this patient in source systems")

    @field_validator("nhs_number", mode="before")
    @classmethod
    def _nhs(cls, v: Any) -> str:
        return normalise_nhs_number(str(v))

    @field_validator("practice")
    @classmethod
    def _ods(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().upper()
        if not (len(v) == 6 and v[0].isalpha() and v[1:].isdigit()):
            raise ValueError(f"practice {v!r} is not a GP practice ODS code (one letter and five digits, e.g. A81001)")
        return v

    @field_validator("birth_date", "death_date", "registered_on")
    @classmethod
    def _plausible_dates(cls, v: dt.date | None, info: ValidationInfo) -> dt.date | None:
        if v is None:
            return v
        if not _trusted(info):
            check_date(v, info.field_name, BIRTH_FUTURE_TOLERANCE if info.field_name == "birth_date" else FUTURE_TOLERANCE)
        if info.field_name == "death_date" and isinstance(info.data.get("birth_date"), dt.date) and v < info.data["birth_date"]:
            raise ValueError("date of death is before date of birth")
        return v

    @field_validator("given_name", "family_name", "locality", "mdt")
    @classmethod
    def _patient_text(cls, v: str | None, info: ValidationInfo) -> str | None:
        if _trusted(info):
            return v
        return check_text(v, info.field_name, NAME_MAX if info.field_name.endswith("name") else SHORT_MAX)

    @field_validator("source_ids")
    @classmethod
    def _source_ids_text(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if not _trusted(info):
            for k, x in v.items():
                check_text(k, "source system", SHORT_MAX)
                check_text(x, f"source id of {k}", ID_MAX)
        return v

    @model_validator(mode="after")
    def _dates(self) -> "Patient":
        if self.death_date and self.death_date < self.birth_date:
            raise ValueError("date of death is before date of birth")
        return self


class PatientRecord(BaseModel):
    """A patient and their facts: the unit of evaluation."""

    patient: Patient
    facts: list[Fact] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> "PatientRecord":
        seen: set[tuple[str, str]] = set()
        for i, f in enumerate(self.facts):
            key = (f.source_system, f.id)
            if key in seen:
                raise ValueError(f"facts/{i}: duplicate fact id {f.id!r} from {f.source_system!r}")
            seen.add(key)
        return self
