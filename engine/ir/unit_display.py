"""A unit as people write it: the one place a UCUM spelling (as protocols, records and FHIR carry it) is turned
into the words of a results report. Why-lines (`describe`, `format_const`, the evaluation's values), the
clinical review document (`carepath docs`), the web pages (the `unit` template filter) all call
`display_unit`; `display_units_in` does the same inside a finished sentence.

It lives in the IR layer because the IR's own words (`describe`, `format_const`) need it and the IR imports
nothing above it; `engine.language.units` (the UCUM spellings and conversions) re-exports it.
"""
from __future__ import annotations

import re

# UCUM (and the spellings records use) -> as on a results report. "" = a number with no unit worth saying
# (a score, a count, a ratio of like quantities, an age in years).
UNIT_DISPLAY = {
    "mm[Hg]": "mmHg", "mm[hg]": "mmHg", "mmhg": "mmHg",
    "mL/min/{1.73_m2}": "mL/min/1.73 m²", "ml/min/{1.73_m2}": "mL/min/1.73 m²", "mL/min/1.73m2": "mL/min/1.73 m²",
    "ml/min/1.73m2": "mL/min/1.73 m²", "mL/min/1.73 m2": "mL/min/1.73 m²",
    "kg/m2": "kg/m²", "kg/m^2": "kg/m²",
    "10*9/L": "×10⁹/L", "10*12/L": "×10¹²/L",
    "umol/L": "µmol/L", "ug/L": "µg/L", "ug": "µg",
    "[iU]/L": "IU/L", "[IU]/L": "IU/L", "m[iU]/L": "mIU/L",
    "{score}": "", "{score}/1": "", "1": "", "{ratio}": "", "{count}": "", "a": "",
    "{beats}/min": "beats/min", "/min": "/min",
}
_ANNOTATION = re.compile(r"\{([^{}]*)\}")


def display_unit(unit: str | None) -> str:
    """A UCUM unit for people: mm[Hg] -> mmHg, mL/min/{1.73_m2} -> mL/min/1.73 m², kg/m2 -> kg/m², {score}
    -> "" (a score has no unit). A unit not in the table keeps its spelling without UCUM's brackets and
    annotation braces ({copies}/mL -> copies/mL; an annotation alone, such as {score}, says nothing)."""
    u = (unit or "").strip()
    if u in UNIT_DISPLAY:
        return UNIT_DISPLAY[u]
    if not u:
        return ""
    if _ANNOTATION.fullmatch(u):  # an annotation alone is a dimensionless number
        return ""
    text = _ANNOTATION.sub(lambda m: m.group(1).replace("_", " "), u).replace("[", "").replace("]", "")
    return re.sub(r"(?<=[a-zA-Z])2\b", "²", text) if text.endswith("m2") else text


def with_unit(text: str, unit: str | None) -> str:
    """A number and its unit as written: '140 mmHg', '63 mmol/mol', '5' (a score)."""
    shown = display_unit(unit)
    return f"{text} {shown}" if shown else text


# A unit inside a sentence: as a whole word after a number or a space (never inside another word).
_IN_TEXT = sorted((k for k, v in UNIT_DISPLAY.items() if k != v and not k.isalpha() and k not in ("1",)),
                  key=len, reverse=True)
_IN_TEXT_RE = re.compile(r"(?<=[\d ])( ?)(" + "|".join(re.escape(k) for k in _IN_TEXT) + r")(?=$|[\s),;.:])")


def display_units_in(text: str) -> str:
    """Every UCUM unit in a finished sentence as people write it (the words of a protocol's title or a
    condition already in words)."""
    def shown(m: re.Match) -> str:
        words = UNIT_DISPLAY[m.group(2)]
        return m.group(1) + words if words else ""  # a unit that says nothing goes with its space
    return _IN_TEXT_RE.sub(shown, text)
