"""FHIR Procedure -> a procedure fact."""
from __future__ import annotations

from engine.records.fhir.common import _code_list, _codes, _Ctx, _Draft, _Entry, _pick_time, _require_codes, _require_start
from engine.records.model import FactKind


def read_procedure(e: _Entry, ctx: _Ctx) -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["performedDateTime", "performedPeriod"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.procedure, _require_codes(_codes(r.code), "Procedure.code"),
               _require_start(start, "performedDateTime / performedPeriod"), end, status=r.status, paths=paths)
    if r.category is not None:
        d.attrs["category"] = _code_list(r.category)
    return [d]
