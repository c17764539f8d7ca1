"""The patient record model every setting's data is turned into.

One `Patient` plus a flat list of `Fact`s. A fact is one coded clinical event (a diagnosis, a
result, a prescription, a visit, ...) with when it happened, what value it carried and where it
came from. A flat, typed event list is what the protocol engine needs (ehrQL-style event
tables), and keeping every fact's source system and care setting is what lets a clinician trace
a care-plan line back to the record that caused it.
"""
from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.records.nhs_number import normalise_nhs_number


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
        return canonical_system(v)

    @field_validator("code")
    @classmethod
    def _code_not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("code must not be blank")
        return v


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
            return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
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
