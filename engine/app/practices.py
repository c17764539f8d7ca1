"""GP practices by ODS code: name, phone, locality (issue 16 item 3) — so every page names a practice the
way clinicians and patients know it ("The Densham Surgery (A81001)"), not by its code alone.

The table is a CSV (`engine/app/data/practices.csv`, or the file named by `CAREPATH_PRACTICES`, e.g. a
site's own extract of NHS Digital's epraccur) with the columns `ods_code,name,phone,locality,source`; each
row says where it came from (`source`, PUBLISHER:LIST:VERSION):

- the demo's three practices (A81001-A81003) are real ODS codes: their names and phone numbers are copied
  from NHS Digital's ODS GP practice file epraccur (columns 1, 2 and 18), as published in
  psychty/primary-care-geographies@abc5ff0de635a97c9d611a6ec07396abf11db80a `epraccur.csv`; their locality
  is the demo's own grouping. In that copy A81003 (Victoria Medical Practice) is marked closed (31 Oct 2017).
- the synthetic population's 108 practices (engine.synthetic.generate.practices) have made-up names that say
  "(synthetic)" and Ofcom's numbers reserved for drama (0161 496 0000-0999), so no real surgery is named or
  called; their random codes could coincide with a real practice's code, which is why their names say so.

A code missing from the table is shown as "Practice <code>" — never a guessed name.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_CSV = Path(__file__).parent / "data" / "practices.csv"
COLUMNS = ["ods_code", "name", "phone", "locality", "source"]
ODS_PRACTICE = re.compile(r"[A-Z][0-9]{5}")  # a GP practice's ODS code
_SMALL = {"and", "of", "the", "on", "by", "in", "at"}


@dataclass(frozen=True)
class Practice:
    ods_code: str
    name: str
    phone: str | None
    locality: str | None
    source: str

    @property
    def label(self) -> str:
        """"The Densham Surgery (A81001)": the name, and the code clinicians also use."""
        return f"{self.name} ({self.ods_code})"


def display_name(published: str) -> str:
    """epraccur's upper-case names as people write them: "THE DENSHAM SURGERY" -> "The Densham Surgery"."""
    if published != published.upper():
        return published
    words = []
    for i, w in enumerate(published.split()):
        low = w.lower()
        if w in ("&",):
            words.append(w)
        elif i and low in _SMALL:
            words.append(low)
        elif low in ("dr", "st", "mc"):
            words.append(low.capitalize())
        else:
            words.append("-".join(part[:1].upper() + part[1:].lower() for part in w.split("-")))
    return " ".join(words)


def load(path: Path | str | None = None) -> dict[str, Practice]:
    path = Path(path or os.environ.get("CAREPATH_PRACTICES") or DEFAULT_CSV)
    out: dict[str, Practice] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: the practice table needs the columns {', '.join(COLUMNS)} "
                             f"(missing {', '.join(sorted(missing))})")
        for n, row in enumerate(reader, 2):
            code = (row["ods_code"] or "").strip().upper()
            if not code or not (row["name"] or "").strip() or not (row["source"] or "").strip():
                raise ValueError(f"{path}:{n}: every practice needs an ODS code, a name and a source")
            if code in out:
                raise ValueError(f"{path}:{n}: practice {code} is listed twice")
            out[code] = Practice(code, display_name(row["name"].strip()), (row["phone"] or "").strip() or None,
                                 (row["locality"] or "").strip() or None, row["source"].strip())
    return out


@lru_cache(maxsize=4)
def _table(path: str) -> dict[str, Practice]:
    return load(path)


def table() -> dict[str, Practice]:
    return _table(str(os.environ.get("CAREPATH_PRACTICES") or DEFAULT_CSV))


def practice(code: str | None) -> Practice | None:
    return table().get(code.strip().upper()) if code else None


def practice_label(code: str | None) -> str:
    """What a page shows for a practice code: "The Densham Surgery (A81001)", or "Practice X12345"
    for a code the table does not have; "" for none."""
    if not code:
        return ""
    if not ODS_PRACTICE.fullmatch(code.strip().upper()):
        return code  # not a practice code ("(none)", a locality): as it is
    p = practice(code)
    return p.label if p else f"Practice {code}"


def practice_name(code: str | None) -> str:
    """The name alone ("The Densham Surgery"), or "Practice X12345"."""
    if not code:
        return ""
    if not ODS_PRACTICE.fullmatch(code.strip().upper()):
        return code
    p = practice(code)
    return p.name if p else f"Practice {code}"


def codes_for(text: str) -> list[str]:
    """The practice codes a person means by `text` (a filter or search box): an ODS code as it is (any case),
    otherwise every practice in the table whose name contains the words, in any case and order
    ("densham" -> A81001). Sorted; empty when nothing matches."""
    text = " ".join(text.split())
    if ODS_PRACTICE.fullmatch(text.upper()):
        return [text.upper()]
    words = text.lower().split()
    if not words:
        return []
    return sorted(code for code, p in table().items() if all(w in p.name.lower() for w in words))


def by_name(codes) -> list[tuple[str, str]]:
    """(code, "Name (code)") for a dropdown, ordered by name as people look for a practice."""
    labels = [(c, practice_label(c)) for c in {c for c in codes if c}]
    return sorted(labels, key=lambda cl: (practice_name(cl[0]).lower(), cl[0]))
