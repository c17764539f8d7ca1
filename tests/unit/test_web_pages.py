"""Pieces of the web pages that need no browser: the SVG charts, redirects, CSRF tokens, formatting."""
from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from api.web.charts import Unit, funnel_plot, ranked_bars, trend_chart
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
    assert len(bars) == 3
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts.index("B<&>") < texts.index("A81001") < texts.index("C00000")  # ranked by rate, no data last
    [line] = root.findall(".//svg:line[@class='area-rate']", NS)
    assert abs(float(line.get("x1")) - (150 + 420 * 0.33)) < 0.1
    assert root.find(".//svg:a", NS).get("href").startswith("/app/audit/")
    assert "B&lt;&amp;&gt;" in str(svg)  # labels are escaped


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
