"""carepath outputs as FHIR R4 resources, built as JSON and validated with fhir.resources.R4B
(every resource we send has passed the maintained R4 models).

- CarePlan  one per protocol for a patient: activities (status, next due, who), goals (contained
            Goal resources), why-lines as activity descriptions and notes.
- Task      a worklist task: status, priority, owner, due (restriction.period.end), reason = why,
            history as notes.
- Flag      a clinical or compliance flag.
- MeasureReport  individual (one patient, one measure) and summary (counts and rate per unit). A measure
            with `value:` (issue 19) is a continuous-variable measure in FHIR's terms: its populations are
            initial-population, measure-population, measure-population-exclusion and measure-observation
            (the patients with a value), and measureScore is the patient's value (individual) or the values
            added up (summary, aggregate method "sum", as the Quality Measure IG's cqfm-aggregateMethod says).
            One summary builder (`summary_resource`) serves the audit's summaries and the outcome series
            (engine/app/outcomes/fhir.py).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from engine.evaluation.outputs import ProtocolResult
from engine.records.fhir.common import NHS_NUMBER_SYSTEM, ODS_SYSTEM
from engine.registry.measure_results import measure_value, step_counts
from engine.registry.outputs import FlagRow, TaskEventRow, TaskRow
from engine.registry.tables import PatientRow

BASE = "https://carepath.example/fhir/"
TASK_KEY_SYSTEM = BASE + "Id/task-key"
FLAG_KEY_SYSTEM = BASE + "Id/flag-key"
CODES = BASE + "CodeSystem/"
TASK_STATUS = {"open": "requested", "accepted": "accepted", "completed": "completed", "declined": "rejected",
               "resolved": "cancelled"}
TASK_PRIORITY = {"urgent": "urgent", "high": "asap", "routine": "routine", "low": "routine"}
ACTIVITY_STATUS = {"met": "completed", "due": "scheduled", "overdue": "not-started", "excepted": "cancelled", "unknown": "unknown"}
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
AGGREGATE_METHOD = "http://hl7.org/fhir/us/cqfmeasures/StructureDefinition/cqfm-aggregateMethod"


def instant(d: dt.datetime | None) -> str | None:
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def validated(resource: dict) -> dict:
    """Validate against the R4 (R4B) model and return the model's own JSON."""
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return json.loads(model.model_dump_json())


def patient_ref(p: PatientRow) -> dict:
    name = " ".join(x for x in (p.given_name, p.family_name) if x)
    ref: dict[str, Any] = {"identifier": {"system": NHS_NUMBER_SYSTEM, "value": p.nhs_number}}
    if name:
        ref["display"] = name
    return ref


def _clean(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if v not in (None, [], {}, "")}
    if isinstance(d, list):
        return [_clean(x) for x in d]
    return d


def measure_url(protocol: str, measure: str) -> str:
    return f"{BASE}Measure/{protocol}/{measure}"


def care_plan(p: PatientRow, pr: ProtocolResult, reference_date: dt.date, evaluated_at: dt.datetime) -> dict:
    goals = []
    for i, g in enumerate(pr.goals):
        goals.append({"resourceType": "Goal", "id": f"goal{i}",
                      "lifecycleStatus": "active",
                      "achievementStatus": ({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                                                         "code": "achieved" if g.status == "achieved" else "not-achieved"}]}
                                            if g.status != "unknown" else {"text": "cannot be determined"}),
                      "description": {"text": g.title}, "subject": patient_ref(p),
                      "note": [{"text": g.provenance.why}]})
    activities = []
    for item in pr.care_plan:
        who = " / ".join(x for x in (item.assigned.provider, item.assigned.team, item.assigned.role) if x)
        activities.append({"detail": {
            "kind": "ServiceRequest",
            "code": {"coding": [{"system": CODES + f"activity/{pr.protocol}", "code": item.activity, "display": item.title}],
                     "text": item.title},
            "status": ACTIVITY_STATUS[item.status],
            "statusReason": {"text": item.status},
            "scheduledPeriod": {"end": item.next_due.isoformat()} if item.next_due else None,
            "performer": [{"display": who}] if who else None,
            "description": item.provenance.why}})
    return validated(_clean({
        "resourceType": "CarePlan", "id": f"{p.nhs_number}-{pr.protocol}",
        "identifier": [{"system": BASE + "Id/care-plan", "value": f"{p.nhs_number}|{pr.protocol}"}],
        "instantiatesUri": [f"{BASE}protocol/{pr.protocol}|{pr.version}"],
        "status": "active" if pr.on_register else "completed", "intent": "plan",
        "title": pr.title, "description": pr.register_why, "subject": patient_ref(p),
        "period": {"end": reference_date.isoformat()}, "created": instant(evaluated_at),
        "contained": goals, "goal": [{"reference": f"#{g['id']}"} for g in goals], "activity": activities,
        "note": [{"text": d} for d in pr.data_problems]}))


