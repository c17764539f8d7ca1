"""Pieces of the web pages that need no browser: the SVG charts, redirects, CSRF tokens, formatting."""
from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from api.web.charts import Unit, count_text, funnel_plot, rank_order, ranked_bars, trend_chart
from api.web.common import _csrf_value, fmt_span, safe_next

NS = {"svg": "http://www.w3.org/2000/svg"}


def _units():
    return [Unit("A81001", 0.5, 2, 1, (0.09, 0.9), (0.0, 0.98), "within", "/app/audit/DM020/patients?unit=A81001"),
            Unit("B<&>", 0.9, 40, 36, (0.77, 0.96), (0.2, 0.46), "above"),
            Unit("C00000", None, 0, 0, None, None, "no-data")]


def test_ranked_bars_is_valid_svg_with_a_bar_per_unit_and_the_area_line():
    svg = ranked_bars(_units(), 0.33, "b", "DM020 by practice")
    root = ET.fromstring(str(svg))
    assert root.get("role") == "img" and root.find("svg:title", NS).text == "DM020 by practice"
    bars = root.findall(".//svg:g[@class='bar']", NS)
    assert len(bars) == 2  # the unit with no eligible patients is listed in words by the page, not drawn
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts.index("B<&>") < texts.index("A81001") and "C00000" not in texts
    [line] = root.findall(".//svg:line[@class='area-rate']", NS)
    assert abs(float(line.get("x1")) - (150 + 420 * 0.33)) < 0.1
    assert root.find(".//svg:a", NS).get("href").startswith("/app/audit/")
    assert "B&lt;&amp;&gt;" in str(svg)  # labels are escaped


def test_small_units_are_not_ranked_above_big_ones():
    """Issue 16: ranked bars were topped by practices at 1/1 = 100%."""
    units = [Unit("TINY", 1.0, 1, 1, (0.2, 1.0), None, "within"), Unit("BIG", 0.6, 200, 120, (0.53, 0.67), (0.5, 0.6), "within"),
             Unit("MID", 0.7, 12, 8, (0.4, 0.9), (0.3, 0.8), "within")]
    assert [u.label for u in rank_order(units)] == ["MID", "BIG", "TINY"]
    root = ET.fromstring(str(ranked_bars(units, 0.6, "r", "t")))
    texts = "".join(root.itertext())
    assert texts.index("BIG") < texts.index("TINY") and "(1/1) not ranked" in texts


def test_small_number_suppression():
    assert [count_text(n, True) for n in (0, 1, 7, 8, 120)] == ["0", "<8", "<8", "8", "120"]
    assert count_text(3, False) == "3"
    units = [Unit("P1", 0.5, 6, 3, (0.2, 0.8), (0.1, 0.9), "within")]
    svg = str(ranked_bars(units, 0.5, "s", "t", suppress=True)) + str(funnel_plot(units, 0.5, "f", "t", suppress=True))
    assert "&lt;8/&lt;8" in svg and "(3/6)" not in svg and "3 of 6" not in svg


def test_funnel_plot_names_only_the_outliers():
    units = [Unit(f"W{i}", 0.5, 50 + i, 25, None, (0.36, 0.64), "within") for i in range(30)] + \
            [Unit("HIGH", 0.95, 60, 57, None, (0.37, 0.63), "above")]
    root = ET.fromstring(str(funnel_plot(units, 0.5, "f", "t")))
    labels = [t.text for t in root.findall(".//svg:text[@class='point-label']", NS)]
    assert labels == ["HIGH"] and len(root.findall(".//svg:g[@class='point']", NS)) == 31


def test_funnel_plot_limits_and_points():
    root = ET.fromstring(str(funnel_plot(_units(), 0.4, "f", "funnel")))
    assert len(root.findall(".//svg:polyline", NS)) == 4
    assert len(root.findall(".//svg:g[@class='point']", NS)) == 2  # the unit without eligible patients has no point
    # limits narrow as units grow: the upper 95% limit falls from left to right
    upper = next(p for p in root.findall(".//svg:polyline", NS) if "95%" in p.find("svg:title", NS).text
                 and "upper" in p.find("svg:title", NS).text and "99.8" not in p.find("svg:title", NS).text)
    ys = [float(pt.split(",")[1]) for pt in upper.get("points").split()]
    assert ys == sorted(ys)
    # an area rate of 0% or 100% has no funnel to draw
    assert not ET.fromstring(str(funnel_plot(_units(), 0.0, "g", "funnel"))).findall(".//svg:polyline", NS)


