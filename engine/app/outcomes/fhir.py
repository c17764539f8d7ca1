"""An outcome report's monthly series as FHIR R4 MeasureReports (summary, one per month), in a Bundle:
measure `Measure/outcomes/<outcome>-<cohort>`, the month as the period, the standardised rate as the
group's measureScore (per 1,000 people per year), and as extensions the events, person-years, crude rate,
the XmR chart's mean and process limits, and the special-cause rules that mark the month."""
from __future__ import annotations

import datetime as dt
import re

from engine.app.fhir_out import BASE, bundle, measure_url, summary_resource

EXT = BASE + "StructureDefinition/"


def _month_end(month: str) -> dt.date:
    y, m = (int(x) for x in month.split("-"))
    nxt = dt.date(y + (m == 12), m % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)


def _id(text: str) -> str:
    """A FHIR id: letters, digits, '-' and '.', at most 64."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)[:64]


def series_reports(report: dict, now: dt.datetime) -> list[dict]:
    spc = report["spc"]
    marks: dict[int, list[str]] = {}
    for rule, idx in spc["rules"].items():
        for i in idx:
            marks.setdefault(i, []).append(rule)
    level, unit = report["level"], report["unit_name"]
    out = []
    for i, p in enumerate(report["series"]):
        ext = [{"url": EXT + "outcome-events", "valueDecimal": p["events"]},
               {"url": EXT + "outcome-person-years", "valueDecimal": round(p["person_years"], 4)},
               {"url": EXT + "spc-mean", "valueDecimal": round(spc["mean"], 3)},
               {"url": EXT + "spc-upper-process-limit", "valueDecimal": round(spc["upper"], 3)},
               {"url": EXT + "spc-lower-process-limit", "valueDecimal": round(spc["lower"], 3)}]
        if p["crude"] is not None:
            ext.append({"url": EXT + "crude-rate", "valueDecimal": round(p["crude"], 3)})
        ext += [{"url": EXT + "spc-special-cause", "valueString": r} for r in marks.get(i, [])]
        group = {"code": {"text": f"{report['outcome_name']}: {report['cohort_name']}"}}
        if p["standardised"] is not None:
            group["measureScore"] = {"value": round(p["standardised"], 3), "unit": "per 1,000 people per year"}
        first = dt.date.fromisoformat(p["month"] + "-01")
        out.append(summary_resource(
            measure_url("outcomes", f"{report['outcome']}-{report['cohort']}"), level, unit, (first, _month_end(p["month"])),
            group, now, extension=ext, id=_id(f"{report['outcome']}-{report['cohort']}-{level}-{unit}-{p['month']}"),
            improvement="decrease"))
    return out


def series_bundle(report: dict, now: dt.datetime) -> dict:
    return bundle(series_reports(report, now))
