"""`carepath docs` and the protocol page name a measure's own initial population (`initial_population:`) in its
denominator; "on the register" only when the measure has none (or the same as the protocol's population).
Before: every denominator read "on the register and ...", so AF006 (initial population: AF recorded and not
resolved, not the AF register's wider condition) and the pilot-outcomes cohorts were described wrongly."""
from pathlib import Path

from engine.app.docs import clinical_words, render
from engine.language.loader import load_protocol

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"


def _audit_lines(proto, measure_id: str) -> list[str]:
    """The lines under one measure in the docs' "How it is audited" section."""
    section = render(proto).split("## How it is audited", 1)[1].split("\n## ", 1)[0]
    block = section.split(f"- **{measure_id}**", 1)[1].split("\n- **", 1)[0]
    return [line.strip() for line in block.splitlines()[1:] if line.strip()]


def test_a_measures_own_initial_population_is_its_denominators_start():
    af = load_protocol(PROTOCOLS / "atrial-fibrillation.yaml")
    af006 = _audit_lines(af, "AF006")
    assert "- denominator: atrial fibrillation code recorded and not AF resolved now and not earlier score 2 or more" in af006
    assert not any("on the register" in line for line in af006)
    # a measure without initial_population: still the register
    assert "- denominator: on the register and CHA2DS2-VASc ≥ 2" in _audit_lines(af, "AF-ANTICOAG")
    words = clinical_words(af)  # the protocol page's words
    assert words["measure:AF006:ip"] == "atrial fibrillation code recorded and not AF resolved now"
    assert "measure:AF-ANTICOAG:ip" not in words


def test_value_measures_name_their_cohort_once():
    pilot = load_protocol(PROTOCOLS / "pilot-outcomes.yaml")
    lines = _audit_lines(pilot, "admissions-75-plus")
    assert "- denominator: aged 75 or over and alive at period start" in lines
    assert not any(line.startswith("- who is counted") for line in lines)


def test_an_initial_population_equal_to_the_register_reads_on_the_register():
    """CMS22 (counted per episode) and CMS165 write `initial_population:` as their population: on the register."""
    cms22 = load_protocol(PROTOCOLS / "ecqm" / "cms22-bp-screening.yaml")
    assert "- denominator: on the register and age at period start ≥ 18" in _audit_lines(cms22, "CMS22")
    cms165 = load_protocol(PROTOCOLS / "ecqm" / "cms165-controlling-bp.yaml")
    assert "- denominator: on the register and initial population" in _audit_lines(cms165, "CMS165")
