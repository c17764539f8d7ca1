"""Facts read back from the registry, built without running pydantic's validators when that changes nothing.

Every evaluation reads the patient's whole record back (~50 facts), and `Fact.model_validate(...,
context=TRUSTED)` runs a dozen Python validators per fact (~28 us each: ~1.5 ms of a request; issue 17,
P2). A stored row was validated when it was ingested, so in the usual case validating it again only
turns its strings into the enums and its code dictionaries into `Coding`s. `stored_fact` does exactly
that, with `model_construct`, when the row is in that usual shape: every value of the type validation
would leave it as, the code systems already canonical, the codes already stripped, the fact's own
checks (`Fact._consistent`) passing. Anything else - an older row a later rule would change or refuse,
a driver returning another type - goes through `model_validate` as before, so the result (or the
error) is always the one validation gives (tests/unit/test_stored_fact.py compares both on every shape).
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from engine.records.model import TRUSTED, CareSetting, Coding, ExceptionType, Fact, FactKind, canonical_system

_KINDS = {k.value: k for k in FactKind}
_SETTINGS = {c.value: c for c in CareSetting}
_EXCEPTIONS = {e.value: e for e in ExceptionType}
_CODING_KEYS = frozenset(("system", "code", "display"))
_CANONICAL: set[str] = set()  # code systems seen to be in canonical form already
_FACT_FIELDS = ("id", "kind", "codes", "start", "end", "value", "unit", "value_codes", "status", "exception_type",
                "source_system", "care_setting", "attrs")
_ALL_FACT_FIELDS = frozenset(_FACT_FIELDS)
_setattr = object.__setattr__


def _plain_model(cls, fields: tuple[str, ...]) -> bool:
    """`_construct` does what `cls.model_construct` does: no post-init, not a root model, no extra kept, and
    `fields` are its fields in order."""
    return (not cls.__pydantic_post_init__ and not cls.__pydantic_root_model__ and cls.model_config.get("extra") != "allow"
            and tuple(cls.__pydantic_fields__) == fields)


_FAST = _plain_model(Fact, _FACT_FIELDS) and _plain_model(Coding, ("system", "code", "display"))


def _construct(cls, values: dict, fields_set: set[str]):
    """`cls.model_construct(**values)` for `values` holding every field in field order (pydantic's own steps,
    without its per-field loop: ~6 us a model, and a fact has two or more)."""
    m = cls.__new__(cls)
    _setattr(m, "__dict__", values)
    _setattr(m, "__pydantic_fields_set__", fields_set)
    _setattr(m, "__pydantic_extra__", None)
    _setattr(m, "__pydantic_private__", None)
    return m


def _canonical(system: str) -> bool:
    if system in _CANONICAL:
        return True
    if canonical_system(system) != system:
        return False
    if len(_CANONICAL) < 10_000:
        _CANONICAL.add(system)
    return True


def _codings(items: Any) -> list[Coding] | None:
    """`Coding`s as validation would make them from stored code dictionaries, or None (validate instead)."""
    if type(items) is not list:
        return None
    out = []
    for c in items:
        if type(c) is not dict or not c.keys() <= _CODING_KEYS:
            return None
        code = c.get("code")
        if type(code) is not str or not code or code.strip() != code:
            return None
        if "system" in c and (type(c["system"]) is not str or not _canonical(c["system"])):
            return None
        if "display" in c and c["display"] is not None and type(c["display"]) is not str:
            return None
        out.append(_construct(Coding, {"system": c.get("system", ""), "code": code, "display": c.get("display")}, set(c)))
    return out


def _when(v: Any) -> bool:
    return type(v) is dt.datetime and v.tzinfo is None


def stored_fact(*, id: Any, kind: Any, codes: Any, start: Any, end: Any, value: Any, unit: Any, value_codes: Any,
                status: Any, exception_type: Any, source_system: Any, care_setting: Any, attrs: Any) -> Fact:
    """The Fact `Fact.model_validate(dict(...), context=TRUSTED)` gives for these stored values."""
    fast = None if not _FAST else _fast(id, kind, codes, start, end, value, unit, value_codes, status, exception_type, source_system,
                 care_setting, attrs)
    if fast is not None:
        return fast
    return Fact.model_validate(dict(id=id, kind=kind, codes=codes, start=start, end=end, value=value, unit=unit,
                                    value_codes=value_codes, status=status, exception_type=exception_type,
                                    source_system=source_system, care_setting=care_setting, attrs=attrs),
                               context=TRUSTED)


def _fast(id, kind, codes, start, end, value, unit, value_codes, status, exception_type, source_system, care_setting,
          attrs) -> Fact | None:
    if type(id) is not str or type(source_system) is not str:
        return None
    kind_ = _KINDS.get(kind) if type(kind) is str else None
    setting = _SETTINGS.get(care_setting) if type(care_setting) is str else None
    if kind_ is None or setting is None:
        return None
    if exception_type is None:
        if kind_ is FactKind.exception:
            return None  # Fact._consistent refuses it: let validation say so
        exc = None
    else:
        exc = _EXCEPTIONS.get(exception_type) if type(exception_type) is str else None
        if exc is None:
            return None
    if not _when(start) or not (end is None or (_when(end) and end >= start)):
        return None
    if value is not None and (type(value) is not float or value != value):
        return None
    if (unit is not None and type(unit) is not str) or (status is not None and type(status) is not str):
        return None
    if type(attrs) is not dict or any(type(k) is not str for k in attrs):
        return None
    codings = _codings(codes)
    if not codings:  # (at least one coding: Field(min_length=1))
        return None
    value_codings = _codings(value_codes)
    if value_codings is None:
        return None
    return _construct(Fact, {"id": id, "kind": kind_, "codes": codings, "start": start, "end": end, "value": value,
                             "unit": unit, "value_codes": value_codings, "status": status, "exception_type": exc,
                             "source_system": source_system, "care_setting": setting, "attrs": dict(attrs)},
                      set(_ALL_FACT_FIELDS))