def task(t: TaskRow, p: PatientRow, history: list[TaskEventRow] | None = None) -> dict:
    owner = " / ".join(x for x in (t.provider, t.team, t.role) if x)
    return validated(_clean({
        "resourceType": "Task", "id": str(t.id),
        "identifier": [{"system": TASK_KEY_SYSTEM, "value": t.key}],
        "instantiatesUri": f"{BASE}protocol/{t.protocol}|{t.version}",
        "status": TASK_STATUS.get(t.status, "requested"),
        "statusReason": {"text": t.closed_reason} if t.closed_reason else None,
        "businessStatus": {"text": t.status},
        "intent": "plan", "priority": TASK_PRIORITY.get(t.priority, "routine"),
        "code": {"coding": [{"system": CODES + "task-kind", "code": t.kind}], "text": t.title},
        "description": t.title, "for": patient_ref(p), "authoredOn": instant(t.raised_at), "lastModified": instant(t.updated_at),
        "owner": {"display": owner} if owner else None,
        "restriction": {"period": {"end": instant(t.due)}},
        "reasonCode": {"text": t.why},
        "note": [{"text": f"{e.action} by {e.actor}" + (f": {e.note}" if e.note else ""), "time": instant(e.at)}
                 for e in (history or [])]}))


def flag(f: FlagRow, p: PatientRow) -> dict:
    return validated(_clean({
        "resourceType": "Flag", "id": str(f.id),
        "identifier": [{"system": FLAG_KEY_SYSTEM, "value": f.key}],
        "status": "active" if f.active else "inactive",
        "category": [{"coding": [{"system": CODES + "flag-kind", "code": f.kind}], "text": f.kind}],
        "code": {"coding": [{"system": CODES + f"flag/{f.protocol}", "code": f.code}], "text": f"{f.text} ({f.level}): {f.why}"},
        "subject": patient_ref(p), "period": {"start": instant(f.raised_at), "end": instant(f.cleared_at)}}))


def _population(code: str, count: int) -> dict:
    return {"code": {"coding": [{"system": POPULATION_SYSTEM, "code": code}]}, "count": count}


def individual_report(p: PatientRow, protocol: str, version: str, m: dict, period: tuple[dt.date, dt.date],
                      evaluated_at: dt.datetime) -> dict:
    group: dict[str, Any] = {"code": {"text": m.get("title")}, "population": _individual_populations(m)}
    if m.get("has_value"):
        v = measure_value(m, step_counts(m), m.get("cannot_determine"))
        if v is not None:
            group["measureScore"] = {"value": v}
    return validated(_clean({
        "resourceType": "MeasureReport", "id": f"{p.nhs_number}-{protocol}-{m['measure']}",
        "status": "complete", "type": "individual", "measure": measure_url(protocol, m["measure"]) + f"|{version}",
        "subject": patient_ref(p), "date": instant(evaluated_at),
        "period": {"start": period[0].isoformat(), "end": period[1].isoformat()},
        "group": [group],
        "extension": [{"url": BASE + "StructureDefinition/why", "valueString": m["provenance"]["why"]}]}))


