"""FHIR AllergyIntolerance -> a condition-kind fact (attrs resource = AllergyIntolerance)."""
from __future__ import annotations

from engine.records.fhir.common import _codes, _Ctx, _Draft, _Entry, _pick_time, _require_codes, _require_start, _statuses_into
from engine.records.model import FactKind


def read_allergy(e: _Entry, ctx: _Ctx) -> list[_Draft]:
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
