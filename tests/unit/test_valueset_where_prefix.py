"""`where:` on a codelist column: exact values, and a value ending in `*` matching by prefix (BNF sections)."""
from pathlib import Path

import pytest

from engine.language.valuesets import ValueSetFileError, load_csv

ROOT = Path(__file__).resolve().parents[2]
DIURETICS = ROOT / "protocols" / "valuesets" / "diuretics_dmd.csv"


def _csv(tmp_path, text):
    p = tmp_path / "list.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_prefix_and_exact_values(tmp_path):
    p = _csv(tmp_path, "code,term,bnf_code,source\n"
                       "1,a,0202020L0AAABAB,X:Y:1\n2,b,0202010B0AAABAB,X:Y:1\n3,c,0202020D0AAAEAE,X:Y:1\n4,d,020202,X:Y:1\n")
    codes = lambda vs: sorted(c for _, c in vs.codes)
    assert codes(load_csv(p, "loop", "dmd", where={"bnf_code": ["020202*"]})) == ["1", "3", "4"]
    assert codes(load_csv(p, "one", "dmd", where={"bnf_code": ["0202010B0AAABAB"]})) == ["2"]
    # without the star a value is exact: the section code alone is only row 4
    assert codes(load_csv(p, "exact", "dmd", where={"bnf_code": ["020202"]})) == ["4"]
    assert codes(load_csv(p, "both", "dmd", where={"bnf_code": ["0202010*", "0202020D*"]})) == ["2", "3"]
    with pytest.raises(ValueSetFileError, match="no codes selected"):
        load_csv(p, "none", "dmd", where={"bnf_code": ["0204*"]})


def test_loop_diuretics_from_the_published_diuretics_list():
    """BNF 2.2.2 (loop diuretics) from the OpenSAFELY diuretics dm+d list: furosemide, bumetanide, torasemide only."""
    loop = load_csv(DIURETICS, "loop", "dmd", where={"bnf_code": ["020202*"]})
    terms = " ".join(loop.terms.values()).lower()
    assert len(loop) > 300
    assert "furosemide" in terms and "bumetanide" in terms and "torasemide" in terms
    assert not any(d in terms for d in ("bendroflumethiazide", "indapamide", "chlortalidone", "spironolactone"))
