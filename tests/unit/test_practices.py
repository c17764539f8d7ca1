"""The practice table (issue 16 item 3): ODS code -> name, phone, locality, with a source per row; pages show
names, and a code the table lacks as "Practice <code>", never a guessed name."""
from __future__ import annotations

import csv
import re

import pytest

from engine.app import practices
from engine.app.practices import DEFAULT_CSV, display_name, load, practice, practice_label, practice_name
from engine.synthetic.generate import practices as generated_practices


def test_the_demo_practices_have_their_published_names_and_phone_numbers():
    p = practice("A81001")
    assert (p.name, p.phone, p.locality) == ("The Densham Surgery", "01642 672351", "central")
    assert p.source.startswith("NHSD:EPRACCUR:")
    assert practice_label("a81001") == "The Densham Surgery (A81001)"
    assert practice_name("A81002") == "Queens Park Medical Centre"


def test_every_generated_practice_is_in_the_table_with_a_clearly_synthetic_name_and_a_drama_number():
    table = practices.table()
    for g in generated_practices():
        p = table[g.ods]
        assert p.name.endswith("(synthetic)") and p.locality == g.locality
        assert p.source == "CAREPATH:SYNTHETIC-PRACTICES:1"
        assert re.fullmatch(r"0161 496 0[0-9]{3}", p.phone)  # Ofcom's range for drama: no real line
    assert len({p.name for p in table.values()}) == len(table)


def test_every_row_has_a_source():
    with open(DEFAULT_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["source"] and r["name"] and re.fullmatch(r"[A-Z][0-9]{5}", r["ods_code"]) for r in rows)


def test_unknown_codes_are_never_given_a_name():
    assert practice("Z99999") is None
    assert practice_label("Z99999") == "Practice Z99999" and practice_name("Z99999") == "Practice Z99999"
    assert practice_label(None) == "" and practice_label("(none)") == "(none)"


def test_display_names():
    assert display_name("THE DENSHAM SURGERY") == "The Densham Surgery"
    assert display_name("BOROUGH ROAD & NUNTHORPE MEDICAL GROUP") == "Borough Road & Nunthorpe Medical Group"
    assert display_name("DR RASOOL") == "Dr Rasool"
    assert display_name("Riverside Surgery (synthetic)") == "Riverside Surgery (synthetic)"


def test_a_site_table_replaces_the_shipped_one(tmp_path, monkeypatch):
    site = tmp_path / "practices.csv"
    site.write_text("ods_code,name,phone,locality,source\nB82005,THE RIVERSIDE PRACTICE,,north,SITE:EPRACCUR:2026-11\n")
    monkeypatch.setenv("CAREPATH_PRACTICES", str(site))
    assert practice_label("B82005") == "The Riverside Practice (B82005)"
    assert practice_label("A81001") == "Practice A81001"  # not in the site's table


@pytest.mark.parametrize("text,problem", [
    ("ods_code,name,phone,locality\nA81001,X,,c\n", "missing source"),
    ("ods_code,name,phone,locality,source\nA81001,,,c,S\n", "needs an ODS code, a name and a source"),
    ("ods_code,name,phone,locality,source\nA81001,X,,c,S\nA81001,Y,,c,S\n", "listed twice"),
])
def test_a_bad_table_is_refused_with_its_line(tmp_path, text, problem):
    f = tmp_path / "p.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load(f)


def test_a_practice_is_found_by_code_or_by_words_of_its_name():
    assert practices.codes_for("a81001") == ["A81001"]           # a code, any case
    assert practices.codes_for("densham") == ["A81001"]          # a word of the name
    assert practices.codes_for("  park   QUEENS ") == ["A81002"]  # words in any order and case
    assert practices.codes_for("no such surgery") == [] and practices.codes_for("   ") == []


def test_practices_for_a_dropdown_are_ordered_by_name():
    assert practices.by_name(["A81001", "A81002", None, "A81001"]) == [
        ("A81002", "Queens Park Medical Centre (A81002)"), ("A81001", "The Densham Surgery (A81001)")]
    assert practices.by_name(["Z99999"]) == [("Z99999", "Practice Z99999")]  # unknown: the code, never a name
