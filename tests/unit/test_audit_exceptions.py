"""Audit figures with denominator exceptions and episode-based measures (issue 15 item 5): exceptions are
their own column, out of the rate (eCQM; QOF's personalised care adjustments beside achievement), and an
episode measure counts each episode (a patient can count twice, CMS22)."""
from __future__ import annotations

import datetime as dt

from engine.app.audit import Counts, figures, step_counts
from engine.app.fhir_out import summary_report


def m(**kw) -> dict:
    base = dict(measure="M", title="T", initial_population=True, denominator=True, exclusion=False, exception=False,
                numerator=False)
    base.update(kw)
    return base


def test_exceptions_are_counted_apart_and_left_out_of_the_rate():
    c = Counts("p", "1", "M", "T", "practice", "A81001")
    for r in (m(numerator=True), m(numerator=True), m(exception=True), m(exclusion=True), m()):
        c.add(r)
    assert (c.denominator, c.exclusions, c.exceptions, c.numerator) == (5, 1, 1, 2)
    assert c.eligible == 3 and c.rate == 2 / 3  # not 2/4: the exception is not a failure of care
    fig = figures(c, c)
    assert fig["exceptions"] == 1 and fig["rate"] == round(2 / 3, 4)


def test_an_episode_measure_counts_every_episode():
    r = m(basis="episode", counts={"initial_population": 2, "denominator": 2, "exclusion": 0, "exception": 1, "numerator": 1})
    assert step_counts(r) == {"initial_population": 2, "denominator": 2, "exclusions": 0, "exceptions": 1, "numerator": 1}
    c = Counts("p", "1", "M", "T", "area", "area")
    c.add(r)
    assert (c.denominator, c.exceptions, c.numerator, c.eligible) == (2, 1, 1, 1)


def test_summary_measure_report_carries_the_exceptions():
    c = Counts("ecqm-cms135", "0.1.0", "CMS135", "HF ACEi/ARB", "practice", "A81001")
    for r in (m(numerator=True), m(exception=True), m()):
        c.add(r)
    rep = summary_report(figures(c, c), (dt.date(2026, 1, 1), dt.date(2026, 12, 31)), dt.datetime(2026, 12, 6, 9))
    pops = {p["code"]["coding"][0]["code"]: p["count"] for p in rep["group"][0]["population"]}
    assert pops["denominator-exception"] == 1 and pops["denominator"] == 3
    assert rep["group"][0]["measureScore"]["value"] == 0.5
