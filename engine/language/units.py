"""Units (UCUM spellings) and the conversions carepath is allowed to make.

Only two kinds of conversion exist:
- a pure change of scale within one dimension (mmol/L <-> umol/L, kg <-> g, ...), always safe;
- an analyte-specific clinical conversion, defined by a standard: HbA1c IFCC mmol/mol <-> DCCT %
  (NGSP/IFCC master equation: IFCC = 10.929 x (DCCT - 2.15)).
Anything else (mmol/mol vs mmHg, % for an analyte with no defined conversion) is an error: a wrong
threshold must never pass silently.
"""
from __future__ import annotations

from typing import Callable

from engine.ir.unit_display import display_unit  # noqa: F401  how a unit is shown to people: one table, there

# unit -> (dimension, factor to the dimension's base unit)
_SCALE: dict[str, tuple[str, float]] = {
    "mmol/L": ("substance-concentration", 1.0),
    "umol/L": ("substance-concentration", 1e-3),
    "nmol/L": ("substance-concentration", 1e-6),
    "mol/L": ("substance-concentration", 1e3),
    "g/L": ("mass-concentration", 1.0),
    "mg/L": ("mass-concentration", 1e-3),
    "mg/dL": ("mass-concentration", 1e-2),
    "ng/L": ("mass-concentration", 1e-9),
    "pg/mL": ("mass-concentration", 1e-9),
    "kg": ("mass", 1.0),
    "g": ("mass", 1e-3),
    "m": ("length", 1.0),
    "cm": ("length", 1e-2),
    "mm": ("length", 1e-3),
    "mm[Hg]": ("pressure", 1.0),
    "kg/m2": ("bmi", 1.0),
    "mL/min/{1.73_m2}": ("gfr", 1.0),
    "mg/mmol": ("acr", 1.0),
    "mmol/mol": ("ratio-mmol/mol", 1.0),
    "%": ("percent", 1.0),
    "{score}": ("score", 1.0),
    "1": ("unity", 1.0),
    "ppb": ("ppb", 1.0),
    "/min": ("rate", 1.0),
    "a": ("age", 1.0),
}

# Common spellings seen in records and protocol files -> UCUM.
_ALIASES = {
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "mm[hg]": "mm[Hg]",
    "mmol/l": "mmol/L",
    "umol/l": "umol/L",
    "µmol/l": "umol/L",
    "nmol/l": "nmol/L",
    "mg/l": "mg/L",
    "g/l": "g/L",
    "mg/dl": "mg/dL",
    "ng/l": "ng/L",
    "pg/ml": "pg/mL",
    "kg/m2": "kg/m2",
    "kg/m^2": "kg/m2",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "ml/min/{1.73_m2}": "mL/min/{1.73_m2}",
    "ml/min/1.73 m2": "mL/min/{1.73_m2}",
    "mg/mmol": "mg/mmol",
    "mmol/mol": "mmol/mol",
    "percent": "%",
    "%": "%",
    "score": "{score}",
    "{score}": "{score}",
    "1": "1",
    "ppb": "ppb",
    "kg": "kg",
    "g": "g",
    "cm": "cm",
    "m": "m",
    "mm": "mm",
    "/min": "/min",
    "bpm": "/min",
    "{beats}/min": "/min",
}

# (analyte, from, to) -> function. Values stay floats; rounding is the reader's business.
_CLINICAL: dict[tuple[str, str, str], Callable[[float], float]] = {
    ("hba1c", "%", "mmol/mol"): lambda v: (v - 2.15) * 10.929,
    ("hba1c", "mmol/mol", "%"): lambda v: v / 10.929 + 2.15,
}

KNOWN_ANALYTES = {"hba1c"}


class UnitError(ValueError):
    pass


def normalise_unit(unit: str | None) -> str | None:
    if unit is None:
        return None
    u = unit.strip()
    if not u:
        return None
    if u in _SCALE:
        return u
    return _ALIASES.get(u.lower(), u)


def is_known_unit(unit: str) -> bool:
    return normalise_unit(unit) in _SCALE


def known_units() -> list[str]:
    return sorted(_SCALE)


def converter(from_unit: str | None, to_unit: str | None, analyte: str | None = None) -> Callable[[float], float]:
    """A function converting values, or UnitError saying why no conversion is defined."""
    f, t = normalise_unit(from_unit), normalise_unit(to_unit)
    if f == t:
        return lambda v: v
    if f is None or t is None:
        raise UnitError(f"cannot compare a value {'without a unit' if f is None else 'in ' + f} "
                        f"with one {'without a unit' if t is None else 'in ' + t}")
    if analyte and (analyte, f, t) in _CLINICAL:
        return _CLINICAL[(analyte, f, t)]
    fs, ts = _SCALE.get(f), _SCALE.get(t)
    if fs and ts and fs[0] == ts[0]:
        factor = fs[1] / ts[1]
        return lambda v: v * factor
    what = f" for {analyte}" if analyte else ""
    raise UnitError(f"no clinically defined conversion from {f} to {t}{what}")


def is_clinical_conversion(from_unit: str | None, to_unit: str | None, analyte: str | None = None) -> bool:
    """True when converting needs an analyte's equation (not a change of scale): such a conversion is
    wrong for a difference of two values (e.g. HbA1c 1 % apart is not 1 % converted to mmol/mol)."""
    f, t = normalise_unit(from_unit), normalise_unit(to_unit)
    return f != t and (analyte, f, t) in _CLINICAL


def convert(value: float, from_unit: str | None, to_unit: str | None, analyte: str | None = None) -> float:
    return converter(from_unit, to_unit, analyte)(value)
