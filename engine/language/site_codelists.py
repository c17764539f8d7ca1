"""Site-supplied codelists for declared clusters, and the SNOMED CT identifier check.

A protocol declares a cluster it has no codes for (`{cluster: FOOTEXAM_COD, refset: "...", publisher: PCD}`);
the site supplies it as `<site dir>/<cluster lowercased>.csv` with columns `code,term,source` (`source` =
PUBLISHER:CLUSTER:VERSION on every row). The site dir is `valuesets/site/` beside the protocol file, or
the folder named by the environment variable CAREPATH_SITE_CODELISTS.

`carepath codelists import` writes those files (engine/language/codelist_import.py).
"""
from __future__ import annotations

import os
from pathlib import Path

SITE_ENV = "CAREPATH_SITE_CODELISTS"

# Verhoeff's dihedral-group check digit (SNOMED CT identifiers end with one)
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_valid(digits: str) -> bool:
    """True when the last digit is the Verhoeff check digit of the others."""
    if not digits.isdigit() or not digits.isascii():
        return False
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def verhoeff_digit(digits: str) -> int:
    """The check digit to append to `digits`."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    return _INV[c]


def sctid_problem(code: str) -> str | None:
    """Why `code` is not a SNOMED CT identifier (concept or dm+d product), or None when it is one:
    6 to 18 digits, no leading zero, a partition identifier of a concept (00 / 10), and a valid
    Verhoeff check digit."""
    if not code.isascii() or not code.isdigit():
        return "not all digits"
    if not 6 <= len(code) <= 18:
        return f"{len(code)} digits (a SNOMED CT id has 6 to 18)"
    if code[0] == "0":
        return "starts with 0"
    if not verhoeff_valid(code):
        return "check digit wrong (Verhoeff)"
    partition = code[-3:-1]
    if partition not in ("00", "10"):
        return f"partition {partition} is not a concept id (00 or 10)"
    return None


def site_dir(protocol_path: Path | None = None) -> Path:
    """Where site-supplied codelists live: $CAREPATH_SITE_CODELISTS, else `valuesets/site/` beside the protocol."""
    env = os.environ.get(SITE_ENV, "").strip()
    if env:
        return Path(env)
    base = Path(protocol_path).parent if protocol_path is not None else Path("protocols")
    return base / "valuesets" / "site"


def site_file(directory: Path, cluster: str) -> Path:
    return Path(directory) / f"{cluster.lower()}.csv"
