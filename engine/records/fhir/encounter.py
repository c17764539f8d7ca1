"""FHIR Encounter -> an encounter fact (type, or class when untyped; diagnoses), and its care setting."""
from __future__ import annotations

from engine.records.fhir.common import (EXT_CARE_SETTING, _coded_ext, _coding, _codes, _Ctx, _Draft, _Entry,
                                        _pick_time, _require_codes, _require_start)
from engine.records.model import CareSetting, FactKind


ENCOUNTER_CLASS_SETTING = {
    **dict.fromkeys(["IMP", "ACUTE", "NONAC", "EMER", "SS", "OBSENC", "PRENC"], CareSetting.acute),
    **dict.fromkeys(["HH", "FLD"], CareSetting.community),
    **dict.fromkeys(["AMB", "VR"], CareSetting.gp),
}


def read_encounter(e: _Entry, ctx: _Ctx) -> list[_Draft]:
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


def _encounter_setting(e: _Entry) -> CareSetting:
    override = _coded_ext(e, EXT_CARE_SETTING, CareSetting)
    if override is not None:
        return override
    cls = e.model.class_fhir.code if e.model.class_fhir is not None else None
    return ENCOUNTER_CLASS_SETTING.get(cls or "", CareSetting.gp)
