"""Server-rendered SVG charts for the audit dashboard (no JavaScript):

- `ranked_bars`: units ranked by rate, each bar with its 95% confidence interval, the band the
  area rate's 95% funnel limits allow at that unit's size, and the area rate as a line;
- `funnel_plot`: rate against the number of eligible patients, with 95% and 99.8% control limits
  around the area rate;
- `trend_chart`: rates over reporting dates (one line per series).

The pieces every chart here and in api/web/outcome_charts.py draws alike are helpers: `svg_chart` (the
frame), `axes` (grid, tick labels, axis title and lines of a plot area), `control_limit`, `reference_line`
and `funnel_point` (the funnel plots' curves, centre line and points), `link`.

Every chart is an <svg role="img"> with a <title> and <desc>, each mark has its own <title>
(hover text), comparisons are written out as well as coloured, and the page shows the same figures
in a table.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from markupsafe import Markup, escape

from engine.app.audit import Z95, Z998, funnel

MIN_TO_RANK = 10  # fewer eligible patients than this: shown, but not ranked (a rate of 1/1 = 100% says little)
SUPPRESS_BELOW = 8  # counts 1-7 shown as "<8" where small-number suppression applies (NHS publication practice)
FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'
COLOURS = {"above": "#007f3b", "within": "#005eb8", "below": "#d5281b", "no-data": "#768692"}
MARKS = {"above": "▲", "below": "▼", "within": "", "no-data": ""}
# a unit's comparison judged by which way is better for the measure (its `improvement:`)
JUDGED_COLOURS = {"better": COLOURS["above"], "worse": COLOURS["below"], "within": COLOURS["within"],
                  "no-data": COLOURS["no-data"]}
GRID, TICK, INK = "#d8dde0", "#425563", "#212b32"  # grid lines; tick labels and axes; text and lines
FUNNEL_LIMITS = ((Z95, "6 3", "95%"), (Z998, "2 3", "99.8%"))  # z, dash, name of the funnel plots' control limits


@dataclass
class Unit:
    label: str
    rate: float | None
    n: int  # eligible: denominator - exclusions
    numerator: int
    ci: tuple[float, float] | None
    limits95: tuple[float, float] | None
    comparison: str
    href: str | None = None


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def count_text(n: int, suppress: bool) -> str:
    """A count as published: 1-7 become '<8' when suppressing (0 stays 0: nothing to re-identify)."""
    return f"<{SUPPRESS_BELOW}" if suppress and 0 < n < SUPPRESS_BELOW else str(n)


def judgement(comparison: str, lower_is_better: bool = False) -> str:
    """A unit's comparison with the area ("above", "below" its funnel limits, "within", "no-data") judged by the
    measure's direction: "better", "worse", "within" or "no-data". Above is better unless lower is better
    (an inverse measure, `improvement: decrease`, e.g. poor HbA1c control), where above is the concerning side."""
    if comparison == "above":
        return "worse" if lower_is_better else "better"
    if comparison == "below":
        return "better" if lower_is_better else "worse"
    return comparison if comparison in JUDGED_COLOURS else "no-data"


def rank_order(units: list["Unit"], lower_is_better: bool = False) -> list["Unit"]:
    """Ranked best first among units big enough to rank (highest rate first; lowest first when lower is
    better), then the small ones the same way, then those with no eligible patients (kept out of the chart
    by the caller)."""
    sign = 1 if lower_is_better else -1
    return sorted(units, key=lambda u: (u.rate is None, u.n < MIN_TO_RANK, sign * (u.rate or 0), u.label))


@dataclass(frozen=True)
class Plot:
    """A chart's plot area in SVG units: the axes' corner at (left, top + height)."""
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


def axes(plot: Plot, y_ticks, x_ticks=(), x_title: str | None = None, title_y: int | None = None,
         lines: bool = False) -> list[str]:
    """A grid line across `plot` at each y tick with its label left of it, each x tick's label below the plot,
    the x axis title (baseline at `title_y`) and, with `lines`, the x and y axis lines. Ticks are
    (position in SVG units, label)."""
    out = []
    for gy, text in y_ticks:
        out.append(f'<line x1="{plot.left}" y1="{gy:.1f}" x2="{plot.right}" y2="{gy:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{plot.left - 6}" y="{gy + 4:.1f}" text-anchor="end" fill="{TICK}">{escape(text)}</text>')
    for gx, text in x_ticks:
        out.append(f'<text x="{gx:.1f}" y="{plot.bottom + 18}" text-anchor="middle" fill="{TICK}">{escape(text)}</text>')
    if x_title:
        out.append(f'<text x="{plot.left + plot.width / 2:.1f}" y="{title_y}" text-anchor="middle" fill="{INK}">'
                   f'{escape(x_title)}</text>')
    if lines:
        out.append(f'<line x1="{plot.left}" y1="{plot.bottom}" x2="{plot.right}" y2="{plot.bottom}" stroke="{TICK}"/>')
        out.append(f'<line x1="{plot.left}" y1="{plot.top}" x2="{plot.left}" y2="{plot.bottom}" stroke="{TICK}"/>')
    return out


def control_limit(plot: Plot, name: str, dash: str, upper, lower, label_y: float) -> list[str]:
    """A funnel plot's control limit: its upper and lower curves ((x, y) points in SVG units) and its name
    at the right of the plot, at `label_y`."""
    out = []
    for pts, side in ((upper, "upper"), (lower, "lower")):
        line = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(f'<polyline points="{line}" fill="none" stroke="#768692" stroke-width="1.5" '
                   f'stroke-dasharray="{dash}" class="funnel-{name}"><title>{name} {side} control limit</title></polyline>')
    out.append(f'<text x="{plot.right + 6}" y="{label_y + 4:.1f}" fill="{TICK}">{name}</text>')
    return out


def reference_line(plot: Plot, y: float, title: str, label: str) -> list[str]:
    """The area's line across a funnel plot (class area-rate), with its hover title and its label at the right."""
    return [f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.right}" y2="{y:.1f}" stroke="{INK}" '
            f'stroke-width="2" class="area-rate"><title>{escape(title)}</title></line>',
            f'<text x="{plot.right + 6}" y="{y + 4:.1f}" fill="{INK}" font-weight="bold">{escape(label)}</text>']


