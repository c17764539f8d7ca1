"""FHIR MedicationRequest / MedicationStatement / MedicationDispense / MedicationAdministration ->
a medication fact (code inline, contained or a Medication in the bundle; start and end per resource type)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from engine.records.fhir.common import (_code_list, _codes, _Ctx, _Draft, _Entry, _pick_time, _require_codes,
                                        _require_start, _Skip, _when)
from engine.records.model import Coding, FactKind


def _medication_codes(e: _Entry, ctx: _Ctx) -> list[Coding]:
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


def read_medication(e: _Entry, ctx: _Ctx) -> list[_Draft]:
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
