"""Read a FHIR R4 Bundle: parse and validate every entry, settle repeated resources, read the
patients, then each entry with the reader of its resourceType (`READERS`, the one dispatch table),
and turn the readers' drafts into `Fact`s (fact id, kind, care setting, our extensions). The
overview of what is read, and carepath's extensions, is the package docstring (`engine.records.fhir`)."""
from __future__ import annotations

import json
from typing import Any, Callable

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle, BundleEntry
from pydantic import ValidationError

from engine.records.fhir.allergy import read_allergy
from engine.records.fhir.common import (
    EXT_CARE_SETTING,
    EXT_DNP_R5,
    EXT_EXCEPTION_TYPE,
    EXT_FACT_EXTRA,
    EXT_FACT_KIND,
    ID_FACT,
    META_SOURCE,
    BundleError,
    ImportResult,
    _coded_ext,
    _codes,
    _count,
    _Ctx,
    _Draft,
    _Entry,
    _ext,
    _Index,
    _Skip,
    _validation_error,
    pointer,
)
from engine.records.fhir.condition import read_condition
from engine.records.fhir.coverage import read_coverage
from engine.records.fhir.device import read_device_request, read_device_use
from engine.records.fhir.encounter import _encounter_setting, read_encounter
from engine.records.fhir.medication import read_medication
from engine.records.fhir.observation import read_observation
from engine.records.fhir.patient import read_patient
from engine.records.fhir.procedure import read_procedure
from engine.records.fhir.service_request import read_service_request
from engine.records.model import CareSetting, ExceptionType, Fact, FactKind, PatientRecord

BUNDLE_TYPES = {"transaction", "batch", "collection", "searchset", "document"}
# Resources used only through references from facts/patients; counted as unsupported when unused.
SUPPORTING_TYPES = {"Medication", "Device", "Organization"}

# resourceType -> its reader (Patient is read first, by `read_patient`: every fact needs one).
READERS: dict[str, Callable[[_Entry, _Ctx], list[_Draft]]] = {
    "AllergyIntolerance": read_allergy,
    "Observation": read_observation,
    "Condition": read_condition,
    "MedicationRequest": read_medication,
    "MedicationStatement": read_medication,
    "MedicationDispense": read_medication,
    "MedicationAdministration": read_medication,
    "Procedure": read_procedure,
    "Encounter": read_encounter,
    "ServiceRequest": read_service_request,
    "DeviceRequest": read_device_request,
    "DeviceUseStatement": read_device_use,
    "Coverage": read_coverage,
}
# Modifier extensions we understand; any other one means we cannot safely read the resource.
KNOWN_MODIFIERS = {"DeviceRequest": {EXT_DNP_R5}}
PATIENT_REF = {"Coverage": "beneficiary", "AllergyIntolerance": "patient"}
ENCOUNTER_REF = {"MedicationStatement": "context", "MedicationDispense": "context", "MedicationAdministration": "context"}


# --------------------------------------------------------------------------------------------
# Facts


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


def _fact_id(e: _Entry) -> str | None:
    for ident in getattr(e.model, "identifier", None) or []:
        if ident.system == ID_FACT and ident.value:
            return ident.value
    if e.key:
        return e.key
    return e.full_url


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
        patient = read_patient(e, index, source_system, result, used)
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
        reader = READERS.get(e.rtype)
        if reader is None:
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
            drafts = reader(e, ctx)
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
        if e.rtype == "Patient" or e.rtype in READERS:
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