def funnel_point(px: float, py: float, r: int, colour: str, tip: str, label: str, comparison: str,
                 href: str | None, link_label: str) -> str:
    """One unit on a funnel plot: a dot with its hover text, named on the plot only when outside the limits
    (dozens of labels within them overprint each other; every point names itself on hover and in the table)."""
    inner = (f'<title>{escape(tip)}</title><circle cx="{px:.1f}" cy="{py:.1f}" r="{r}" fill="{colour}" '
             f'stroke="#fff" stroke-width="1.5"/>')
    if comparison in ("above", "below"):
        inner += f'<text x="{px + r + 3:.1f}" y="{py - r - 1:.1f}" fill="{INK}" class="point-label">{escape(label)}</text>'
    return '<g class="point">' + link(href, inner, link_label) + "</g>"


def svg_chart(width: int, height: int, uid: str, title: str, desc: str, body: list[str]) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" aria-labelledby="{uid}-t {uid}-d" class="chart" {FONT} font-size="13">'
            f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>')
    return Markup(head + "".join(body) + "</svg>")


def link(href: str | None, inner: str, label: str) -> str:
    if not href:
        return inner
    return f'<a href="{escape(href)}" aria-label="{escape(label)}">{inner}</a>'


def ranked_bars(units: list[Unit], area_rate: float | None, uid: str, title: str, suppress: bool = False,
                lower_is_better: bool = False) -> Markup:
    """Units with eligible patients only (the caller lists the others in words), big ones ranked best first."""
    units = rank_order([u for u in units if u.rate is not None and u.n > 0], lower_is_better)
    # room for the longest name (practice names run to ~35 characters at 13 px), within limits
    left = max(150, min(290, 12 + 7 * max((len(u.label) for u in units), default=0)))
    right, top, row = 190, 34, 30
    plot = 420
    width = left + plot + right
    height = top + row * max(1, len(units)) + 36
    x = lambda r: left + plot * r  # noqa: E731
    body = []
    # grid and axis
    for i in range(0, 11, 2):
        gx = x(i / 10)
        body.append(f'<line x1="{gx:.1f}" y1="{top - 6}" x2="{gx:.1f}" y2="{height - 30}" stroke="#d8dde0" stroke-width="1"/>')
        body.append(f'<text x="{gx:.1f}" y="{height - 12}" text-anchor="middle" fill="#425563">{i * 10}%</text>')
    for i, u in enumerate(units):
        y = top + i * row
        cy = y + row / 2
        label = f"{u.label}: {_pct(u.rate) if u.rate is not None else 'no eligible patients'}"
        of = f"{count_text(u.numerator, suppress)} of {count_text(u.n, suppress)}"
        small = u.n < MIN_TO_RANK
        detail = (f"{label} ({of}); 95% CI {_pct(u.ci[0])}–{_pct(u.ci[1])}; "
                  f"{u.comparison} the area's 95% limits" if u.ci else label) + (
                  f"; fewer than {MIN_TO_RANK} eligible patients, so not ranked" if small else "")
        body.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" fill="#212b32">{escape(u.label)}</text>')
        parts = [f"<title>{escape(detail)}</title>"]
        if u.limits95:
            lo, hi = u.limits95
            parts.append(f'<rect x="{x(lo):.1f}" y="{y + 3}" width="{max(1.0, x(hi) - x(lo)):.1f}" height="{row - 6}" '
                         f'fill="#e8edee" stroke="#aeb7bd" stroke-dasharray="3 2"/>')
        if u.rate is not None:
            judged = "no-data" if small else judgement(u.comparison, lower_is_better)
            parts.append(f'<rect x="{left}" y="{y + 8}" width="{max(1.0, plot * u.rate):.1f}" height="{row - 16}" '
                         f'fill="{JUDGED_COLOURS[judged]}" class="bar-{judged}"/>')
            if u.ci:
                parts.append(f'<line x1="{x(u.ci[0]):.1f}" y1="{cy:.1f}" x2="{x(u.ci[1]):.1f}" y2="{cy:.1f}" stroke="#212b32" stroke-width="1.5"/>'
                             f'<line x1="{x(u.ci[0]):.1f}" y1="{cy - 5:.1f}" x2="{x(u.ci[0]):.1f}" y2="{cy + 5:.1f}" stroke="#212b32"/>'
                             f'<line x1="{x(u.ci[1]):.1f}" y1="{cy - 5:.1f}" x2="{x(u.ci[1]):.1f}" y2="{cy + 5:.1f}" stroke="#212b32"/>')
            mark = "" if small else MARKS.get(u.comparison, "")
            note = "not ranked" if small else (mark + " " + u.comparison if mark else "")
            if lower_is_better and judged in ("better", "worse"):
                note += f" ({judged})"  # in words too: above the limits is the concerning side here
            text = f"{_pct(u.rate)} ({count_text(u.numerator, suppress)}/{count_text(u.n, suppress)}) {note}"
            parts.append(f'<text x="{left + plot + 8}" y="{cy + 4:.1f}" fill="#212b32">{escape(text)}</text>')
        else:
            parts.append(f'<text x="{left + 4}" y="{cy + 4:.1f}" fill="#425563">no eligible patients</text>')
        body.append('<g class="bar">' + link(u.href, "".join(parts), f"Patients behind {u.label}") + "</g>")
    if area_rate is not None:
        ax = x(area_rate)
        body.append(f'<line x1="{ax:.1f}" y1="{top - 10}" x2="{ax:.1f}" y2="{height - 30}" stroke="#212b32" '
                    f'stroke-width="2" stroke-dasharray="6 3" class="area-rate"><title>Area rate {_pct(area_rate)}</title></line>')
        body.append(f'<text x="{ax:.1f}" y="{top - 14}" text-anchor="middle" fill="#212b32" font-weight="bold">'
                    f'area {_pct(area_rate)}</text>')
    desc = ("Horizontal bars, one per unit, ranked by rate" + (" lowest first (lower is better)" if lower_is_better else "") + "; whiskers are 95% confidence intervals, the shaded band "
            "is the range expected from the area rate at that unit's size (95% funnel limits), and the dashed line "
            "is the area rate. The table below has the same figures.")
    return svg_chart(width, height, uid, title, desc, body)


