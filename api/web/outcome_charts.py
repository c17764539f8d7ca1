"""Server-rendered SVG charts for the outcome pages (no JavaScript), in the style of api/web/charts.py
(whose frame, axes, funnel curves and points, colours and links they reuse):

- `spc_chart`: an XmR chart in the NHS "Making Data Count" style — the monthly rate, the mean (solid),
  the process limits (dashed), special-cause points marked (orange: higher, blue: lower, as in the
  Making Data Count icons) with the rule that fired in each point's hover text, and the pilot's start;
- `ratio_funnel`: the funnel plot for rates, observed / expected against expected events with 95 % and
  99.8 % Poisson limits around 1.
"""
from __future__ import annotations

import math

from markupsafe import Markup, escape

from api.web.charts import COLOURS, FUNNEL_LIMITS, Plot, axes, control_limit, funnel_point, reference_line, svg_chart
from engine.app.outcomes.rates import poisson_limits

RULE_WORDS = {"outside": "outside the process limits", "shift": "7 or more in a row on one side of the mean",
              "trend": "6 or more in a row rising or falling"}
HIGH, LOW, COMMON = "#ed8b00", "#005eb8", "#768692"  # Making Data Count: orange / blue special cause, grey common


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * step:
            return m * step
    return 10 * step


def spc_chart(months: list[str], values: list[float | None], chart, uid: str, title: str, unit: str,
              start_index: int | None = None) -> Markup:
    plot = Plot(56, 20, 560, 230)
    left, top, pw, ph = plot.left, plot.top, plot.width, plot.height
    width, height = plot.right + 120, plot.bottom + 44
    known = [v for v in values if v is not None]
    ymax = _nice_max(max(known + [chart.upper, chart.mean]) * 1.05)
    n = len(values)
    x = lambda i: left + (pw * i / (n - 1) if n > 1 else pw / 2)  # noqa: E731
    y = lambda v: top + ph * (1 - v / ymax)  # noqa: E731
    body = axes(plot, [(y(ymax * k / 5), f"{ymax * k / 5:g}") for k in range(0, 6)],
                [(x(i), m) for i, m in enumerate(months) if i % 6 == 0 or i == n - 1], f"Month ({unit})", height - 6)
    if start_index is not None and 0 <= start_index < n:
        sx = x(start_index)
        body.append(f'<line x1="{sx:.1f}" y1="{top}" x2="{sx:.1f}" y2="{top + ph}" stroke="#330072" stroke-width="1.5" '
                    f'stroke-dasharray="2 2" class="pilot-start"><title>Pilot start {escape(months[start_index])}</title></line>')
        body.append(f'<text x="{sx + 4:.1f}" y="{top + 12}" fill="#330072">pilot start</text>')
    for v, name, dash, cls in ((chart.mean, "mean", "", "spc-mean"), (chart.upper, "upper process limit", "6 3", "spc-limit"),
                               (chart.lower, "lower process limit", "6 3", "spc-limit")):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        body.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + pw}" y2="{y(v):.1f}" stroke="#212b32" '
                    f'stroke-width="{2 if cls == "spc-mean" else 1.5}"{d} class="{cls}"><title>{name} {v:.1f}</title></line>')
        body.append(f'<text x="{left + pw + 6}" y="{y(v) + 4:.1f}" fill="#212b32">{name.split()[0]} {v:.1f}</text>')
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(pts) > 1:
        body.append('<polyline points="' + " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in pts)
                    + f'" fill="none" stroke="{COMMON}" stroke-width="2"/>')
    for i, v in pts:
        rules = chart.special(i)
        colour = COMMON if not rules else HIGH if v > chart.mean else LOW
        cls = "spc-point special" if rules else "spc-point"
        tip = f"{months[i]}: {v:.1f} {unit}" + (
            "; special cause: " + "; ".join(RULE_WORDS[r] for r in rules) if rules else "; common cause")
        body.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{5 if rules else 3.5}" fill="{colour}" class="{cls}" '
                    f'data-rules="{" ".join(rules)}"><title>{escape(tip)}</title></circle>')
    desc = (f"XmR chart: mean {chart.mean:.1f}, process limits {chart.lower:.1f} to {chart.upper:.1f} {unit}; "
            f"{chart.variation}. " + " ".join(
                f"{RULE_WORDS[r].capitalize()}: {', '.join(months[i] for i in idx)}." for r, idx in chart.rules.items() if idx))
    return svg_chart(width, height, uid, title, desc, body)


def ratio_funnel(units, uid: str, title: str, hrefs: dict[str, str] | None = None) -> Markup:
    """units: rates.FunnelUnit (observed, expected, ratio, comparison)."""
    plot = Plot(56, 20, 460, 280)
    width, height = plot.right + 150, plot.bottom + 48
    shown = [u for u in units if u.ratio is not None]
    max_e = _nice_max(max([u.expected for u in shown] + [1.0]) * 1.1)
    ymax = max(2.0, math.ceil(max([u.ratio for u in shown] + [1.0]) * 1.1 * 2) / 2)
    x = lambda e: plot.left + plot.width * e / max_e  # noqa: E731
    y = lambda r: plot.top + plot.height * (1 - r / ymax)  # noqa: E731
    body = axes(plot, [(y(k / 2), f"{k / 2:g}") for k in range(0, int(ymax * 2) + 1)],
                [(x(max_e * k / 5), f"{max_e * k / 5:g}") for k in range(0, 6)],
                "Expected events (at the area's rates for the same age and sex)", height - 8)
    for z, dash, name in FUNNEL_LIMITS:
        limits = [(x(max_e * k / 80), poisson_limits(max_e * k / 80, z)) for k in range(1, 81)]
        body += control_limit(plot, name, dash, [(px, y(min(ymax, hi))) for px, (lo, hi) in limits],
                              [(px, y(lo)) for px, (lo, hi) in limits], y(poisson_limits(max_e, z)[1]))
    body += reference_line(plot, y(1), "The area (ratio 1)", "area")
    for u in shown:
        tip = (f"{u.label}: {u.observed:.0f} observed, {u.expected:.1f} expected, ratio {u.ratio:.2f} "
               f"({u.comparison} the area's 95% limits)")
        body.append(funnel_point(x(u.expected), y(min(u.ratio, ymax)), 5, COLOURS.get(u.comparison, COLOURS["no-data"]),
                                 tip, u.label, u.comparison, (hrefs or {}).get(u.label), f"Outcomes for {u.label}"))
    desc = ("Funnel plot: each unit at its expected number of events (from the area's age-sex rates) and its ratio "
            "of observed to expected; 1 is the area, dashed lines the 95% and dotted lines the 99.8% limits. Points "
            "outside differ from the area by more than chance would explain.")
    return svg_chart(width, height, uid, title, desc, body)
