"""What the FHIR readers share: carepath's extension and identifier URLs, `BundleError`,
`ImportResult`, JSON pointers, parsed entries and the reference index, coding / time / extension
helpers, the draft fact a reader returns and the context it reads with."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pydantic import BaseModel, Field, ValidationError

from engine.records.model import CareSetting, Coding, FactKind, PatientRecord

CAREPATH_SD = "https://carepath.example/fhir/StructureDefinition/"
EXT_LOCALITY = CAREPATH_SD + "locality"
EXT_MDT = CAREPATH_SD + "mdt"
EXT_PRACTICE = CAREPATH_SD + "practice"
EXT_REGISTERED_ON = CAREPATH_SD + "registered-on"
EXT_CARE_SETTING = CAREPATH_SD + "care-setting"
EXT_EXCEPTION_TYPE = CAREPATH_SD + "exception-type"
EXT_FACT_KIND = CAREPATH_SD + "fact-kind"
EXT_FACT_EXTRA = CAREPATH_SD + "fact-extra"
ID_FACT = "https://carepath.example/fhir/Id/fact-id"
ID_SOURCE = "https://carepath.example/fhir/Id/source/"
META_SOURCE = "https://carepath.example/fhir/source/"
NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
EXT_DNP_R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DeviceRequest.doNotPerform"
EXT_DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


class BundleError(ValueError):
    """The bundle is malformed; `pointer` is a JSON pointer to the offending part."""

    def __init__(self, pointer: str, message: str):
        self.pointer = pointer
        self.message = message
        super().__init__(f"{pointer or '/'}: {message}")


class ImportResult(BaseModel):
    records: list[PatientRecord] = Field(default_factory=list)
    imported: dict[str, int] = Field(default_factory=dict, description="resource type -> entries turned into a patient or facts")
    supporting: dict[str, int] = Field(default_factory=dict, description="resource type -> entries used only via references")
    unsupported: dict[str, int] = Field(default_factory=dict, description="resource type -> entries of types carepath does not import")
    skipped: list[str] = Field(default_factory=list, description="one reason per entry of a supported type that was not imported")
    warnings: list[str] = Field(default_factory=list, description="partial losses and guesses (derived NHS numbers, components without code ...)")

    @property
    def fact_count(self) -> int:
        return sum(len(r.facts) for r in self.records)


# --------------------------------------------------------------------------------------------
# JSON pointers


def _esc(part: Any) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def pointer(*parts: Any) -> str:
    return "".join("/" + _esc(p) for p in parts)


def _loc_pointer(base: str, loc: Iterable[Any]) -> str:
    # pydantic locs of fhir.resources use the JSON names ("class", "_status") already.
    return base + pointer(*[p for p in loc if p not in ("__root__",)])


def _validation_error(base: str, exc: ValidationError, what: str) -> BundleError:
    err = exc.errors()[0]
    extra = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return BundleError(_loc_pointer(base, err.get("loc", ())), f"{what}: {err['msg']}{extra}")


# --------------------------------------------------------------------------------------------
# Parsed entries and reference resolution


class _Skip(Exception):
    """An entry of a supported type that carries nothing carepath can use."""


@dataclass
class _Entry:
    index: int
    base: str  # JSON pointer of the resource
    rtype: str
    rid: str | None
    full_url: str | None
    model: Any
    key: str | None = None  # "Type/id"
    fact_id: str | None = None
    id_suffix: str = ""  # "~2", "~3" ... for a second, different resource under one fullUrl / Type/id
    notes: list[str] = field(default_factory=list)  # data-quality notes kept on the entry's facts
    raw: dict = field(default_factory=dict, repr=False)  # the entry as sent (to tell identical repeats)


def _ref_key(ref: str) -> str | None:
    """'Patient/1', 'https://x/fhir/Patient/1/_history/2' -> 'Patient/1'."""
    parts = [p for p in ref.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return None


class _Index:
    """fullUrl and Type/id -> entry. Repeats were settled by `_settle_repeats` first: the first entry
    under a fullUrl or Type/id is the one references resolve to."""

    def __init__(self, entries: list[_Entry]):
        self.by_url: dict[str, _Entry] = {}
        self.by_key: dict[str, _Entry] = {}
        for e in entries:
            if e.full_url:
                self.by_url.setdefault(e.full_url, e)
            if e.key:
                self.by_key.setdefault(e.key, e)

    def resolve(self, ref: Any) -> _Entry | None:
        r = getattr(ref, "reference", None) if ref is not None else None
        if not r or r.startswith("#"):
            return None
        if r in self.by_url:
            return self.by_url[r]
        key = _ref_key(r)
        return self.by_key.get(key) if key else None


# --------------------------------------------------------------------------------------------
# Small value helpers


def _coding(c: Any) -> Coding | None:
    if c is None or not (c.code and c.code.strip()):
        return None
    return Coding(system=c.system or "", code=c.code, display=c.display)


def _codes(cc: Any) -> list[Coding]:
    if cc is None:
        return []
    ccs = cc if isinstance(cc, list) else [cc]
    out = []
    for one in ccs:
        for c in one.coding or []:
            k = _coding(c)
            if k is not None and k not in out:
                out.append(k)
    return out


def _code_list(cc: Any) -> list[str]:
    """Plain code strings of one or more CodeableConcepts (status-like attrs)."""
    return [c.code for c in _codes(cc)]


def _first_code(cc: Any) -> str | None:
    codes = _code_list(cc)
    return codes[0] if codes else None


def _when(value: Any, warnings: list[str], where: str) -> dt.datetime | None:
    """FHIR date/dateTime/instant -> datetime; partial dates ('2020', '2020-03') -> first day."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    s = str(value)
    if re.fullmatch(r"\d{4}", s):
        warnings.append(f"{where}: partial date {s!r} taken as {s}-01-01")
        return dt.datetime(int(s), 1, 1)
    if re.fullmatch(r"\d{4}-\d{2}", s):
        warnings.append(f"{where}: partial date {s!r} taken as {s}-01")
        return dt.datetime(int(s[:4]), int(s[5:]), 1)
    return dt.datetime.fromisoformat(s)