def funnel_plot(units: list[Unit], area_rate: float | None, uid: str, title: str, suppress: bool = False,
                lower_is_better: bool = False) -> Markup:
    plot = Plot(56, 20, 460, 280)
    width, height = plot.right + 150, plot.bottom + 48
    max_n = max([u.n for u in units if u.n] + [10])
    max_n = int(math.ceil(max_n * 1.15 / 5.0) * 5)
    x = lambda n: plot.left + plot.width * n / max_n  # noqa: E731
    y = lambda r: plot.top + plot.height * (1 - r)  # noqa: E731
    body = axes(plot, [(y(i / 10), f"{i * 10}%") for i in range(0, 11, 2)],
                [(x(max_n * i / 5), f"{max_n * i / 5:.0f}") for i in range(0, 6)],
                "Eligible patients (denominator minus exclusions)", height - 8, lines=True)
    if area_rate is not None:
        for z, dash, name in (FUNNEL_LIMITS if 0 < area_rate < 1 else ()):
            upper, lower = [], []
            for k in range(0, 81):
                n = max(0.5, max_n * k / 80)  # continuous in n, so the limits are smooth curves
                half = z * math.sqrt(area_rate * (1 - area_rate) / n)
                upper.append((x(n), y(min(1.0, area_rate + half))))
                lower.append((x(n), y(max(0.0, area_rate - half))))
            body += control_limit(plot, name, dash, upper, lower, y(funnel(area_rate, max_n, z)[1]))
        body += reference_line(plot, y(area_rate), f"Area rate {_pct(area_rate)}", f"area {_pct(area_rate)}")
    for u in units:
        if u.rate is None or not u.n:
            continue
        tip = (f"{u.label}: {_pct(u.rate)} ({count_text(u.numerator, suppress)} of {count_text(u.n, suppress)}), "
               f"{u.comparison} the area's 95% limits")
        body.append(funnel_point(x(u.n), y(u.rate), 6, JUDGED_COLOURS[judgement(u.comparison, lower_is_better)], tip, u.label,
                                 u.comparison, u.href, f"Patients behind {u.label}"))
    desc = ("Funnel plot: each unit is a point at its number of eligible patients and its rate; the solid line is "
            "the area rate, dashed lines the 95% and dotted lines the 99.8% control limits. Points outside the "
            "lines differ from the area by more than chance would explain.")
    return svg_chart(width, height, uid, title, desc, body)


