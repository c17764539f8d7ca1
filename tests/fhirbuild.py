"""Build small FHIR R4 test bundles from compact Python.

    bundle(
        patient("p1", nhs="9434765919", birth="1960-05-01"),
        resource("Condition", "c1", code="sct|44054006", onsetDateTime="2020-01-01"),
        resource("Observation", "o1", code="loinc|4548-4", status="final",
                 effectiveDateTime="2024-02-01", valueQuantity=qty(61, "mmol/mol")),
    )

Codeable fields (code, type, category, ...) take "system|code[|display]" strings (system may be
an alias: sct, loinc, rxnorm, dmd, actcode); `resource` fills subject with the patient.
"""
from __future__ import annotations

import uuid
from typing import Any

ALIASES = {
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "dmd": "https://dmd.nhs.uk",
    "actcode": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
}
CAREPATH_SD = "https://carepath.example/fhir/StructureDefinition/"
NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = "https://fhir.nhs.uk/Id/ods-organization-code"

# CodeableConcept fields that are arrays in R4, per resource type; every other codeable field is single.
LIST_CC = {
    ("Encounter", "type"), ("Condition", "category"), ("Observation", "category"),
    ("ServiceRequest", "category"), ("MedicationRequest", "category"),
}
CODEABLE = {
    "code", "type", "category", "valueCodeableConcept", "medicationCodeableConcept", "codeCodeableConcept",
    "clinicalStatus", "verificationStatus", "dataAbsentReason",
}


def coding(spec: str) -> dict:
    system, code, *display = spec.split("|")
    out = {"system": ALIASES.get(system, system), "code": code}
    if display:
        out["display"] = display[0]
    return out


def cc(*specs: str, text: str | None = None) -> dict:
    out: dict[str, Any] = {"coding": [coding(s) for s in specs]} if specs else {}
    if text:
        out["text"] = text
    return out


def qty(value: float | None, code: str | None = None, *, unit: str | None = None, comparator: str | None = None) -> dict:
    q: dict[str, Any] = {}
    if value is not None:
        q["value"] = value
    if code:
        q.update(system="http://unitsofmeasure.org", code=code)
    if unit:
        q["unit"] = unit
    if comparator:
        q["comparator"] = comparator
    return q


def ext(name: str, value: Any, type_: str = "valueCode") -> dict:
    """One of carepath's extensions, by short name (locality, mdt, care-setting, ...)."""
    return {"url": CAREPATH_SD + name, type_: value}


def ref(target: str) -> dict:
    return {"reference": target}


def patient(id: str = "p1", *, nhs: str | None = None, birth: str | None = "1960-01-01", gender: str = "female", **fields: Any) -> dict:
    res: dict[str, Any] = {"resourceType": "Patient", "id": id, "gender": gender}
    if birth:
        res["birthDate"] = birth
    if nhs:
        res["identifier"] = [{"system": NHS, "value": nhs}]
    res.update(fields)
    return res


def resource(rtype: str, id: str | None, *, patient: str | None = "p1", **fields: Any) -> dict:
    res: dict[str, Any] = {"resourceType": rtype}
    if id:
        res["id"] = id
    if patient:
        res["beneficiary" if rtype == "Coverage" else "subject"] = ref(f"Patient/{patient}")
    for key, value in fields.items():
        if key in CODEABLE and isinstance(value, (str, list)):
            specs = [value] if isinstance(value, str) else value
            value = [cc(s) for s in specs] if (rtype, key) in LIST_CC else cc(*specs)
        res[key] = value
    return res


def bundle(*resources: dict, type: str = "collection") -> dict:
    entries = []
    for r in resources:
        key = f"{r['resourceType']}/{r.get('id') or uuid.uuid4()}"
        entries.append({"fullUrl": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, key)), "resource": r})
    return {"resourceType": "Bundle", "type": type, "entry": entries}


def ndjson_by_type(resources: list) -> dict[str, str]:
    """FHIR Bulk Data NDJSON as a $export writes it: one text per resource type, one resource per line
    (a "Type:text" str is written as it is: a bad line in that type's file)."""
    import json
    files: dict[str, list[str]] = {}
    for r in resources:
        if isinstance(r, str):
            kind, line = r.split(":", 1)
            files.setdefault(kind, []).append(line)
        else:
            files.setdefault(r["resourceType"], []).append(json.dumps(r))
    return {kind: "\n".join(lines) + "\n" for kind, lines in files.items()}
