"""FHIR DeviceRequest / DeviceUseStatement -> a device fact (code inline, contained or a Device in the bundle)."""
from __future__ import annotations

from typing import Any

from engine.records.fhir.common import (EXT_DNP_R5, _codes, _Ctx, _Draft, _Entry, _ext, _pick_time, _require_codes,
                                        _require_start, _Skip)
from engine.records.model import Coding, FactKind


def _device_codes(e: _Entry, ctx: _Ctx, cc: Any, ref: Any, what: str) -> list[Coding]:
    if cc is not None:
        return _require_codes(_codes(cc), what)
    device = ctx.contained_or_bundle(e, ref, "Device")
    if device is None:
        raise _Skip(f"device reference {getattr(ref, 'reference', None)!r} is neither contained nor in the bundle")
    return _require_codes(_codes(device.type), "the referenced Device's type")


def read_device_request(e: _Entry, ctx: _Ctx) -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["authoredOn", "occurrenceDateTime", "occurrencePeriod"], ctx.warnings, e.base)
    d = _Draft(e, FactKind.device, _device_codes(e, ctx, r.codeCodeableConcept, r.codeReference, "DeviceRequest.code"),
               _require_start(start, "authoredOn / occurrence[x]"), end, status=r.status, paths=paths)
    d.attrs["intent"] = r.intent
    for _, x in _ext(r, EXT_DNP_R5, "modifierExtension"):
        d.attrs["do_not_perform"] = bool(x.valueBoolean)
    return [d]


def read_device_use(e: _Entry, ctx: _Ctx) -> list[_Draft]:
    r = e.model
    start, end, paths = _pick_time(r, ["timingDateTime", "timingPeriod", "recordedOn"], ctx.warnings, e.base)
    return [_Draft(e, FactKind.device, _device_codes(e, ctx, None, r.device, "DeviceUseStatement.device"),
                   _require_start(start, "timing[x] / recordedOn"), end, status=r.status, paths=paths)]
