"""FHIR Condition -> a condition fact (onset to abatement, clinical / verification status)."""
from __future__ import annotations

from engine.records.fhir.common import (_code_list, _codes, _Ctx, _Draft, _Entry, _pick_time, _require_codes,
                                        _require_start, _statuses_into, _when)
from engine.records.model import FactKind


def read_condition(e: _Entry, ctx: _Ctx) -> list[_Draft]:
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
