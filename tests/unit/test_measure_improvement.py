"""Which way is better for a measure (`improvement: increase | decrease`, docs/protocol-language.md §8): read by
the language (a bad value is an error with file:line), kept on the Measure and answered by the Library, and
used by the audit charts (issue 16 point 4: CMS122, lower is better, was ranked and coloured as if higher were
better) and the FHIR summary MeasureReports (improvementNotation)."""
from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from api.web.charts import COLOURS, Unit, funnel_plot, judgement, rank_order, ranked_bars
from engine.app.fhir_out import summary_report
from engine.language.errors import ProtocolError
from engine.language.library import load_library
from engine.language.loader import load_protocol
from tests.one_measure_protocol import one_measure_protocol

ROOT = Path(__file__).resolve().parents[2]
NS = {"svg": "http://www.w3.org/2000/svg"}
GREEN, RED = COLOURS["above"], COLOURS["below"]


def test_improvement_defaults_to_increase_and_reads_decrease(tmp_path):
    (m,) = load_protocol(one_measure_protocol(tmp_path, "")).measures
    assert (m.improvement, m.lower_is_better) == ("increase", False)
    (m,) = load_protocol(one_measure_protocol(tmp_path, "    improvement: decrease\n")).measures
    assert (m.improvement, m.lower_is_better) == ("decrease", True)


@pytest.mark.parametrize("value", ["lower", "Decrease", "[decrease]", "1"])
def test_an_unknown_improvement_is_an_error_with_its_line(tmp_path, value):
    with pytest.raises(ProtocolError) as e:
        load_protocol(one_measure_protocol(tmp_path, f"    improvement: {value}\n"))
    text = str(e.value)
    assert "improvement" in text and "is not a direction" in text
    assert "m.yaml:14:" in text  # the line of the key, like every other key's error


def test_cms122_0_6_0_is_lower_is_better_and_0_5_0_was_not():
    lib = load_library([ROOT / "protocols"])
    assert lib.improvement("ecqm-cms122-glycemic-status-poor-control", "0.6.0", "CMS122") == "decrease"
    assert lib.improvement("ecqm-cms122-glycemic-status-poor-control", "0.5.0", "CMS122") == "increase"
    assert lib.improvement("ecqm-cms122-glycemic-status-poor-control", None, "CMS122") == "decrease"  # the latest
    assert lib.improvement("ecqm-cms165-controlling-high-blood-pressure", None, "CMS165") == "increase"
    assert lib.improvement("no-such-protocol", None, "X") == "increase"


def _units():
    return [Unit("HIGH", 0.40, 200, 80, (0.33, 0.47), (0.15, 0.25), "above"),
            Unit("MID", 0.20, 150, 30, (0.14, 0.27), (0.14, 0.26), "within"),
            Unit("LOW", 0.05, 180, 9, (0.03, 0.09), (0.14, 0.26), "below"),
            Unit("TINY", 0.0, 3, 0, (0.0, 0.56), None, "within")]


def test_lower_is_better_ranks_lowest_first_small_units_still_last():
    assert [u.label for u in rank_order(_units())] == ["HIGH", "MID", "LOW", "TINY"]
    assert [u.label for u in rank_order(_units(), lower_is_better=True)] == ["LOW", "MID", "HIGH", "TINY"]


def test_judgement_turns_round_when_lower_is_better():
    assert [judgement(c) for c in ("above", "within", "below", "no-data")] == ["better", "within", "worse", "no-data"]
    assert [judgement(c, True) for c in ("above", "within", "below", "no-data")] == ["worse", "within", "better", "no-data"]


def _bar_fill(root, label):
    for g in root.findall(".//svg:g[@class='bar']", NS):
        if label in g.find(".//svg:title", NS).text:
            rect = next(r for r in g.iter("{http://www.w3.org/2000/svg}rect") if r.get("class", "").startswith("bar-"))
            return rect.get("fill"), rect.get("class")
    raise AssertionError(label)


def test_ranked_bars_colour_above_the_limits_red_when_lower_is_better():
    usual = ET.fromstring(str(ranked_bars(_units(), 0.2, "u", "t")))
    assert _bar_fill(usual, "HIGH") == (GREEN, "bar-better") and _bar_fill(usual, "LOW") == (RED, "bar-worse")
    inverse = ET.fromstring(str(ranked_bars(_units(), 0.2, "i", "t", lower_is_better=True)))
    assert _bar_fill(inverse, "HIGH") == (RED, "bar-worse") and _bar_fill(inverse, "LOW") == (GREEN, "bar-better")
    texts = [t.text for t in inverse.iter("{http://www.w3.org/2000/svg}text")]
    assert texts.index("LOW") < texts.index("MID") < texts.index("HIGH")  # best (lowest) first
    words = "".join(inverse.itertext())
    assert "▲ above (worse)" in words and "▼ below (better)" in words  # not by colour alone


def test_funnel_points_colour_by_direction():
    def fills(lower):
        root = ET.fromstring(str(funnel_plot(_units(), 0.2, "f", "t", lower_is_better=lower)))
        return {g.find("svg:title", NS).text.split(":")[0]: g.find("svg:circle", NS).get("fill")
                for g in root.findall(".//svg:g[@class='point']", NS)}
    assert (fills(False)["HIGH"], fills(False)["LOW"]) == (GREEN, RED)
    assert (fills(True)["HIGH"], fills(True)["LOW"]) == (RED, GREEN)


def test_fhir_summary_report_carries_the_declared_improvement_notation():
    fig = {"protocol": "p", "measure": "M1", "title": "M one", "unit_kind": "area", "unit": "area",
           "initial_population": 10, "denominator": 10, "exclusions": 0, "exceptions": 0, "numerator": 3}
    period = (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    now = dt.datetime(2026, 12, 6, 12, tzinfo=dt.timezone.utc)

    def notation(report):
        return report["improvementNotation"]["coding"][0]["code"]
    assert notation(summary_report(fig, period, now)) == "increase"
    assert notation(summary_report(fig, period, now, improvement="decrease")) == "decrease"
    assert notation(summary_report({**fig, "value_patients": 2, "value_sum": 5}, period, now, has_value=True,
                                   improvement="decrease")) == "decrease"
