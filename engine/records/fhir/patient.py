"""FHIR Patient -> `Patient` (NHS number, or a derived test-range one; practice; our extensions)."""
from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from engine.records.fhir.common import (EXT_LOCALITY, EXT_MDT, EXT_PRACTICE, EXT_REGISTERED_ON, ID_SOURCE,
                                        NHS_NUMBER_SYSTEM, ODS_SYSTEM, BundleError, ImportResult, _Entry, _ext,
                                        _ext_str, _Index, _when, pointer)
from engine.records.model import Patient, Sex
from engine.records.nhs_number import is_valid_nhs_number, make_nhs_number


SEX = {"male": Sex.male, "female": Sex.female, "other": Sex.other, "unknown": Sex.unknown}


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


def read_patient(e: _Entry, index: _Index, source_system: str, result: ImportResult, used: set[int]) -> Patient:
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
