"""Issue 13 items 8 and 9: why-lines and `carepath docs` in clinical words, for every protocol (published files
unchanged): units as a results report writes them, value sets in their clusters' words, definitions with an
abbreviated identifier read as what they are."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.app.cases import load_cases
from engine.evaluation.evaluator import Options, evaluate
from engine.ir import nodes as ir
from engine.ir.unit_display import display_unit, display_units_in
from engine.language.valueset_words import valueset_words

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ucum, shown", [
    ("mm[Hg]", "mmHg"),
    ("mL/min/{1.73_m2}", "mL/min/1.73 m²"),
    ("kg/m2", "kg/m²"),
    ("{score}", ""),
    ("{score}/1", ""),
    ("1", ""),
    ("a", ""),
    ("10*9/L", "×10⁹/L"),
    ("umol/L", "µmol/L"),
    ("{copies}/mL", "copies/mL"),  # not in the table: UCUM's braces go, the words stay
    ("mmol/mol", "mmol/mol"),
    ("mg/mmol", "mg/mmol"),
    ("%", "%"),
    (None, ""),
])
def test_a_unit_is_shown_as_people_write_it(ucum, shown):
    assert display_unit(ucum) == shown


def test_units_inside_a_sentence_and_in_ir_words():
    assert display_units_in("eGFR 25 mL/min/{1.73_m2} (below 30 mL/min/{1.73_m2}); 140 mm[Hg]; score 5 {score}.") == \
        "eGFR 25 mL/min/1.73 m² (below 30 mL/min/1.73 m²); 140 mmHg; score 5."
    assert ir.format_const(ir.Const(140, ir.NUMBER, "mm[Hg]")) == "140 mmHg"
    assert ir.format_const(ir.Const(3, ir.NUMBER, "{score}")) == "3"


def test_a_value_set_reads_as_its_cluster():
    assert valueset_words({"CHD_COD"}) == "coronary heart disease code"
    assert valueset_words({"DMINVITE_COD", "HYPINVITE_COD"}, {"cluster": ["DMINVITE_COD"]}) == "diabetes care invitation"
    assert valueset_words({"MILDFRAIL_COD", "MODFRAIL_COD", "SEVFRAIL_COD"}) is None  # several: the identifier
    assert valueset_words({"FRC_COD"}, {"risk": ["high"]}) is None  # a subset: its identifier says which part
    assert valueset_words({"NOT_IN_THE_TABLE_COD"}) is None


@pytest.fixture(scope="module")
def t2dm_1_4():
    return load_cases(ROOT / "protocols" / "t2dm-annual-care@1.4.0.tests.yaml")


def _whys(cf, name: str) -> str:
    case = next(c for c in cf.cases if c.name.startswith(name))
    res = evaluate(case.record, [cf.protocol_for(case)], cf.agreements, as_of=case.as_of,
                   options=Options(engine="python")).protocols[0]
    parts = [x.provenance.why for x in [*res.care_plan, *res.tasks, *res.flags, *res.goals, *res.measures]]
    return " | ".join(parts + [s for m in res.measures for s in m.why_steps.values()])


def test_a_shipped_protocol_says_why_in_clinical_words(t2dm_1_4):
    """DM034's cardiovascular disease step named the value sets by identifier ("no chd recorded", "no pad
    recorded", "no tia recorded") and blood pressure in UCUM ("mm[Hg]"); the published file is unchanged."""
    why = _whys(t2dm_1_4, "(1.2.0 fix) A retinal screening refusal")
    assert "no coronary heart disease code recorded" in why
    assert "no peripheral arterial disease code recorded" in why
    assert "no transient ischaemic attack code recorded" in why
    for identifier in ("no chd recorded", "no pad recorded", "no tia recorded"):
        assert identifier not in why


def test_blood_pressure_and_egfr_why_lines_have_no_ucum(t2dm_1_4):
    why = " ".join(_whys(t2dm_1_4, c.name) for c in t2dm_1_4.cases[:40])
    assert "mmHg" in why and "mL/min/1.73 m²" in why
    for ucum in ("mm[Hg]", "{1.73_m2}", "{score}"):
        assert ucum not in why


def test_docs_of_a_shipped_protocol_have_no_ucum_and_cluster_words():
    from engine.app.review_doc import render_review
    from engine.language.library import load_library

    lib = load_library([ROOT / "protocols"])
    proto = next(p for p in lib.protocols if p.key == "t2dm-annual-care@1.4.0")
    text = render_review(proto, lib.agreements)
    assert "mmHg" in text and "done when: HbA1c recorded" in text
    for ucum in ("mm[Hg]", "{1.73_m2}", "frailty_moderate_severe"):
        assert ucum not in text


@pytest.mark.parametrize("identifier, words", [
    ("last_clinic_sbp", "last clinic systolic"),
    ("invites_12m", "invites in the last 12 months"),
    ("egfr_below_30_without_kfre", "eGFR below 30 without KFRE"),
    ("invited_twice_after_hba1c", "invited twice after HbA1c"),
    ("type1_diabetes", "type 1 diabetes"),
    ("newly_diagnosed", "newly diagnosed"),
])
def test_an_identifier_read_as_words(identifier, words):
    from engine.ir.words import identifier_words
    assert identifier_words(identifier) == words
