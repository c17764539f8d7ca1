"""FHIR ServiceRequest -> a referral fact (intent, doNotPerform)."""
from __future__ import annotations

from engine.records.fhir.common import (_code_list, _codes, _Ctx, _Draft, _Entry, _pick_time, _require_codes,
                                        _require_start, _when)
from engine.records.model import FactKind


def read_service_request(e: _Entry, ctx: _Ctx) -> list[_Draft]:
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