def trend_chart(series: list[tuple[str, list[tuple[dt.date, float | None]]]], uid: str, title: str) -> Markup:
    # room on the right for the longest end label ("Meadowbank Medical Centre (synthetic) 100.0%")
    longest = max((len(name) for name, _ in series), default=0) + 7
    plot = Plot(56, 20, 460, 220)
    left, top, pw, ph = plot.left, plot.top, plot.width, plot.height
    width, height = plot.right + max(150, min(330, 16 + 7 * longest)), plot.bottom + 40
    dates = sorted({d for _, pts in series for d, _ in pts})
    y = lambda r: top + ph * (1 - r)  # noqa: E731
    y_ticks = [(y(i / 10), f"{i * 10}%") for i in range(0, 11, 2)]
    if not dates:
        body = axes(plot, y_ticks)
        body.append(f'<text x="{left + 10}" y="{top + ph / 2}" fill="{TICK}">No reporting snapshots yet</text>')
        return svg_chart(width, height, uid, title, "No data.", body)
    span = max(1, (dates[-1] - dates[0]).days)
    x = (lambda d: left + pw * (d - dates[0]).days / span) if len(dates) > 1 else (lambda d: left + pw / 2)
    body = axes(plot, y_ticks, [(x(d), f"{d.day} {d:%b %Y}") for d in dates])
    # Distinct colours for up to 7 series (NHS identity palette); end labels spread so they never overprint.
    palette = ["#212b32", "#005eb8", "#ae2573", "#007f3b", "#ed8b00", "#330072", "#00a499"]
    ends = []
    for k, (name, pts) in enumerate(series):
        colour = palette[k % len(palette)]
        known = [(d, r) for d, r in pts if r is not None]
        if len(known) > 1:
            line = " ".join(f"{x(d):.1f},{y(r):.1f}" for d, r in known)
            dash = ' stroke-dasharray="6 3"' if k else ""
            body.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2.5"{dash}/>')
        for d, r in known:
            body.append(f'<circle cx="{x(d):.1f}" cy="{y(r):.1f}" r="4.5" fill="{colour}" class="trend-point">'
                        f'<title>{escape(name)} on {d.isoformat()}: {_pct(r)}</title></circle>')
        if known:
            d, r = known[-1]
            ends.append([y(r) + 4, colour, f"{name} {_pct(r)}"])
    ends.sort(key=lambda e: e[0])
    for i in range(1, len(ends)):  # push each label down until it clears the one above (15 px a line)
        ends[i][0] = max(ends[i][0], ends[i - 1][0] + 15)
    for ly, colour, text in ends:
        body.append(f'<text x="{left + pw + 8}" y="{ly:.1f}" fill="{colour}" class="end-label">{escape(text)}</text>')
    if ends:
        height = max(height, int(ends[-1][0]) + 8)
    desc = "Line chart of the rate at each reporting date: " + "; ".join(
        f"{name}: " + ", ".join(f"{d.isoformat()} {_pct(r)}" for d, r in pts if r is not None) for name, pts in series)
    return svg_chart(width, height, uid, title, desc, body)


