"""Write a `PatientRecord` as a FHIR R4 collection Bundle (`export_patient_bundle`): the patient and
one native resource per fact, with carepath's extensions for what FHIR has no place for, so that
`import_bundle(export_patient_bundle(r))` equals `r`."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from engine.records.fhir.common import (
    EXT_CARE_SETTING,
    EXT_DATA_ABSENT,
    EXT_DNP_R5,
    EXT_EXCEPTION_TYPE,
    EXT_FACT_EXTRA,
    EXT_FACT_KIND,
    EXT_LOCALITY,
    EXT_MDT,
    EXT_REGISTERED_ON,
    ID_FACT,
    ID_SOURCE,
    META_SOURCE,
    NHS_NUMBER_SYSTEM,
    ODS_SYSTEM,
)
from engine.records.model import CareSetting, Coding, Fact, FactKind, PatientRecord

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
