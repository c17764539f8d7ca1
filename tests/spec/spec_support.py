"""Helpers for the spec tests: tiny inline protocols and tiny patient records.

    proto = load_spec(tmp_path,
                      valuesets={"hba1c": {"codes": ["h"], "unit": "mmol/mol", "analyte": "hba1c"}},
                      rules={"high": "latest(hba1c).value >= 58 mmol/mol"})
    rec = record(fact("h", "2025-01-10", 61, "mmol/mol"))
    assert holds(proto, rec, "2025-06-15", engine_name) == {"high"}

Rules are the simplest way to ask "did this condition hold?": each rule's `when` is one condition
(its actions: a flag coded with the rule id and a routine task "Review <id>" for a gp), and `holds` returns the ids of the rules whose condition held (the raw keys from the engine, not
filtered by the register, so a rule can be checked without a population).
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

from engine.engines.derive import Context
from engine.evaluation.evaluator import Options, evaluate, fired_conditions
from engine.language.loader import load_protocol
from engine.records.model import Fact, Patient, PatientRecord
from engine.records.nhs_number import check_digit

REF = dt.date(2025, 6, 15)  # a default reference date (a Sunday; nothing depends on it)
_ids = itertools.count(1)
_files = itertools.count(1)


def _q(expr: str) -> str:
    """An expression as a single-quoted YAML scalar (so ':' '#' '%' in it are safe)."""
    return "'" + str(expr).replace("'", "''") + "'"


def _cond(value) -> str:
    """A condition: an expression string, or a nested {all|any|not: ...} form (emitted as flow YAML)."""
    if isinstance(value, str):
        return _q(value)
    return json.dumps(value)


def protocol_text(*, valuesets: dict, rules: dict | None = None, define: dict | None = None,
                  population="age >= 0", activities: str = "", measures: str = "", goals: str = "",
                  period: str | None = None, pid: str = "spec", version: str = "1.0.0", extra: str = "") -> str:
    """YAML text of a protocol. valuesets: name -> list of codes, or a dict of VALUESET keys; `extra` is
    appended as it is (other top-level sections: score, segments, tiers)."""
    lines = [f"protocol: {pid}", f"version: {version}", "title: Spec protocol", "status: draft",
             "effective: 2020-01-01", "owner: spec tests", "evidence: [spec]"]
    if period:
        lines.append(f"period: {period}")
    lines.append("valuesets:")
    for name, spec in valuesets.items():
        if isinstance(spec, (list, tuple)):
            spec = {"codes": list(spec)}
        lines.append(f"  {name}: {json.dumps(spec)}")
    if isinstance(population, str):
        lines.append(f"population: {_q(population)}")
    else:
        lines.append(f"population: {json.dumps(population)}")
    if define:
        lines.append("define:")
        lines += [f"  {k}: {_cond(v)}" for k, v in define.items()]
    if activities:
        lines.append("activities:")
        lines.append(activities.rstrip())
    if goals:
        lines.append("goals:")
        lines.append(goals.rstrip())
    if rules:
        lines.append("rules:")
        for rid, when in rules.items():
            lines += [f"  - id: {rid}", f"    when: {_cond(when)}",
                      f"    then: {{flag: {{code: {rid}, level: info}}, task: {{title: Review {rid}, role: gp}}}}",
                      "    because: spec"]
    if measures:
        lines.append("measures:")
        lines.append(measures.rstrip())
    if extra:
        lines.append(extra.rstrip())
    return "\n".join(lines) + "\n"


def write_protocol(tmp_path: Path, text: str) -> Path:
    path = Path(tmp_path) / f"spec-{next(_files)}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_spec(tmp_path: Path, **parts):
    return load_protocol(write_protocol(tmp_path, protocol_text(**parts)))


def nhs(n: int = 0) -> str:
    """A valid NHS number (Modulus 11) derived from n."""
    k = 0
    while True:
        nine = f"{943476591 + n * 7 + k:09d}"[-9:]
        c = check_digit(nine)
        if c is not None and len(set(nine + str(c))) > 1:
            return nine + str(c)
        k += 1


def day(d) -> dt.date:
    return d if isinstance(d, dt.date) else dt.date.fromisoformat(d)


def fact(code: str, start, value: float | None = None, unit: str | None = None, *, end=None, kind: str = "observation",
         status: str | None = None, setting: str = "gp", fid: str | None = None, system: str = "snomed",
         value_codes: list[str] | None = None, **attrs) -> Fact:
    return Fact(id=fid or f"f{next(_ids)}", kind=kind, codes=[{"system": system, "code": code}], start=start,
                end=end, value=value, unit=unit, status=status, care_setting=setting, source_system="spec",
                value_codes=[{"system": "snomed", "code": c} for c in (value_codes or [])], attrs=attrs)


def record(*facts: Fact, birth="1960-01-01", death=None, sex="unknown", n: int = 0, **patient) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=nhs(n), birth_date=day(birth), death_date=day(death) if death else None,
                                         sex=sex, **patient), facts=list(facts))


def fired(proto, rec: PatientRecord, as_of=REF, engine: str = "durable", period_start=None) -> set[str]:
    """Raw condition keys that held (population, rule:<id>, activity:<id>:<part>, ...)."""
    ctx = Context.as_of(day(as_of), proto.period, day(period_start) if period_start else None)
    keys, _ = fired_conditions(rec, proto, ctx, engine)
    return keys


def holds(proto, rec: PatientRecord, as_of=REF, engine: str = "durable", period_start=None) -> set[str]:
    """Ids of the rules whose `when` held."""
    return {k[5:] for k in fired(proto, rec, as_of, engine, period_start) if k.startswith("rule:")}


def run(proto, rec: PatientRecord, as_of=REF, engine: str = "durable", agreements=None, period_start=None):
    """The public entry point: one protocol, one patient."""
    ev = evaluate(rec, [proto], agreements or [], as_of=day(as_of), period_start=day(period_start) if period_start else None,
                  options=Options(engine=engine))
    return ev, ev.protocols[0]


def run_one(proto, rec, engine):
    """One protocol's result for one patient as of REF, by one engine."""
    return evaluate(rec, [proto], [], as_of=REF, options=Options(engine=engine)).protocols[0]


def undetermined_ids(res):
    """The ids a result reports as "cannot determine" (a declared codelist not supplied)."""
    return sorted(c.id for c in res.cannot_determine)