def _ext(model: Any, url: str, attr: str = "extension") -> list[tuple[int, Any]]:
    return [(k, x) for k, x in enumerate(getattr(model, attr, None) or []) if x.url == url]


def _ext_str(x: Any) -> str | None:
    for name in ("valueCode", "valueString", "valueId", "valueUri"):
        v = getattr(x, name, None)
        if v is not None:
            return v
    if getattr(x, "valueCoding", None) is not None:
        return x.valueCoding.code
    if getattr(x, "valueCodeableConcept", None) is not None:
        return _first_code(x.valueCodeableConcept)
    if getattr(x, "valueIdentifier", None) is not None:
        return x.valueIdentifier.value
    return None


def _coded_ext(e: _Entry, url: str, allowed: Callable[[str], Any]) -> Any:
    """Our coded extension on a resource -> parsed value; invalid code -> BundleError."""
    found = _ext(e.model, url)
    if not found:
        return None
    k, x = found[0]
    raw = _ext_str(x)
    try:
        return allowed(raw)
    except ValueError:
        raise BundleError(e.base + pointer("extension", k), f"{url}: {raw!r} is not an allowed value") from None


def _count(d: dict[str, int], key: str) -> None:
    d[key] = d.get(key, 0) + 1



# --------------------------------------------------------------------------------------------
# Drafts: what a reader returns


@dataclass
class _Draft:
    """Fact fields plus where in the resource each came from (for error pointers)."""

    entry: _Entry
    kind: FactKind
    codes: list[Coding]
    start: dt.datetime
    end: dt.datetime | None = None
    id_suffix: str = ""
    value: float | None = None
    unit: str | None = None
    value_codes: list[Coding] = field(default_factory=list)
    status: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, tuple] = field(default_factory=dict)
    base: str = ""


def _pick_time(r: Any, names: list[str], warnings: list[str], where: str) -> tuple[dt.datetime | None, dt.datetime | None, dict]:
    """First present of several dateTime / Period / instant elements -> (start, end, paths)."""
    for name in names:
        v = getattr(r, name, None)
        if v is None:
            continue
        if hasattr(v, "start") and hasattr(v, "end"):  # Period
            s, en = _when(v.start, warnings, where), _when(v.end, warnings, where)
            if s is None and en is None:
                continue
            return (s or en), en, {"start": (name, "start" if s else "end"), "end": (name, "end")}
        return _when(v, warnings, where), None, {"start": (name,)}
    return None, None, {}


def _require_codes(codes: list[Coding], what: str) -> list[Coding]:
    if not codes:
        raise _Skip(f"no usable code in {what} (text-only or missing)")
    return codes


def _require_start(start: dt.datetime | None, what: str) -> dt.datetime:
    if start is None:
        raise _Skip(f"no date ({what})")
    return start



def _statuses_into(d: _Draft, r: Any) -> None:
    """Condition and AllergyIntolerance: clinical and verification status, as their first code."""
    if r.clinicalStatus is not None:
        d.attrs["clinical_status"] = _first_code(r.clinicalStatus)
    if r.verificationStatus is not None:
        d.attrs["verification_status"] = _first_code(r.verificationStatus)



class _Ctx:
    def __init__(self, index: _Index, warnings: list[str], used: set[int]):
        self.index, self.warnings, self.used = index, warnings, used
        self.encounter_setting: dict[int, CareSetting] = {}
        self.diagnosed_in: dict[int, _Entry] = {}  # Condition entry index -> Encounter listing it

    def ref_fact_id(self, ref: Any) -> str | None:
        target = self.index.resolve(ref)
        if target is not None:
            return target.fact_id
        r = getattr(ref, "reference", None)
        return (_ref_key(r) or r) if r else None

    def contained_or_bundle(self, e: _Entry, ref: Any, rtype: str) -> Any:
        r = getattr(ref, "reference", None)
        if not r:
            return None
        if r.startswith("#"):
            return next((c for c in e.model.contained or [] if c.id == r[1:] and c.get_resource_type() == rtype), None)
        target = self.index.resolve(ref)
        if target is None or target.rtype != rtype:
            return None
        self.used.add(target.index)
        return target.model