def test_trend_chart():
    d = [dt.date(2026, 3, 31), dt.date(2026, 6, 30), dt.date(2026, 9, 30)]
    root = ET.fromstring(str(trend_chart([("Area", [(d[0], 0.2), (d[1], None), (d[2], 0.4)]),
                                          ("A81001", [(d[0], 0.5), (d[2], 0.6)])], "t", "trend")))
    assert len(root.findall(".//svg:circle", NS)) == 4  # a missing rate is not drawn
    assert len(root.findall(".//svg:polyline", NS)) == 2
    assert "Area: 2026-03-31 20.0%, 2026-09-30 40.0%" in root.find("svg:desc", NS).text
    empty = ET.fromstring(str(trend_chart([("Area", [])], "e", "trend")))
    assert "No reporting snapshots yet" in "".join(empty.itertext())


def test_redirects_stay_on_the_pages():
    assert safe_next("/app/worklist?status=open") == "/app/worklist?status=open"
    for bad in (None, "", "https://evil.example/app/", "//evil.example/app/", "/docs", "/app\\evil", "/app/x\r\nSet-Cookie: a=b"):
        assert safe_next(bad) == "/app/"


def test_csrf_token_is_bound_to_key_nonce_and_session():
    base = _csrf_value(b"k", "nonce", "session")
    assert base == _csrf_value(b"k", "nonce", "session")
    assert len({base, _csrf_value(b"k2", "nonce", "session"), _csrf_value(b"k", "other", "session"),
                _csrf_value(b"k", "nonce", "other")}) == 4


def test_spans():
    assert fmt_span(3.5) == "3 h 30 min" and fmt_span(-50) == "2 d 2 h" and fmt_span(0.25) == "15 min" and fmt_span(48) == "2 d"


def test_trend_end_labels_never_overprint():
    d = [dt.date(2026, 6, 30), dt.date(2026, 9, 30)]
    series = [(f"S{i}", [(d[0], 0.0), (d[1], 0.5)]) for i in range(7)]  # seven lines ending on the same rate
    root = ET.fromstring(str(trend_chart(series, "t", "trend")))
    labels = root.findall(".//svg:text[@class='end-label']", NS)
    ys = sorted(float(t.get("y")) for t in labels)
    assert len(ys) == 7 and all(b - a >= 15 for a, b in zip(ys, ys[1:]))
    assert len({t.get("fill") for t in labels}) == 7  # a colour per series
    assert float(root.get("viewBox").split()[3]) >= ys[-1]  # inside the picture


def test_protocol_page_parses_each_file_once(tmp_path):
    """Issue 16 item 5: the diabetes protocol page took 2-9 s because it parsed the area role agreement
    (111 practices) again for every activity and rule. Files are now parsed once per content."""
    from api.web import protocols as wp

    f = tmp_path / "a.yaml"
    f.write_text("agreement: a\nparties: [{id: p, name: P}]\n", encoding="utf-8")
    wp._parsed.cache_clear()
    for _ in range(50):
        assert wp._raw(str(f))["agreement"] == "a"
    assert wp._parsed.cache_info().misses == 1
    f.write_text("agreement: b\nparties: []\n# a longer file\n", encoding="utf-8")  # edited (e.g. a new version)
    assert wp._raw(str(f))["agreement"] == "b" and wp._parsed.cache_info().misses == 2
    assert wp._raw(str(tmp_path / "missing.yaml")) == {}


def test_every_shipped_protocol_reads_in_clinical_words():
    """Issue 16 item 8: the protocol page showed expressions (`latest(diabetes_resolved) after ...`) and raw
    dicts (`{'sum': [...]}`); it now shows the IR in words for every part of every shipped protocol."""
    from pathlib import Path

    from engine.app.docs import clinical_words
    from tests.unit.cached import shipped_library

    lib = shipped_library()
    for p in lib.protocols:
        words = clinical_words(p)
        assert words["register"], p.key
        text = " ".join(" ".join(v) if isinstance(v, list) else v for v in words.values())
        for syntax in ("latest(", "earliest(", "{'", "'sum'", "==", "mm[Hg]", "_"):
            assert syntax not in text, (p.key, syntax)
