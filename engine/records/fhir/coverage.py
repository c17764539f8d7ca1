"""FHIR Coverage -> a kind=other fact (codes = type, attrs payer), for payer stratification."""
from __future__ import annotations

from engine.records.fhir.common import _codes, _Ctx, _Draft, _Entry, _pick_time, _require_codes, _require_start
from engine.records.model import FactKind


def read_coverage(e: _Entry, ctx: _Ctx) -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["period"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.other, _require_codes(_codes(r.type), "Coverage.type"),
               _require_start(start, "Coverage.period"), end, status=r.status, paths=paths)
    payers = [p.display or p.reference or (p.identifier.value if p.identifier else None) for p in r.payor or []]
    d.attrs["payer"] = [p for p in payers if p]
    return [d]
