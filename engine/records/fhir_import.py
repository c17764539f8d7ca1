"""Import FHIR R4 Bundles into `PatientRecord`s, and export a record back as a FHIR Bundle.

Parsing uses the **R4B** models of fhir.resources: 8.x validates against R5 by default and rejects
R4 data (Encounter.class changed shape), see shared/design.md.

Every entry of a bundle ends up in exactly one bucket of `ImportResult`, so nothing is lost
silently:

- ``imported``    Patient and clinical resources that became a patient / facts,
- ``supporting``  Medication / Device / Organization used only through a reference (their code
                  or ODS code is copied onto the referring fact or patient),
- ``unsupported`` resource types carepath does not import (counted by type),
- ``skipped``     entries of a supported type that carry nothing usable (no code, no date, no
                  patient, an unknown modifierExtension ...), each with a human-readable reason.

Malformed input (not a Bundle, an entry without a resource, a resource failing FHIR R4 validation,
a value our own model rejects) raises `BundleError` with a JSON pointer into the bundle.

Fact ids are the resource's relative reference, ``Condition/<id>``; observation components get
``Observation/<id>#<component code>``. Reference attrs (``encounter``, ``diagnoses``) hold the
fact ids of the referenced resources so they join directly.

carepath extensions and identifiers (all optional; ``https://carepath.example/fhir/...``):

=================================================  ===========  ======================================
``StructureDefinition/locality``  on Patient       valueString  patient's locality
``StructureDefinition/mdt``  on Patient            valueString  multidisciplinary team
``StructureDefinition/practice``  on Patient       valueCode    GP practice ODS code (when there is no
                                                                generalPractitioner with an ODS code)
``StructureDefinition/registered-on``  on Patient  valueDate    date registered with the practice
``StructureDefinition/care-setting``  any          valueCode    gp | acute | community |
                                                                mental-health | social-care | other;
                                                                overrides the derived care setting
``StructureDefinition/exception-type``  any        valueCode    declined | unsuitable |
                                                                invited-no-response: the fact becomes
                                                                kind=exception (QOF exception code)
``StructureDefinition/fact-kind``  any             valueCode    explicit fact kind (written by export
                                                                for kind=other facts)
``StructureDefinition/fact-extra``  any            valueString  JSON object with the fact's attrs (and
                                                                status / value / unit / value_codes
                                                                where the resource has no native place
                                                                for them); overrides what is read from
                                                                native elements. Written by export so
                                                                our own data round-trips losslessly
``Id/fact-id``  identifier system, any             value        the fact id to use instead of Type/id
``Id/source/<system>``  identifier on Patient      value        Patient.source_ids[<system>]
``source/<system>`` as ``meta.source``, any        (uri)        the fact's source system, overriding
                                                                the `source_system` argument (export
                                                                writes it: a registry export mixes
                                                                sources, re-import must keep them)
=================================================  ===========  ======================================

Care setting: our extension wins; an Encounter's class maps IMP/ACUTE/NONAC/EMER/SS/OBSENC/PRENC
-> acute, HH/FLD -> community, anything else (AMB, VR, ...) -> gp; other resources inherit the
care setting of the Encounter they reference (a Condition also that of an Encounter listing it as
a diagnosis) when it is in the bundle, else gp.

Coverage is imported as kind=other (codes = Coverage.type, attrs["payer"] = payor names or
references, start/end = period) so payer stratification (eCQM supplemental data) stays possible;
a Coverage without type or period is skipped with a reason.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle, BundleEntry
from pydantic import BaseModel, Field, ValidationError

from engine.records.model import (
    CareSetting,
    Coding,
    ExceptionType,
    Fact,
    FactKind,
    Patient,
    PatientRecord,
    Sex,
)
from engine.records.nhs_number import is_valid_nhs_number, make_nhs_number

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

BUNDLE_TYPES = {"transaction", "batch", "collection", "searchset", "document"}

ENCOUNTER_CLASS_SETTING = {
    **dict.fromkeys(["IMP", "ACUTE", "NONAC", "EMER", "SS", "OBSENC", "PRENC"], CareSetting.acute),
    **dict.fromkeys(["HH", "FLD"], CareSetting.community),
    **dict.fromkeys(["AMB", "VR"], CareSetting.gp),
}
SEX = {"male": Sex.male, "female": Sex.female, "other": Sex.other, "unknown": Sex.unknown}
# Resources used only through references from facts/patients; counted as unsupported when unused.
SUPPORTING_TYPES = {"Medication", "Device", "Organization"}


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
# Patients


def pseudo_nhs_number(source_id: str) -> str:
    """A deterministic, valid NHS number in the 999 test range derived from a source id."""
    n = int(hashlib.sha256(source_id.encode()).hexdigest(), 16) % 1_000_000
    for step in range(1_000_000):
        candidate = make_nhs_number(999_000_000 + (n + step) % 1_000_000)
        if candidate is not None and is_valid_nhs_number(candidate):
            return candidate
    raise AssertionError("unreachable: the 999 range has valid numbers")


_PATIENT_FIELD_PATH = {
    "birth_date": ("birthDate",),
    "death_date": ("deceasedDateTime",),
    "locality": ("extension",),
    "mdt": ("extension",),
    "registered_on": ("extension",),
    "given_name": ("name",),
    "family_name": ("name",),
    "source_ids": ("identifier",),
}


def _patient(e: _Entry, index: _Index, source_system: str, result: ImportResult, used: set[int]) -> Patient:
    p = e.model
    where = f"{e.base} Patient/{e.rid}"
    nhs = None
    nhs_path: tuple = ("identifier",)
    source_ids: dict[str, str] = {}
    for k, ident in enumerate(p.identifier or []):
        if ident.system == NHS_NUMBER_SYSTEM and ident.value and nhs is None:
            nhs, nhs_path = ident.value, ("identifier", k, "value")
        elif ident.system and ident.system.startswith(ID_SOURCE) and ident.value:
            source_ids[ident.system[len(ID_SOURCE):]] = ident.value
    if nhs is None:
        sid = e.rid or e.full_url
        if not sid:
            raise BundleError(e.base, "Patient has neither an NHS number nor an id to derive a stable pseudo NHS number from")
        nhs = pseudo_nhs_number(sid)
        source_ids[source_system] = sid
        result.warnings.append(f"{where}: no NHS number; using derived test-range number {nhs}")

    if p.birthDate is None:
        raise BundleError(e.base + "/birthDate", "Patient has no birthDate (carepath needs it for age-based rules)")
    birth = _when(p.birthDate, result.warnings, where).date()

    death = None
    if p.deceasedDateTime is not None:
        death = _when(p.deceasedDateTime, result.warnings, where).date()
    elif p.deceasedBoolean:
        result.warnings.append(f"{where}: deceased without a date; death_date left empty")

    practice, practice_path = None, ("generalPractitioner",)
    for k, gp in enumerate(p.generalPractitioner or []):
        if gp.identifier is not None and gp.identifier.system == ODS_SYSTEM and gp.identifier.value:
            practice, practice_path = gp.identifier.value, ("generalPractitioner", k, "identifier", "value")
            break
        org = index.resolve(gp)
        if org is not None and org.rtype == "Organization":
            ods = next((i.value for i in org.model.identifier or [] if i.system == ODS_SYSTEM and i.value), None)
            if ods:
                used.add(org.index)
                practice, practice_path = ods, ("generalPractitioner", k)
                break
    if practice is None:
        for k, x in _ext(p, EXT_PRACTICE):
            practice, practice_path = _ext_str(x), ("extension", k)

    def ext_value(url: str) -> Any:
        found = _ext(p, url)
        return _ext_str(found[0][1]) if found else None

    registered = None
    for _, x in _ext(p, EXT_REGISTERED_ON):
        raw = x.valueDate or x.valueDateTime
        registered = _when(raw, result.warnings, where).date() if raw else None

    name = next((n for n in p.name or [] if n.use == "official"), None) or next(iter(p.name or []), None)
    for m in p.modifierExtension or []:
        result.warnings.append(f"{where}: modifierExtension {m.url} not understood; patient imported as is")

    values = dict(
        nhs_number=nhs,
        birth_date=birth,
        sex=SEX.get(p.gender or "unknown", Sex.unknown),
        practice=practice,
        locality=ext_value(EXT_LOCALITY),
        mdt=ext_value(EXT_MDT),
        death_date=death,
        registered_on=registered,
        given_name=(name.given or [None])[0] if name else None,
        family_name=name.family if name else None,
        source_ids=source_ids,
    )
    try:
        return Patient(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        fld = err["loc"][0] if err.get("loc") else None
        path = {"nhs_number": nhs_path, "practice": practice_path}.get(fld) or _PATIENT_FIELD_PATH.get(fld, ())
        if not fld and "death" in err["msg"]:
            path = ("deceasedDateTime",)
        raise BundleError(e.base + pointer(*path), f"Patient: {err['msg']}") from None


# --------------------------------------------------------------------------------------------
# Facts


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


def _value_into(d: _Draft, holder: Any, path: tuple, warnings: list[str]) -> None:
    """Observation / component value[x] and dataAbsentReason."""
    q = getattr(holder, "valueQuantity", None)
    if q is not None:
        if q.value is not None:
            d.value = float(q.value)
            d.paths["value"] = path + ("valueQuantity", "value")
        d.unit = q.code or q.unit  # UCUM code over free-text unit
        if q.code and q.system:
            d.attrs["unit_system"] = q.system  # a coded unit (eCQMs read a value's unit only when coded in UCUM)
        if q.comparator:
            d.attrs["comparator"] = q.comparator
    elif getattr(holder, "valueInteger", None) is not None:
        d.value, d.paths["value"] = float(holder.valueInteger), path + ("valueInteger",)
    elif getattr(holder, "valueCodeableConcept", None) is not None:
        d.value_codes = _codes(holder.valueCodeableConcept)
        if not d.value_codes and holder.valueCodeableConcept.text:
            d.attrs["value_text"] = holder.valueCodeableConcept.text
    elif getattr(holder, "valueString", None) is not None:
        d.attrs["value_string"] = holder.valueString
    elif getattr(holder, "valueBoolean", None) is not None:
        d.attrs["value_boolean"] = holder.valueBoolean
    else:
        other = [n for n in ("valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod") if getattr(holder, n, None) is not None]
        if other:
            warnings.append(f"{d.entry.base + pointer(*path)}: {other[0]} is not imported (only Quantity, integer, CodeableConcept, string, boolean)")
    dar = getattr(holder, "dataAbsentReason", None)
    if dar is not None:
        code = _first_code(dar)
        if code is None:
            code = next((_ext_str(x) for x in dar.extension or [] if x.url == EXT_DATA_ABSENT), None) or dar.text or "unknown"
        d.attrs["data_absent_reason"] = code


def _observation(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.observation, _require_codes(_codes(r.code), "Observation.code"),
               _require_start(start, "effective[x] / issued"), end, status=r.status, paths=paths)
    if r.category:
        d.attrs["category"] = _code_list(r.category)
    _value_into(d, r, (), ctx.warnings)
    drafts = [d]
    seen: set[str] = set()
    for j, comp in enumerate(r.component or []):
        codes = _codes(comp.code)
        if not codes:
            ctx.warnings.append(f"{e.base}/component/{j}: component without a usable code not imported")
            continue
        suffix = "#" + codes[0].code
        if suffix in seen:  # the same component code twice: keep both, distinguishable
            suffix += f"-{j}"
        seen.add(suffix)
        c = _Draft(e, FactKind.observation, codes, d.start, d.end, id_suffix=suffix, status=r.status,
                   paths=dict(paths), base=pointer("component", j))
        c.attrs["component_of"] = e.fact_id
        if "category" in d.attrs:
            c.attrs["category"] = d.attrs["category"]
        _value_into(c, comp, ("component", j), ctx.warnings)
        drafts.append(c)
    return drafts


def _statuses_into(d: _Draft, r: Any) -> None:
    """Condition and AllergyIntolerance: clinical and verification status, as their first code."""
    if r.clinicalStatus is not None:
        d.attrs["clinical_status"] = _first_code(r.clinicalStatus)
    if r.verificationStatus is not None:
        d.attrs["verification_status"] = _first_code(r.verificationStatus)


def _condition(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, _, paths = _pick_time(r, ["onsetDateTime", "onsetPeriod", "recordedDate"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.condition, _require_codes(_codes(r.code), "Condition.code"),
               _require_start(start, "onset[x] / recordedDate"), paths=paths)
    if r.abatementDateTime is not None:
        d.end, d.paths["end"] = _when(r.abatementDateTime, ctx.warnings, e.base), ("abatementDateTime",)
    elif r.abatementPeriod is not None:
        d.end = _when(r.abatementPeriod.start or r.abatementPeriod.end, ctx.warnings, e.base)
        d.paths["end"] = ("abatementPeriod",)
    elif r.abatementString or r.abatementAge or r.abatementRange:
        d.attrs["abated"] = True  # abated at an unknown date
    _statuses_into(d, r)
    if r.category:
        d.attrs["category"] = _code_list(r.category)
    return [d]


def _medication_codes(e: _Entry, ctx: "_Ctx") -> list[Coding]:
    r = e.model
    if r.medicationCodeableConcept is not None:
        return _require_codes(_codes(r.medicationCodeableConcept), "medicationCodeableConcept")
    ref = r.medicationReference
    target = ctx.contained_or_bundle(e, ref, "Medication")
    if target is None:
        raise _Skip(f"medicationReference {getattr(ref, 'reference', None)!r} is neither contained nor in the bundle")
    return _require_codes(_codes(target.code), "the referenced Medication's code")


_SUPPLY_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7}


def _utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _supply_end(r: Any, start: dt.datetime, warnings: list[str], base: str) -> tuple[dt.datetime | None, tuple | None]:
    """A MedicationRequest with no end date lasts its days' supply: dispenseRequest.expectedSupplyDuration
    x (1 + numberOfRepeatsAllowed), from the start day to the last day covered (eCQM
    CumulativeMedicationDuration: Interval[start, start + total days - 1 day])."""
    dr = r.dispenseRequest
    q = dr.expectedSupplyDuration if dr is not None else None
    if q is None or q.value is None:
        return None, None
    per_unit = _SUPPLY_DAYS.get((q.code or q.unit or "").strip().lower())
    if per_unit is None:
        warnings.append(f"{base}/dispenseRequest/expectedSupplyDuration: unit {q.code or q.unit!r} is not days or "
                        f"weeks; no end date derived from the supply")
        return None, None
    total = float(q.value) * per_unit * (1 + (dr.numberOfRepeatsAllowed or 0))
    if total < 1:
        return None, None
    last_day = start.date() + dt.timedelta(days=int(total) - 1)
    return dt.datetime.combine(last_day, dt.time(23, 59, 59)), ("dispenseRequest", "expectedSupplyDuration")


def _medication(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r, w = e.model, ctx.warnings
    codes = _medication_codes(e, ctx)
    end, end_path = None, None
    if e.rtype == "MedicationRequest":
        bounds = next((di.timing.repeat.boundsPeriod for di in r.dosageInstruction or []
                       if di.timing and di.timing.repeat and di.timing.repeat.boundsPeriod), None)
        validity = r.dispenseRequest.validityPeriod if r.dispenseRequest else None
        start, paths = _when(r.authoredOn, w, e.base), {"start": ("authoredOn",)}
        for name, per in (("dosageInstruction", bounds), ("dispenseRequest", validity)):
            if per is None:
                continue
            if start is None and per.start is not None:
                start, paths = _when(per.start, w, e.base), {"start": (name,)}
            if end is None and per.end is not None:
                end, end_path = _when(per.end, w, e.base), (name,)
                if paths["start"] != (name,) and start is not None and end is not None and _utc(end) < _utc(start):
                    # authoredOn and the dosing / validity period are separate elements: an order
                    # recorded after the period it covers. Keep the order (its date is certain) and
                    # say why its end is not used, rather than refuse the patient's whole bundle.
                    e.notes.append(f"{name} period ends {end.isoformat()} before the order's start "
                                   f"{start.isoformat()}; that end is not used")
                    w.append(f"{e.base}/{name}: {e.notes[-1]}")
                    end, end_path = None, None
        if end is None and start is not None:  # supply-based end, as eCQM medicationRequestPeriod()
            end, end_path = _supply_end(r, start, w, e.base)
        what = "authoredOn / dosage bounds / validityPeriod"
    elif e.rtype == "MedicationStatement":
        start, end, paths = _pick_time(r, ["effectiveDateTime", "effectivePeriod", "dateAsserted"], w, e.base)
        what = "effective[x] / dateAsserted"
    elif e.rtype == "MedicationDispense":
        start, end, paths = _pick_time(r, ["whenHandedOver", "whenPrepared"], w, e.base)
        what = "whenHandedOver / whenPrepared"
    else:  # MedicationAdministration
        start, end, paths = _pick_time(r, ["effectiveDateTime", "effectivePeriod"], w, e.base)
        what = "effective[x]"
    d = _Draft(e, FactKind.medication, codes, _require_start(start, what), end, status=r.status, paths=paths)
    if end_path:
        d.paths["end"] = end_path
    if getattr(r, "intent", None):
        d.attrs["intent"] = r.intent
    if getattr(r, "doNotPerform", None) is not None:
        d.attrs["do_not_perform"] = r.doNotPerform
    if getattr(r, "category", None):
        d.attrs["category"] = _code_list(r.category)
    return [d]


def _procedure(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["performedDateTime", "performedPeriod"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.procedure, _require_codes(_codes(r.code), "Procedure.code"),
               _require_start(start, "performedDateTime / performedPeriod"), end, status=r.status, paths=paths)
    if r.category is not None:
        d.attrs["category"] = _code_list(r.category)
    return [d]


def _encounter(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["period"], ctx.warnings, e.base)
    # An encounter without a type is still a visit: fall back to its class coding.
    codes = _codes(r.type) or [c for c in [_coding(r.class_fhir)] if c]
    d = _Draft(e, FactKind.encounter, _require_codes(codes, "Encounter.type / class"),
               _require_start(start, "period"), end, status=r.status, paths=paths)
    if r.class_fhir is not None and r.class_fhir.code:
        d.attrs["class"] = r.class_fhir.code
    if r.hospitalization is not None and r.hospitalization.dischargeDisposition is not None:
        d.attrs["discharge_disposition"] = [{"system": c.system, "code": c.code} for c in _codes(r.hospitalization.dischargeDisposition)]
    diagnoses = [ctx.ref_fact_id(dx.condition) for dx in r.diagnosis or []]
    if any(diagnoses):
        d.attrs["diagnoses"] = [x for x in diagnoses if x]
    return [d]


def _service_request(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["authoredOn", "occurrenceDateTime", "occurrencePeriod"], ctx.warnings, e.base)
    if r.authoredOn is not None and r.occurrencePeriod is not None and r.occurrencePeriod.end is not None:
        end, paths["end"] = _when(r.occurrencePeriod.end, ctx.warnings, e.base), ("occurrencePeriod", "end")
    d = _Draft(e, FactKind.referral, _require_codes(_codes(r.code), "ServiceRequest.code"),
               _require_start(start, "authoredOn / occurrence[x]"), end, status=r.status, paths=paths)
    d.attrs["intent"] = r.intent
    if r.doNotPerform is not None:
        d.attrs["do_not_perform"] = r.doNotPerform
    if r.category:
        d.attrs["category"] = _code_list(r.category)
    return [d]


def _device_codes(e: _Entry, ctx: "_Ctx", cc: Any, ref: Any, what: str) -> list[Coding]:
    if cc is not None:
        return _require_codes(_codes(cc), what)
    device = ctx.contained_or_bundle(e, ref, "Device")
    if device is None:
        raise _Skip(f"device reference {getattr(ref, 'reference', None)!r} is neither contained nor in the bundle")
    return _require_codes(_codes(device.type), "the referenced Device's type")


def _device_request(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["authoredOn", "occurrenceDateTime", "occurrencePeriod"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.device, _device_codes(e, ctx, r.codeCodeableConcept, r.codeReference, "DeviceRequest.code"),
               _require_start(start, "authoredOn / occurrence[x]"), end, status=r.status, paths=paths)
    d.attrs["intent"] = r.intent
    for _, x in _ext(r, EXT_DNP_R5, "modifierExtension"):
        d.attrs["do_not_perform"] = bool(x.valueBoolean)
    return [d]


def _device_use(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["timingDateTime", "timingPeriod", "recordedOn"], ctx.warnings, e.base)
    return [_Draft(e, FactKind.device, _device_codes(e, ctx, None, r.device, "DeviceUseStatement.device"),
                   _require_start(start, "timing[x] / recordedOn"), end, status=r.status, paths=paths)]


def _coverage(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["period"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.other, _require_codes(_codes(r.type), "Coverage.type"),
               _require_start(start, "Coverage.period"), end, status=r.status, paths=paths)
    payers = [p.display or p.reference or (p.identifier.value if p.identifier else None) for p in r.payor or []]
    d.attrs["payer"] = [p for p in payers if p]
    return [d]


def _allergy(e: _Entry, ctx: "_Ctx") -> list[_Draft]:
    """AllergyIntolerance -> a condition-kind fact (attrs resource = AllergyIntolerance): an allergy or
    intolerance to a substance, with its clinical / verification status, from onset or recorded date."""
    r = e.model
    start, end, paths = _pick_time(r, ["onsetDateTime", "onsetPeriod", "recordedDate"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.condition, _require_codes(_codes(r.code), "AllergyIntolerance.code"),
               _require_start(start, "onset[x] / recordedDate"), end, paths=paths)
    d.attrs["resource"] = "AllergyIntolerance"
    _statuses_into(d, r)
    if r.category:
        d.attrs["category"] = list(r.category)
    return [d]


# Coded elements kept as fact attributes (lists of {system, code}), whatever the resource: the body
# site (laterality included: 24028007 right, 7771000 left), reasons (reasonCode, the QI-Core
# not-done / do-not-perform / refused reasons, statusReason) and a condition's severity.
EXT_REASONS = ("qicore-notDoneReason", "qicore-doNotPerformReason", "qicore-reasonRefused")
EXT_NOT_DONE = "qicore-notDone"


def _coded_attrs(e: _Entry, attrs: dict) -> None:
    r = e.model
    as_list = lambda codes: [{"system": c.system, "code": c.code} for c in codes]  # noqa: E731
    sites = [c for cc in (getattr(r, "bodySite", None) or []) for c in _codes(cc)]
    if sites:
        attrs["body_site"] = as_list(sites)
    reasons = [c for cc in (getattr(r, "reasonCode", None) or []) for c in _codes(cc)]
    for x in list(getattr(r, "extension", None) or []):
        if x.url and x.url.rsplit("/", 1)[-1] in EXT_REASONS and x.valueCodeableConcept is not None:
            reasons += _codes(x.valueCodeableConcept)
    if getattr(r, "statusReason", None) is not None and not isinstance(r.statusReason, list):
        reasons += _codes(r.statusReason)
    if reasons:
        attrs["reason"] = as_list(reasons)
    if getattr(r, "severity", None) is not None and not isinstance(r.severity, str):
        sev = _codes(r.severity)
        if sev:
            attrs["severity"] = as_list(sev)
    profiles = [p.rstrip("/").rsplit("/", 1)[-1].split("|")[0] for p in ((r.meta.profile or []) if r.meta else []) if p]
    if profiles:  # the declared profiles by name (QI-Core negation: e.g. qicore-servicenotrequested)
        attrs["profile"] = profiles
    if any(m.url and m.url.rsplit("/", 1)[-1] == EXT_NOT_DONE and m.valueBoolean
           for m in getattr(r, "modifierExtension", None) or []):
        attrs["do_not_perform"] = True  # QI-Core "not done" (e.g. an observation not performed, with a reason)


BUILDERS: dict[str, Callable[[_Entry, "_Ctx"], list[_Draft]]] = {
    "AllergyIntolerance": _allergy,
    "Observation": _observation,
    "Condition": _condition,
    "MedicationRequest": _medication,
    "MedicationStatement": _medication,
    "MedicationDispense": _medication,
    "MedicationAdministration": _medication,
    "Procedure": _procedure,
    "Encounter": _encounter,
    "ServiceRequest": _service_request,
    "DeviceRequest": _device_request,
    "DeviceUseStatement": _device_use,
    "Coverage": _coverage,
}
# Modifier extensions we understand; any other one means we cannot safely read the resource.
KNOWN_MODIFIERS = {"DeviceRequest": {EXT_DNP_R5}}
PATIENT_REF = {"Coverage": "beneficiary", "AllergyIntolerance": "patient"}
ENCOUNTER_REF = {"MedicationStatement": "context", "MedicationDispense": "context", "MedicationAdministration": "context"}


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


def _fact_id(e: _Entry) -> str | None:
    for ident in getattr(e.model, "identifier", None) or []:
        if ident.system == ID_FACT and ident.value:
            return ident.value
    if e.key:
        return e.key
    return e.full_url


def _encounter_setting(e: _Entry) -> CareSetting:
    override = _coded_ext(e, EXT_CARE_SETTING, CareSetting)
    if override is not None:
        return override
    cls = e.model.class_fhir.code if e.model.class_fhir is not None else None
    return ENCOUNTER_CLASS_SETTING.get(cls or "", CareSetting.gp)


def _care_setting(e: _Entry, ctx: _Ctx) -> CareSetting:
    if e.rtype == "Encounter":
        return ctx.encounter_setting[e.index]
    override = _coded_ext(e, EXT_CARE_SETTING, CareSetting)
    if override is not None:
        return override
    enc = ctx.index.resolve(getattr(e.model, ENCOUNTER_REF.get(e.rtype, "encounter"), None))
    if enc is None:
        enc = ctx.diagnosed_in.get(e.index)
    if enc is not None and enc.rtype == "Encounter":
        return ctx.encounter_setting[enc.index]
    return CareSetting.gp


def _fact(d: _Draft, ctx: _Ctx, source_system: str) -> Fact:
    e = d.entry
    kind, exception_type = d.kind, None
    explicit_kind = _coded_ext(e, EXT_FACT_KIND, FactKind)
    if explicit_kind is not None:
        kind = explicit_kind
    exception_type = _coded_ext(e, EXT_EXCEPTION_TYPE, ExceptionType)
    if exception_type is not None:
        kind = FactKind.exception
    attrs = dict(d.attrs)
    if not d.id_suffix:
        _coded_attrs(e, attrs)
    if d.paths.get("start", ())[-1:] == ("end",):
        attrs["start_unknown"] = True  # a period without a start: its end stands in (`where start exists` is false)
    if e.notes:
        attrs["data_quality"] = list(e.notes)
    enc_ref = getattr(e.model, ENCOUNTER_REF.get(e.rtype, "encounter"), None)
    if enc_ref is not None and ctx.ref_fact_id(enc_ref):
        attrs["encounter"] = ctx.ref_fact_id(enc_ref)
    fields = dict(value=d.value, unit=d.unit, value_codes=d.value_codes, status=d.status, attrs=attrs)
    # Our own export's extras describe the resource as a whole, never one of its components.
    for k, x in _ext(e.model, EXT_FACT_EXTRA) if not d.id_suffix else []:
        try:
            extra = json.loads(x.valueString or "")
            if not isinstance(extra, dict) or set(extra) - set(fields):
                raise ValueError(f"expected an object with keys among {sorted(fields)}")
        except ValueError as exc:
            raise BundleError(e.base + pointer("extension", k), f"{EXT_FACT_EXTRA}: {exc}") from None
        fields.update(extra)
    meta_source = e.model.meta.source if e.model.meta is not None else None
    if meta_source and meta_source.startswith(META_SOURCE) and len(meta_source) > len(META_SOURCE):
        source_system = meta_source[len(META_SOURCE):]
    try:
        return Fact(
            id=e.fact_id + d.id_suffix,
            kind=kind,
            codes=d.codes,
            start=d.start,
            end=d.end,
            exception_type=exception_type,
            source_system=source_system,
            care_setting=_care_setting(e, ctx),
            **fields,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        fld = err["loc"][0] if err.get("loc") else ("end" if "ends" in err["msg"] else None)
        path = d.paths.get(fld) if fld else None
        where = e.base + pointer(*path) if path else e.base + d.base
        raise BundleError(where, f"{e.rtype}: {err['msg']}") from None


# --------------------------------------------------------------------------------------------
# The bundle


def _parse(data: Any) -> list[_Entry]:
    if not isinstance(data, dict):
        raise BundleError("", f"expected a JSON object (a FHIR Bundle), got {type(data).__name__}")
    if data.get("resourceType") != "Bundle":
        raise BundleError("/resourceType", f"expected resourceType 'Bundle', got {data.get('resourceType')!r}")
    if data.get("type") not in BUNDLE_TYPES:
        raise BundleError("/type", f"bundle type {data.get('type')!r} does not carry resources to import; expected one of {sorted(BUNDLE_TYPES)}")
    entries = data.get("entry") or []
    if not isinstance(entries, list):
        raise BundleError("/entry", "entry must be an array")
    try:
        Bundle.model_validate({k: v for k, v in data.items() if k != "entry"})
    except ValidationError as exc:
        raise _validation_error("", exc, "Bundle") from None

    parsed = []
    for i, entry in enumerate(entries):
        ep = pointer("entry", i)
        if not isinstance(entry, dict):
            raise BundleError(ep, "entry must be an object")
        res = entry.get("resource")
        if not isinstance(res, dict):
            raise BundleError(ep, "entry has no resource (deletes and references-only entries are not importable)")
        try:
            BundleEntry.model_validate({k: v for k, v in entry.items() if k != "resource"})
        except ValidationError as exc:
            raise _validation_error(ep, exc, "Bundle.entry") from None
        rtype = res.get("resourceType")
        base = ep + "/resource"
        try:
            cls = get_fhir_model_class(rtype) if isinstance(rtype, str) else None
        except (ValueError, KeyError):
            cls = None
        if cls is None:
            raise BundleError(base + "/resourceType", f"{rtype!r} is not a FHIR R4 resource type")
        try:
            model = cls.model_validate(res)
        except ValidationError as exc:
            raise _validation_error(base, exc, f"{rtype} is not valid FHIR R4") from None
        rid = res.get("id")
        parsed.append(_Entry(i, base, rtype, rid, entry.get("fullUrl"), model, key=f"{rtype}/{rid}" if rid else None, raw=entry))
    return parsed


def _settle_repeats(entries: list[_Entry], warnings: list[str]) -> list[_Entry]:
    """One resource sent twice under one fullUrl (or one Type/id) is a data-quality problem of the
    sender, not a reason to refuse the patient's whole record (test-deck generators and some feeds do
    it). An identical repeat is merged into the first; a different one is kept as its own fact, its id
    suffixed ~2, ~3 ..., with a note on both saying which entries collided. References to the fullUrl
    resolve to the first entry. Notes travel with the facts (attrs.data_quality) and the warnings."""
    kept: list[_Entry] = []
    first: dict[str, _Entry] = {}
    repeats: dict[str, int] = {}
    for e in entries:
        names = [n for n in (e.full_url and f"fullUrl {e.full_url}", e.key and f"resource {e.key}") if n]
        earlier = next((first[n] for n in names if n in first), None)
        if earlier is None:
            for n in names:
                first[n] = e
            kept.append(e)
            continue
        what = next(n for n in names if first.get(n) is earlier)
        if e.raw == earlier.raw:
            note = f"{what} sent twice, identical (/entry/{earlier.index} and /entry/{e.index}): merged into one"
            earlier.notes.append(note)
            warnings.append(f"{e.base}: {note}")
            continue
        repeats[what] = repeats.get(what, 1) + 1
        e.id_suffix = f"~{repeats[what]}"
        note = (f"{what} sent twice with different content (/entry/{earlier.index} and /entry/{e.index}): "
                f"both kept, the second as fact id suffix {e.id_suffix}; references resolve to /entry/{earlier.index}")
        earlier.notes.append(note)
        e.notes.append(note)
        warnings.append(f"{e.base}: {note}")
        kept.append(e)
    return kept


def import_bundle(data: dict, *, source_system: str = "fhir", single_patient: bool = False) -> ImportResult:
    """Turn a FHIR R4 transaction/collection Bundle into one PatientRecord per Patient."""
    result = ImportResult()
    entries = _settle_repeats(_parse(data), result.warnings)
    index = _Index(entries)
    used: set[int] = set()  # entries of supporting resources actually referenced
    ctx = _Ctx(index, result.warnings, used)
    for e in entries:
        e.fact_id = _fact_id(e)
        if e.fact_id and e.id_suffix:
            e.fact_id += e.id_suffix

    # Patients first: every fact needs one.
    records: dict[int, PatientRecord] = {}
    by_nhs: dict[str, int] = {}
    for e in entries:
        if e.rtype != "Patient":
            continue
        patient = _patient(e, index, source_system, result, used)
        if patient.nhs_number in by_nhs:
            raise BundleError(e.base, f"NHS number {patient.nhs_number} also belongs to the Patient at /entry/{by_nhs[patient.nhs_number]}")
        by_nhs[patient.nhs_number] = e.index
        records[e.index] = PatientRecord(patient=patient)
        _count(result.imported, "Patient")

    # Encounters' care settings, and which encounter lists each condition as a diagnosis.
    for e in entries:
        if e.rtype == "Encounter":
            ctx.encounter_setting[e.index] = _encounter_setting(e)
            for dx in e.model.diagnosis or []:
                cond = index.resolve(dx.condition)
                if cond is not None:
                    ctx.diagnosed_in.setdefault(cond.index, e)

    for e in entries:
        if e.rtype == "Patient":
            continue
        builder = BUILDERS.get(e.rtype)
        if builder is None:
            continue  # supporting / unsupported: counted below, once references are known
        where = f"{e.base} {e.rtype}/{e.rid}"
        try:
            unknown = [m.url for m in e.model.modifierExtension or [] if m.url not in KNOWN_MODIFIERS.get(e.rtype, set())
                       and (m.url or "").rsplit("/", 1)[-1] != EXT_NOT_DONE]
            if unknown:
                raise _Skip(f"modifierExtension {unknown[0]} changes the meaning of the resource and is not understood")
            if not e.fact_id:
                raise _Skip("no id or fullUrl, so no stable fact id for idempotent ingest")
            subject = getattr(e.model, PATIENT_REF.get(e.rtype, "subject"), None)
            target = index.resolve(subject)
            if (single_patient and target is None and len(records) == 1 and subject is not None
                    and getattr(subject, "reference", None)):
                # a test-case bundle is by definition one patient's record (eCQM conformance decks):
                # a subject that names no resource of the bundle is taken as that patient, and said so
                target = next(x for x in entries if x.index in records)
                ctx.warnings.append(f"{where}: subject {subject.reference!r} is not in the bundle; taken as the "
                                    f"bundle's only patient (single-patient bundle)")
            if target is None or target.index not in records:
                ref = getattr(subject, "reference", None)
                raise _Skip(f"subject {ref!r} is not a Patient in this bundle" if ref else "no subject/patient reference")
            drafts = builder(e, ctx)
        except _Skip as skip:
            result.skipped.append(f"{where}: {skip}")
            continue
        except ValidationError as exc:  # a coding our model refuses (control characters, over-long code ...)
            err = exc.errors()[0]
            raise BundleError(e.base, f"{e.rtype}: coding {'/'.join(map(str, err.get('loc', ())))}: {err['msg']}") from None
        record = records[target.index]
        for d in drafts:
            record.facts.append(_fact(d, ctx, source_system))
        _count(result.imported, e.rtype)

    for e in entries:
        if e.rtype == "Patient" or e.rtype in BUILDERS:
            continue
        if e.rtype in SUPPORTING_TYPES and e.index in used:
            _count(result.supporting, e.rtype)
        else:
            _count(result.unsupported, e.rtype)

    for i, rec in records.items():
        try:  # re-validate: duplicate fact ids are only detectable on the whole record
            result.records.append(PatientRecord.model_validate(rec.model_dump()))
        except ValidationError as exc:
            raise BundleError(pointer("entry", i), f"record of this Patient is invalid: {exc.errors()[0]['msg']}") from None
    return result


# --------------------------------------------------------------------------------------------
# Export


# The resource each fact kind is written as. Exceptions and `other` facts carry our
# exception-type / fact-kind extension, which decides their kind on import.
EXPORT_TYPE = {
    FactKind.condition: "Condition",
    FactKind.observation: "Observation",
    FactKind.medication: "MedicationStatement",
    FactKind.procedure: "Procedure",
    FactKind.encounter: "Encounter",
    FactKind.referral: "ServiceRequest",
    FactKind.device: "DeviceRequest",
    FactKind.exception: "Observation",
    FactKind.other: "Observation",
}
SETTING_CLASS = {CareSetting.acute: "IMP", CareSetting.community: "HH"}  # else AMB
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
UCUM = "http://unitsofmeasure.org"
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ABSENT = {"extension": [{"url": EXT_DATA_ABSENT, "valueCode": "unknown"}]}


def _urn(key: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "https://carepath.example/fhir/" + key))


def _iso(d: dt.datetime) -> str:
    # Fact datetimes are naive UTC; FHIR wants an offset whenever there is a time.
    return d.replace(tzinfo=dt.timezone.utc).isoformat()


def _cc(codes: list[Coding]) -> dict:
    return {"coding": [{k: v for k, v in (("system", c.system or None), ("code", c.code), ("display", c.display)) if v} for c in codes]}


def _status_cc(system: str, code: str | None) -> dict | None:
    return {"coding": [{"system": system, "code": code}]} if code else None


def _export_fact(f: Fact, rtype: str, rid: str, patient_ref: dict, refs: dict[str, str]) -> dict:
    res: dict[str, Any] = {"resourceType": rtype, "id": rid, "meta": {"source": META_SOURCE + f.source_system}}
    ext = [{"url": EXT_CARE_SETTING, "valueCode": f.care_setting.value}]
    if f.exception_type is not None:
        ext.append({"url": EXT_EXCEPTION_TYPE, "valueCode": f.exception_type.value})
    elif EXPORT_TYPE[f.kind] != rtype or f.kind == FactKind.other:
        ext.append({"url": EXT_FACT_KIND, "valueCode": f.kind.value})
    extra: dict[str, Any] = {"attrs": f.attrs}
    res["extension"] = ext
    if f.id != f"{rtype}/{rid}":
        res["identifier"] = [{"system": ID_FACT, "value": f.id}]
    res["subject"] = patient_ref
    a = f.attrs
    if a.get("encounter") in refs:
        res["context" if rtype == "MedicationStatement" else "encounter"] = {"reference": refs[a["encounter"]]}
    start, end = _iso(f.start), _iso(f.end) if f.end else None
    when = {"start": start, **({"end": end} if end else {})}
    status_native = rtype != "Condition"
    value_native = rtype == "Observation"

    if rtype == "Condition":
        res["code"] = _cc(f.codes)
        res["onsetDateTime"] = start
        if end:
            res["abatementDateTime"] = end
        cs = _status_cc("http://terminology.hl7.org/CodeSystem/condition-clinical", a.get("clinical_status"))
        vs = _status_cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", a.get("verification_status"))
        res.update({k: v for k, v in (("clinicalStatus", cs), ("verificationStatus", vs)) if v})
    elif rtype == "Observation":
        res["code"] = _cc(f.codes)
        res.update({"effectivePeriod": when} if end else {"effectiveDateTime": start})
        if f.value is not None or f.unit:
            q = {"value": f.value} if f.value is not None else {}
            if f.unit:
                q.update(unit=f.unit, system=UCUM, code=f.unit)
            res["valueQuantity"] = q
            if f.value_codes:
                extra["value_codes"] = [c.model_dump() for c in f.value_codes]
        elif f.value_codes:
            res["valueCodeableConcept"] = _cc(f.value_codes)
    elif rtype == "MedicationStatement":
        res["medicationCodeableConcept"] = _cc(f.codes)
        res.update({"effectivePeriod": when} if end else {"effectiveDateTime": start})
    elif rtype == "Procedure":
        res["code"] = _cc(f.codes)
        res.update({"performedPeriod": when} if end else {"performedDateTime": start})
    elif rtype == "Encounter":
        res["class"] = {"system": ACT_CODE, "code": a.get("class") or SETTING_CLASS.get(f.care_setting, "AMB")}
        res["type"] = [_cc(f.codes)]
        res["period"] = when
        dx = [{"condition": {"reference": refs[c]}} for c in a.get("diagnoses") or [] if c in refs]
        if dx:
            res["diagnosis"] = dx
    elif rtype in ("ServiceRequest", "DeviceRequest"):
        res["code" if rtype == "ServiceRequest" else "codeCodeableConcept"] = _cc(f.codes)
        res.update({"occurrencePeriod": when} if end else {"authoredOn": start})
        if a.get("intent"):
            res["intent"] = a["intent"]
        else:
            res["_intent"] = _ABSENT
        if isinstance(a.get("do_not_perform"), bool):
            if rtype == "ServiceRequest":
                res["doNotPerform"] = a["do_not_perform"]
            else:
                res["modifierExtension"] = [{"url": EXT_DNP_R5, "valueBoolean": a["do_not_perform"]}]
    if status_native:
        if f.status is not None:
            res["status"] = f.status
        else:
            res["_status"] = _ABSENT  # required element, value unknown
    elif f.status is not None:
        extra["status"] = f.status
    if not value_native:
        extra.update({k: v for k, v in (("value", f.value), ("unit", f.unit)) if v is not None})
        if f.value_codes:
            extra["value_codes"] = [c.model_dump() for c in f.value_codes]
    ext.append({"url": EXT_FACT_EXTRA, "valueString": json.dumps(extra, sort_keys=True, default=str)})
    return res


def export_patient_bundle(record: PatientRecord) -> dict:
    """A collection Bundle (valid FHIR R4) with the patient and one resource per fact.

    Facts become native resources by kind (medication -> MedicationStatement, referral ->
    ServiceRequest, device -> DeviceRequest, other/exception -> Observation); components are
    written as Observations of their own. Our extensions carry what FHIR has no place for, and
    meta.source each fact's source system, so ``import_bundle(export_patient_bundle(r))`` equals
    ``r`` (attrs must be JSON values; patient source ids travel as identifiers).
    """
    p = record.patient
    sid = p.source_ids.get("fhir")
    pid = sid if sid and _FHIR_ID.fullmatch(sid) else f"nhs-{p.nhs_number}"
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": p.nhs_number}]
        + [{"system": ID_SOURCE + k, "value": v} for k, v in sorted(p.source_ids.items())],
        "gender": p.sex.value,
        "birthDate": p.birth_date.isoformat(),
    }
    if p.given_name or p.family_name:
        patient["name"] = [{"use": "official", **({"family": p.family_name} if p.family_name else {}),
                            **({"given": [p.given_name]} if p.given_name else {})}]
    if p.death_date:
        patient["deceasedDateTime"] = p.death_date.isoformat()
    if p.practice:
        patient["generalPractitioner"] = [{"identifier": {"system": ODS_SYSTEM, "value": p.practice}}]
    ext = [{"url": EXT_LOCALITY, "valueString": p.locality} if p.locality else None,
           {"url": EXT_MDT, "valueString": p.mdt} if p.mdt else None,
           {"url": EXT_REGISTERED_ON, "valueDate": p.registered_on.isoformat()} if p.registered_on else None]
    if any(ext):
        patient["extension"] = [x for x in ext if x]

    # Resource ids: reuse "Type/id" fact ids, otherwise derive a valid FHIR id from the fact id.
    placed: dict[str, tuple[str, str]] = {}
    taken: set[tuple[str, str]] = set()
    for f in record.facts:
        rtype = EXPORT_TYPE[f.kind]
        m = re.fullmatch(rf"{rtype}/({_FHIR_ID.pattern})", f.id)
        rid = m.group(1) if m else "cp-" + hashlib.sha256(f"{f.source_system}|{f.id}".encode()).hexdigest()[:24]
        while (rtype, rid) in taken:
            rid = "cp-" + hashlib.sha256(rid.encode()).hexdigest()[:24]
        taken.add((rtype, rid))
        placed[f"{f.source_system}|{f.id}"] = (rtype, rid)
    refs_by_source: dict[str, dict[str, str]] = {}
    for key, (rtype, rid) in placed.items():
        source, fid = key.split("|", 1)
        refs_by_source.setdefault(source, {})[fid] = f"{rtype}/{rid}"

    patient_ref = {"reference": f"Patient/{pid}"}
    entries = [{"fullUrl": _urn(f"Patient/{pid}"), "resource": patient}]
    for f in record.facts:
        rtype, rid = placed[f"{f.source_system}|{f.id}"]
        res = _export_fact(f, rtype, rid, patient_ref, refs_by_source[f.source_system])
        entries.append({"fullUrl": _urn(f"{rtype}/{rid}"), "resource": res})
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    Bundle.model_validate(bundle)  # our output must be valid R4; fail loudly here if not
    return bundle
