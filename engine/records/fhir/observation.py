"""FHIR Observation -> observation facts: one for the observation, one per coded component."""
from __future__ import annotations

from typing import Any

from engine.records.fhir.common import (EXT_DATA_ABSENT, _code_list, _codes, _Ctx, _Draft, _Entry, _ext_str,
                                        _first_code, _pick_time, _require_codes, _require_start, pointer)
from engine.records.model import FactKind


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


def read_observation(e: _Entry, ctx: _Ctx) -> list[_Draft]:
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