def sparkline(points: list[tuple[dt.date, float | None]], label: str) -> Markup:
    """A word-sized trend of one measure's area rate over its reporting snapshots (0-100 % on a fixed scale,
    the last point marked and written beside it); the values are in its <title> for screen readers and
    hover. One snapshot or none: the words say so instead of a line."""
    known = [(d, r) for d, r in points if r is not None]
    if len(known) < 2:
        return Markup('<span class="muted small sparkline-none">' +
                      ("one reporting date" if known else "no snapshots") + "</span>")
    w, h, pad = 96, 22, 3
    span = max(1, (known[-1][0] - known[0][0]).days)
    x = lambda d: pad + (w - 2 * pad) * (d - known[0][0]).days / span  # noqa: E731
    y = lambda r: pad + (h - 2 * pad) * (1 - r)  # noqa: E731
    line = " ".join(f"{x(d):.1f},{y(r):.1f}" for d, r in known)
    d, r = known[-1]
    values = ", ".join(f"{day.day} {day:%b %Y} {_pct(rate)}" for day, rate in known)
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" viewBox="0 0 {w} {h}" width="{w}" '
                  f'height="{h}" role="img" aria-label="{escape(label)}: {escape(values)}">'
                  f"<title>{escape(label)}: {escape(values)}</title>"
                  f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#d8dde0"/>'
                  f'<polyline points="{line}" fill="none" stroke="#005eb8" stroke-width="1.6"/>'
                  f'<circle cx="{x(d):.1f}" cy="{y(r):.1f}" r="2.4" fill="#005eb8"/></svg>')