def _individual_populations(m: dict) -> list[dict]:
    """The patient's populations: 0/1 each, or for a measure counted per episode how many of the patient's
    episodes are in each; denominator-exception when the measure has an exceptions step. A measure with a
    value: the continuous-variable populations (measure-observation: 1 when the patient's value counts)."""
    counts = m.get("counts")
    if m.get("has_value"):
        c = step_counts(m)
        observed = measure_value(m, c, m.get("cannot_determine")) is not None
        n = {"initial-population": c["initial_population"], "measure-population": c["denominator"],
             "measure-population-exclusion": c["exclusions"], "measure-observation": int(observed)}
    elif counts:
        n = {"initial-population": counts["initial_population"], "denominator": counts["denominator"],
             "denominator-exclusion": counts["exclusion"], "denominator-exception": counts.get("exception", 0),
             "numerator": counts["numerator"]}
    else:
        n = {"initial-population": int(bool(m["initial_population"])), "denominator": int(bool(m["denominator"])),
             "denominator-exclusion": int(bool(m["exclusion"])), "denominator-exception": int(bool(m.get("exception"))),
             "numerator": int(bool(m["numerator"]))}
    if not (m.get("has_exceptions") or counts) and "denominator-exception" in n:
        del n["denominator-exception"]
    return [_population(code, count) for code, count in n.items()]


def reporter(unit_kind: str, unit: str) -> dict:
    """Who the summary is for: a practice by its ODS code, else the MDT, locality or area by name."""
    if unit_kind == "practice":
        return {"identifier": {"system": ODS_SYSTEM, "value": unit}, "display": unit}
    return {"display": "area" if unit_kind == "area" else f"{unit_kind} {unit}"}


def summary_resource(measure: str, unit_kind: str, unit: str, period: tuple[dt.date, dt.date], group: dict,
                     now: dt.datetime, extension: list[dict] | None = None, id: str | None = None,
                     improvement: str | None = None) -> dict:
    """The one summary MeasureReport builder: `measure` (a canonical URL), the unit it reports on, the period,
    its group (populations, measureScore), extensions; validated."""
    notation = ({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
                             "code": improvement}]} if improvement else None)
    return validated(_clean({
        "resourceType": "MeasureReport", "id": id, "status": "complete", "type": "summary", "measure": measure,
        "date": instant(now), "reporter": reporter(unit_kind, unit),
        "period": {"start": period[0].isoformat(), "end": period[1].isoformat()}, "improvementNotation": notation,
        "group": [group], "extension": extension or None}))


def summary_report(fig: dict, period: tuple[dt.date, dt.date], now: dt.datetime, has_value: bool = False,
                   improvement: str = "increase") -> dict:
    """A unit's audit figures (engine.app.audit.figures). `has_value`: the measure has `value:` — a
    continuous-variable report (its patients' values added up as measureScore), not a proportion.
    `improvement`: the measure's declared direction (`improvement:`), written as improvementNotation."""
    exceptions = fig.get("exceptions", 0)
    if has_value:
        group: dict[str, Any] = {"code": {"text": fig["title"]}, "population": [
            _population("initial-population", fig["initial_population"]), _population("measure-population", fig["denominator"]),
            _population("measure-population-exclusion", fig["exclusions"]),
            _population("measure-observation", fig.get("value_patients", 0))]}
        if fig.get("value_patients"):
            group["measureScore"] = {"value": fig["value_sum"], "extension": [{"url": AGGREGATE_METHOD, "valueCode": "sum"}]}
        return summary_resource(measure_url(fig["protocol"], fig["measure"]), fig["unit_kind"], fig["unit"], period,
                                group, now, improvement=improvement)
    eligible = fig["denominator"] - fig["exclusions"] - exceptions
    group = {"code": {"text": fig["title"]}, "population": [
        _population("initial-population", fig["initial_population"]), _population("denominator", fig["denominator"]),
        _population("denominator-exclusion", fig["exclusions"]), _population("denominator-exception", exceptions),
        _population("numerator", fig["numerator"])]}
    if eligible > 0:
        group["measureScore"] = {"value": round(fig["numerator"] / eligible, 4), "unit": "proportion"}
    ext = ([{"url": BASE + "StructureDefinition/area-rate", "valueDecimal": fig["area_rate"]}]
           if fig.get("area_rate") is not None else None)
    return summary_resource(measure_url(fig["protocol"], fig["measure"]), fig["unit_kind"], fig["unit"], period,
                            group, now, extension=ext, improvement=improvement)


def bundle(resources: list[dict]) -> dict:
    return validated({"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                      "entry": [{"fullUrl": f"{BASE}{r['resourceType']}/{r['id']}" if r.get("id") else None, "resource": r}
                                if r.get("id") else {"resource": r} for r in resources]})
