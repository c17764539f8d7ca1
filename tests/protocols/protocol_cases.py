"""Protocol test cases: `<protocol>.tests.yaml` beside a protocol, each case a small record and what it must produce.

File layout (see protocols/t2dm-annual-care.tests.yaml and docs/protocol-language.md):

    protocol: t2dm-annual-care.yaml             # relative to this file
    agreements: [agreements/central-locality-roles.yaml]
    defaults: {as_of: 2026-11-20, patient: {birth_date: 1960-05-01, locality: central, ...}}
    codes: {t2dm: 44054006, hba1c: 999791000000106, ...}   # short names for the facts below
    cases:
      - name: ...
        as_of: 2026-12-18                        # optional, else the default
        patient: {death_date: 2026-10-01}        # optional, merged over the default patient
        facts:
          - {code: hba1c, date: 2026-09-20, value: 8.0, unit: "%"}   # also kind, status, setting, system, end
        expect:                                  # only what is listed is checked
          deceased / on_register: true|false
          register_why: [text the sentence must contain, ...]
          care_plan: {activity: {status, last_done, next_due, why: [...], evidence: [dates]}}   # {} = no items
          tasks: [{title, kind, priority, provider, team, role, response, agreement, raised_at, due, why: [...]}]
                                                 # [] = no tasks; otherwise each listed task must exist (by title)
          no_tasks: [title, ...]
          flags: {code: level}                   # {} = no flags
          goals: {goal: achieved|not-achieved}   # {} = no goal applies
          measures: {id: {initial_population, denominator, exclusion, numerator, why: [...]}}
          rules_fired / rules_not_fired: [rule id, ...]   # the raw condition keys
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from engine.evaluate.derive import Context
from engine.evaluate.evaluator import Options, evaluate, fired_conditions
from engine.protocols.agreements import load_agreement
from engine.protocols.loader import load_protocol
from engine.records.model import Fact, Patient, PatientRecord
from engine.records.nhs_number import check_digit

TASK_FIELDS = ("kind", "priority", "raised_at", "due")
ASSIGN_FIELDS = ("provider", "team", "role", "response", "agreement")
MEASURE_FIELDS = ("initial_population", "denominator", "exclusion", "numerator")


@dataclass
class Case:
    name: str
    as_of: dt.date
    record: PatientRecord
    expect: dict[str, Any]


@dataclass
class CaseFile:
    path: Path
    protocol: Any
    agreements: list
    cases: list[Case] = field(default_factory=list)


def _date(v) -> dt.date | None:
    if v is None or isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return v
    return dt.date.fromisoformat(str(v))


def _datetime(v) -> dt.datetime:
    if isinstance(v, dt.datetime):
        return v
    return dt.datetime.fromisoformat(str(v))


def _nhs(i: int) -> str:
    k = i * 13
    while True:
        nine = f"{900000000 + k:09d}"
        c = check_digit(nine)
        if c is not None:
            return nine + str(c)
        k += 1


def load_cases(path: str | Path) -> CaseFile:
    path = Path(path)
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    base = path.parent
    proto = load_protocol(base / data["protocol"])
    agreements = [load_agreement(base / a) for a in data.get("agreements", [])]
    defaults = data.get("defaults", {})
    codes = {str(k): str(v) for k, v in (data.get("codes") or {}).items()}
    out = CaseFile(path, proto, agreements)
    names = set()
    for i, c in enumerate(data["cases"]):
        name = c["name"]
        if name in names:
            raise ValueError(f"{path}: duplicate case name {name!r}")
        names.add(name)
        patient = {"nhs_number": _nhs(i), **(defaults.get("patient") or {}), **(c.get("patient") or {})}
        facts = []
        for j, f in enumerate(c.get("facts") or []):
            code = codes.get(str(f["code"]), str(f["code"]))
            facts.append(Fact(id=f"c{i}-f{j}", kind=f.get("kind", "observation"),
                              codes=[{"system": f.get("system", "snomed"), "code": code}],
                              start=str(f["date"]), end=str(f["end"]) if f.get("end") else None,
                              value=f.get("value"), unit=f.get("unit"), status=f.get("status"),
                              care_setting=f.get("setting", "gp"), source_system="case"))
        record = PatientRecord(patient=Patient(**patient), facts=facts)
        out.cases.append(Case(name, _date(c.get("as_of", defaults.get("as_of"))), record, c.get("expect") or {}))
    return out


def check_case(cf: CaseFile, case: Case, engine: str = "durable") -> list[str]:
    """Every difference between what the case expects and what evaluation produced (empty = pass)."""
    ev = evaluate(case.record, [cf.protocol], cf.agreements, as_of=case.as_of, options=Options(engine=engine))
    res = ev.protocols[0]
    exp = case.expect
    problems: list[str] = []

    def need(cond: bool, text: str):
        if not cond:
            problems.append(text)

    def texts(where: str, text: str, wanted):
        for w in wanted or []:
            need(str(w) in text, f"{where}: {w!r} not in {text!r}")

    if "deceased" in exp:
        need(ev.deceased == exp["deceased"], f"deceased: {ev.deceased} != {exp['deceased']}")
    if "on_register" in exp:
        need(res.on_register == exp["on_register"], f"on_register: {res.on_register} != {exp['on_register']} ({res.register_why})")
    texts("register_why", res.register_why, exp.get("register_why"))

    if "care_plan" in exp:
        items = {i.activity: i for i in res.care_plan}
        if exp["care_plan"] == {}:
            need(not items, f"care_plan should be empty, got {sorted(items)}")
        for aid, want in exp["care_plan"].items():
            item = items.get(aid)
            if item is None:
                problems.append(f"care_plan: no item {aid!r} (have {sorted(items)})")
                continue
            if "status" in want:
                need(item.status == want["status"], f"care_plan {aid}: status {item.status} != {want['status']} ({item.provenance.why})")
            for k in ("last_done", "next_due"):
                if k in want:
                    need(getattr(item, k) == _date(want[k]), f"care_plan {aid}: {k} {getattr(item, k)} != {want[k]}")
            texts(f"care_plan {aid} why", item.provenance.why, want.get("why"))
            for d in want.get("evidence") or []:
                need(_date(d) in {e.date for e in item.provenance.evidence}, f"care_plan {aid}: no evidence dated {d}")

    if "tasks" in exp:
        by_title: dict[str, list] = {}
        for t in res.tasks:
            by_title.setdefault(t.title, []).append(t)
        if exp["tasks"] == []:
            need(not res.tasks, f"tasks should be none, got {sorted(by_title)}")
        for want in exp["tasks"]:
            found = by_title.get(want["title"], [])
            if len(found) != 1:
                problems.append(f"task {want['title']!r}: found {len(found)} (have {sorted(by_title)})")
                continue
            t = found[0]
            for k in TASK_FIELDS:
                if k in want:
                    got, wanted = getattr(t, k), want[k]
                    if k in ("raised_at", "due"):
                        wanted = _datetime(wanted)
                    need(got == wanted, f"task {t.title!r}: {k} {got} != {wanted}")
            for k in ASSIGN_FIELDS:
                if k in want:
                    got = getattr(t.assigned, k)
                    need(got == want[k], f"task {t.title!r}: {k} {got!r} != {want[k]!r}")
            texts(f"task {t.title!r} why", t.provenance.why, want.get("why"))
    for title in exp.get("no_tasks") or []:
        need(all(t.title != title for t in res.tasks), f"task {title!r} should not be raised")

    if "flags" in exp:
        flags = {f.code: f.level for f in res.flags}
        if exp["flags"] == {}:
            need(not flags, f"flags should be none, got {flags}")
        for code, level in exp["flags"].items():
            need(flags.get(code) == level, f"flag {code}: {flags.get(code)} != {level}")

    if "goals" in exp:
        goals = {g.goal: g.status for g in res.goals}
        if exp["goals"] == {}:
            need(not goals, f"no goal should apply, got {goals}")
        for gid, status in exp["goals"].items():
            need(goals.get(gid) == status, f"goal {gid}: {goals.get(gid)} != {status}")

    for mid, want in (exp.get("measures") or {}).items():
        m = next((x for x in res.measures if x.measure == mid), None)
        if m is None:
            problems.append(f"measure {mid}: missing")
            continue
        for k in MEASURE_FIELDS:
            if k in want:
                need(getattr(m, k) == want[k], f"measure {mid}: {k} {getattr(m, k)} != {want[k]} ({m.provenance.why})")
        texts(f"measure {mid} why", m.provenance.why, want.get("why"))

    if "rules_fired" in exp or "rules_not_fired" in exp:
        ctx = Context.as_of(case.as_of, cf.protocol.period)
        keys, _ = fired_conditions(case.record, cf.protocol, ctx, engine)
        rules = {k[5:] for k in keys if k.startswith("rule:")}
        known = {r.id for r in cf.protocol.rules}
        for rid in exp.get("rules_fired") or []:
            need(rid in known, f"rule {rid!r} is not in the protocol")
            need(rid in rules, f"rule {rid!r} should fire (fired: {sorted(rules)})")
        for rid in exp.get("rules_not_fired") or []:
            need(rid in known, f"rule {rid!r} is not in the protocol")
            need(rid not in rules, f"rule {rid!r} should not fire")
    return problems
