"""Protocol test cases: `<protocol>.tests.yaml` beside a protocol, each case a small record and what it must produce.

Run by `carepath test protocols/` and by the default test run (tests/protocols/). File layout:

    protocol: t2dm-annual-care.yaml             # the protocol file, relative to this file; or its id
                                                #   (`frailty`: the latest version in this folder, drafts
                                                #   included) or id@version (`frailty@1.0.0`)
    agreements: [agreements/area-roles.yaml]    # optional role agreements (relative paths)
    defaults: {as_of: 2026-11-20, patient: {birth_date: 1960-05-01, locality: central, ...}}
    codes: {t2dm: 44054006, hba1c: 999791000000106, ...}   # short names for the facts below
    cases:
      - name: ...
        as_of: 2026-12-18                        # optional, else the default
        version: 1.0.0                           # optional: this case runs on that version
        patient: {death_date: 2026-10-01}        # optional, merged over the default patient
        facts:
          - {code: hba1c, date: 2026-09-20, value: 8.0, unit: "%"}   # also kind, status, setting, system, end, attrs
          # `code` is a short name from `codes`, a value set of the protocol (its first code, in that
          # value set's system), or a code as it is (system snomed unless `system` says otherwise)
        expect:                                  # only what is listed is checked
          deceased / on_register: true|false
          register_why: [text the sentence must contain, ...]
          care_plan: {activity: {status, last_done, next_due, why: [...], evidence: [dates]}}   # {} = no items
          no_care_plan: [activity, ...]          # these activities are not in the plan (their `when` fails)
          tasks: [{title, kind, priority, provider, team, role, response, agreement, raised_at, due, why: [...]}]
                                                 # [] = no tasks; otherwise each listed task must exist (by title)
          no_tasks: [title, ...]
          flags: {code: level}                   # {} = no flags
          no_flags: [code, ...]
          goals: {goal: achieved|not-achieved}   # {} = no goal applies
          measures: {id: {initial_population, denominator, exclusion, numerator, value, why: [...]}}
          rules_fired / rules_not_fired: [rule id, ...]   # the raw condition keys
          tier: tier id | none                   # stratification protocols
          score: number | missing
          segments: [segment id, ...]            # exactly these
          cannot_determine: [id, ...]            # exactly these activity / goal / rule / measure / segment / tier
                                                 # ids (or `population`, `score`) cannot be determined for
                                                 # the patient: a declared codelist is not supplied ([] = none)

Every key is checked: a key this file does not know (a misspelt `expct:` or `on_registr:`) is an error
with its file:line, never silently ignored.

A failing case says what was expected and what came out, and the why-lines of what it checked.
"""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from engine.engines.derive import Context
from engine.evaluation.evaluator import Options, evaluate, fired_conditions
from engine.language.agreements import load_agreement
from engine.language.loader import load_protocol
from engine.language.yamlsrc import parsed_once
from engine.records.model import Fact, Patient, PatientRecord
from engine.records.nhs_number import check_digit

TASK_FIELDS = ("kind", "priority", "raised_at", "due")
ASSIGN_FIELDS = ("provider", "team", "role", "response", "agreement")
MEASURE_FIELDS = ("initial_population", "denominator", "exclusion", "numerator")
# `measures: {HYP008: denominator}` in a case file; numerator / denominator also say "not excepted" (an excepted
# patient is not "in the denominator, not met")
MEASURE_SHORTHAND = {
    "numerator": dict(initial_population=True, denominator=True, exclusion=False, exception=False, numerator=True),
    "denominator": dict(initial_population=True, denominator=True, exclusion=False, exception=False, numerator=False),
    "excluded": dict(denominator=True, exclusion=True, numerator=False),
    "excepted": dict(denominator=True, exclusion=False, exception=True, numerator=False),
    "out": dict(denominator=False, numerator=False)}
SUFFIXES = (".tests.yaml", ".tests.yml")

# the keys a case file may use, at each level (anything else is an error with file:line)
FILE_KEYS = ("protocol", "agreements", "defaults", "codes", "cases")
DEFAULTS_KEYS = ("as_of", "patient")
CASE_KEYS = ("name", "as_of", "version", "patient", "facts", "expect")
FACT_KEYS = ("code", "date", "value", "unit", "kind", "status", "setting", "system", "end", "attrs")
EXPECT_KEYS = ("deceased", "on_register", "register_why", "care_plan", "no_care_plan", "tasks", "no_tasks", "flags",
               "no_flags", "goals", "measures", "rules_fired", "rules_not_fired", "tier", "score", "segments",
               "cannot_determine")
CARE_PLAN_KEYS = ("status", "last_done", "next_due", "why", "evidence")
TASK_KEYS = ("title", "why") + TASK_FIELDS + ASSIGN_FIELDS
MEASURE_KEYS = MEASURE_FIELDS + ("exception", "why", "value")  # value: a number, or null for missing (`value:` measures)


class CaseFileError(ValueError):
    """A case file that cannot be read (file:line and what is wrong)."""


@dataclass
class Case:
    name: str
    as_of: dt.date
    record: PatientRecord
    expect: dict[str, Any]
    version: str | None = None
    line: int = 0


@dataclass
class CaseFile:
    path: Path
    protocol: Any
    agreements: list
    cases: list[Case] = field(default_factory=list)
    versions: dict = field(default_factory=dict)  # version -> Protocol, for cases pinned to another version

    def protocol_for(self, case: Case):
        if case.version and case.version != self.protocol.version:
            return self.versions[case.version]
        return self.protocol


@dataclass
class Outcome:
    case: Case
    problems: list[str]
    why: list[str]  # the why-lines of what the case checked, for a failure report
    protocol: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


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


def case_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*.tests.y*ml") if f.name.endswith(SUFFIXES))
        elif p.name.endswith(SUFFIXES):
            out.append(p)
        else:  # a protocol file: its test files are the ones that name it
            out += [f for f in sorted(p.parent.glob("*.tests.y*ml")) if _names_file(f, p)]
    return out


def _names_file(case_file: Path, protocol_file: Path) -> bool:
    try:
        first = YAML(typ="safe").load(case_file.read_text(encoding="utf-8")) or {}
    except Exception:
        return False
    ref = str(first.get("protocol", ""))
    if ref.endswith((".yaml", ".yml")):
        return (case_file.parent / ref).resolve() == protocol_file.resolve()
    from engine.language.loader import load_protocol as _lp
    try:
        proto = _lp(protocol_file)
    except Exception:
        return False
    return ref in (proto.id, proto.key)


def _resolve_protocol(base: Path, ref: str, path: Path):
    """A protocol named by file, by id (latest version in the folder) or by id@version."""
    if ref.endswith((".yaml", ".yml")):
        proto = load_protocol(base / ref)
        return proto, _siblings(base, proto.id)
    from engine.language.library import version_key
    pid, _, version = ref.partition("@")
    found = _siblings(base, pid)
    if not found:
        raise CaseFileError(f"{path}: no protocol {pid!r} in {base}")
    if version:
        if version not in found:
            raise CaseFileError(f"{path}: {pid} has no version {version} in {base} (have {', '.join(sorted(found))})")
        return found[version], found
    return found[max(found, key=version_key)], found


def _siblings(base: Path, pid: str) -> dict:
    """Every version of a protocol in a folder (files that fail to load are left to `carepath validate`)."""
    from engine.language.errors import ProtocolError
    from engine.language.library import _kind
    out = {}
    for f in sorted(base.glob("*.y*ml")):
        if f.name.endswith(SUFFIXES) or _kind(f) != "protocol":
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except OSError:
            continue
        if not any(line.strip() in (f"protocol: {pid}", f"protocol: '{pid}'", f'protocol: "{pid}"')
                   for line in text.splitlines()):  # anywhere: a version history in the header can be long
            continue
        try:
            proto = load_protocol(f)
        except ProtocolError:
            continue
        if proto.id == pid:
            out[proto.version] = proto
    return out


def _code(proto, codes: dict[str, str], f: dict) -> tuple[str, str]:
    """(system, code) for a case fact: a short name, a value set of the protocol, or the code itself."""
    raw = str(f["code"])
    if raw in codes:
        return str(f.get("system", "snomed")), codes[raw]
    vs = proto.valuesets.get(raw)
    if vs is not None and "system" not in f:
        if vs.any_code:
            return "https://carepath.example/CodeSystem/case", f"any-{raw}"
        system, code = sorted(vs.codes)[0]
        return system, code
    return str(f.get("system", "snomed")), raw


def _line(node, key=None) -> int:
    """The 1-based line of a mapping's key (or of the node itself) in a round-trip YAML document."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return 0
    if key is not None:
        try:
            return lc.key(key)[0] + 1
        except (KeyError, TypeError, AttributeError):
            pass
    return lc.line + 1


def _known(path: Path, node, allowed, what: str) -> None:
    """Refuse a key `node` (a mapping) does not allow, with its file:line and the nearest known key."""
    if not isinstance(node, dict):
        return
    from engine.language.errors import suggest
    for k in node:
        if str(k) not in allowed:
            hint = suggest(str(k), list(allowed))
            raise CaseFileError(f"{path}:{_line(node, k)}: unknown key {str(k)!r} in {what}"
                                + (f"; did you mean {hint!r}?" if hint else "") + f" (known: {', '.join(allowed)})")


def check_keys(path: Path, data) -> None:
    """Every key of a case file is one `carepath test` knows (module doc): a misspelt key fails here."""
    _known(path, data, FILE_KEYS, "the case file")
    _known(path, data.get("defaults"), DEFAULTS_KEYS, "defaults")
    for c in data.get("cases") or []:
        if not isinstance(c, dict):
            raise CaseFileError(f"{path}:{_line(c)}: a case should be a mapping (name:, facts:, expect:)")
        name = c.get("name", "?")
        _known(path, c, CASE_KEYS, f"case {name!r}")
        for f in c.get("facts") or []:
            if not isinstance(f, dict):
                raise CaseFileError(f"{path}:{_line(c, 'facts')}: case {name!r}: a fact should be a mapping (code:, date:, ...)")
            _known(path, f, FACT_KEYS, f"a fact of case {name!r}")
        exp = c.get("expect")
        if exp is None:
            continue
        if not isinstance(exp, dict):
            raise CaseFileError(f"{path}:{_line(c, 'expect')}: case {name!r}: expect should be a mapping")
        _known(path, exp, EXPECT_KEYS, f"expect of case {name!r}")
        for want in (exp.get("care_plan") or {}).values():
            _known(path, want, CARE_PLAN_KEYS, f"a care_plan expectation of case {name!r}")
        for want in exp.get("tasks") or []:
            _known(path, want, TASK_KEYS, f"a task expectation of case {name!r}")
        for want in (exp.get("measures") or {}).values():
            _known(path, want, MEASURE_KEYS, f"a measure expectation of case {name!r}")


def load_cases(path: str | Path) -> CaseFile:
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = parsed_once("cases", raw, lambda: YAML(typ="rt").load(raw.decode("utf-8")))
    except Exception as e:  # noqa: BLE001 - report any YAML problem with the file name
        raise CaseFileError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or "protocol" not in data or "cases" not in data:
        raise CaseFileError(f"{path}: a case file needs 'protocol:' and 'cases:'")
    check_keys(path, data)
    base = path.parent
    proto, versions = _resolve_protocol(base, str(data["protocol"]), path)
    agreements = [load_agreement(base / a) for a in data.get("agreements") or []]
    defaults = data.get("defaults") or {}
    codes = {str(k): str(v) for k, v in (data.get("codes") or {}).items()}
    out = CaseFile(path, proto, agreements, versions=versions)
    names = set()
    for i, c in enumerate(data["cases"]):
        line = c.lc.line + 1 if hasattr(c, "lc") else 0
        name = c.get("name")
        if not name:
            raise CaseFileError(f"{path}:{line}: a case needs a name")
        if name in names:
            raise CaseFileError(f"{path}:{line}: duplicate case name {name!r}")
        names.add(name)
        version = str(c["version"]) if c.get("version") is not None else None
        if version and version not in versions:
            raise CaseFileError(f"{path}:{line}: case {name!r} names version {version}, not in {base} "
                                f"(have {', '.join(sorted(versions))})")
        target = versions[version] if version else proto
        patient = {"nhs_number": _nhs(i), **dict(defaults.get("patient") or {}), **dict(c.get("patient") or {})}
        facts = []
        try:
            for j, f in enumerate(c.get("facts") or []):
                system, code = _code(target, codes, f)
                vs = target.valuesets.get(str(f["code"]))
                kind = f.get("kind") or (sorted(vs.kinds)[0] if vs is not None and vs.kinds else "observation")
                facts.append(Fact(id=f"c{i}-f{j}", kind=kind, codes=[{"system": system, "code": code}],
                                  start=str(f["date"]), end=str(f["end"]) if f.get("end") else None,
                                  value=f.get("value"), unit=f.get("unit"), status=f.get("status"),
                                  care_setting=f.get("setting", "gp"), source_system="case",
                                  attrs=dict(f.get("attrs") or {})))
            record = PatientRecord(patient=Patient(**patient), facts=facts)
        except (KeyError, ValueError, TypeError) as e:
            raise CaseFileError(f"{path}:{line}: case {name!r}: {e}") from None
        out.cases.append(Case(name, _date(c.get("as_of", defaults.get("as_of"))), record,
                              copy.deepcopy(dict(c.get("expect") or {})),  # the parsed file is shared (parsed_once)
                              version, line))
    return out


def check_case(cf: CaseFile, case: Case, engine: str = "durable") -> list[str]:
    """Every difference between what the case expects and what evaluation produced (empty = pass)."""
    return run_case(cf, case, engine).problems


def run_case(cf: CaseFile, case: Case, engine: str = "durable") -> Outcome:
    proto = cf.protocol_for(case)
    ev = evaluate(case.record, [proto], cf.agreements, as_of=case.as_of, options=Options(engine=engine))
    res = ev.protocols[0]
    exp = case.expect
    problems: list[str] = []
    why: list[str] = [f"register: {res.register_why}"]

    def need(cond: bool, text: str):
        if not cond:
            problems.append(text)

    def texts(where: str, text: str, wanted):
        for w in wanted or []:
            need(str(w) in text, f"{where}: {w!r} not in {text!r}")

    if "deceased" in exp:
        need(ev.deceased == exp["deceased"], f"deceased: expected {exp['deceased']}, got {ev.deceased}")
    if "on_register" in exp:
        need(res.on_register == exp["on_register"],
             f"on_register: expected {exp['on_register']}, got {res.on_register} ({res.register_why})")
    texts("register_why", res.register_why, exp.get("register_why"))

    if "care_plan" in exp:
        items = {i.activity: i for i in res.care_plan}
        if not exp["care_plan"]:
            need(not items, f"care_plan: expected no items, got {sorted(items)}")
        for aid, want in (exp["care_plan"] or {}).items():
            item = items.get(aid)
            if item is None:
                problems.append(f"care_plan: expected an item {aid!r}, got none (have {sorted(items)})")
                continue
            why.append(f"care plan {aid}: {item.status}: {item.provenance.why}")
            want = want if isinstance(want, dict) else {"status": want}
            if "status" in want:
                need(item.status == want["status"],
                     f"care_plan {aid}: expected status {want['status']}, got {item.status} ({item.provenance.why})")
            for k in ("last_done", "next_due"):
                if k in want:
                    need(getattr(item, k) == _date(want[k]), f"care_plan {aid}: expected {k} {want[k]}, got {getattr(item, k)}")
            texts(f"care_plan {aid} why", item.provenance.why, want.get("why"))
            for d in want.get("evidence") or []:
                need(_date(d) in {e.date for e in item.provenance.evidence}, f"care_plan {aid}: no evidence dated {d}")
    for aid in exp.get("no_care_plan") or []:
        item = next((i for i in res.care_plan if i.activity == aid), None)
        need(item is None, f"care_plan: expected no item {aid!r}, got one ({item.status if item else ''}: "
                           f"{item.provenance.why if item else ''})")

    by_title: dict[str, list] = {}
    for t in res.tasks:
        by_title.setdefault(t.title, []).append(t)
    if "tasks" in exp:
        if not exp["tasks"]:
            need(not res.tasks, f"tasks: expected none, got {sorted(by_title)}")
        for want in exp["tasks"] or []:
            want = want if isinstance(want, dict) else {"title": want}
            found = by_title.get(want["title"], [])
            if len(found) != 1:
                problems.append(f"task {want['title']!r}: expected 1, got {len(found)} (have {sorted(by_title)})")
                continue
            t = found[0]
            why.append(f"task {t.title!r}: {t.provenance.why}")
            for k in TASK_FIELDS:
                if k in want:
                    got, wanted = getattr(t, k), want[k]
                    if k in ("raised_at", "due"):
                        wanted = _datetime(wanted)
                    need(got == wanted, f"task {t.title!r}: expected {k} {wanted}, got {got}")
            for k in ASSIGN_FIELDS:
                if k in want:
                    got = getattr(t.assigned, k)
                    need(got == want[k], f"task {t.title!r}: expected {k} {want[k]!r}, got {got!r}")
            texts(f"task {t.title!r} why", t.provenance.why, want.get("why"))
    for title in exp.get("no_tasks") or []:
        hit = by_title.get(title)
        need(not hit, f"task {title!r}: expected none, got one ({hit[0].provenance.why if hit else ''})")

    flags = {f.code: f for f in res.flags}
    if "flags" in exp:
        if not exp["flags"]:
            need(not flags, f"flags: expected none, got { {c: f.level for c, f in flags.items()} }")
        for code, level in (exp["flags"] or {}).items():
            f = flags.get(code)
            need(f is not None and f.level == level, f"flag {code}: expected {level}, got {f.level if f else 'no flag'}")
            if f is not None:
                why.append(f"flag {code} ({f.level}): {f.provenance.why}")
    for code in exp.get("no_flags") or []:
        f = flags.get(code)
        need(f is None, f"flag {code}: expected none, got {f.level if f else ''} ({f.provenance.why if f else ''})")

    if "goals" in exp:
        goals = {g.goal: g for g in res.goals}
        if not exp["goals"]:
            need(not goals, f"goals: expected none to apply, got { {k: g.status for k, g in goals.items()} }")
        for gid, status in (exp["goals"] or {}).items():
            g = goals.get(gid)
            need(g is not None and g.status == status, f"goal {gid}: expected {status}, got {g.status if g else 'not applying'}")
            if g is not None:
                why.append(f"goal {gid}: {g.provenance.why}")

    for mid, want in (exp.get("measures") or {}).items():
        m = next((x for x in res.measures if x.measure == mid), None)
        if m is None:
            problems.append(f"measure {mid}: not in the protocol's results")
            continue
        why.append(f"measure {mid}: {m.provenance.why}")
        if isinstance(want, str):  # shorthand: numerator | denominator | excluded | excepted | out
            want = MEASURE_SHORTHAND[want]
        for k in MEASURE_FIELDS + ("exception",):
            if k in want:
                need(getattr(m, k) == want[k], f"measure {mid}: expected {k} {want[k]}, got {getattr(m, k)} ({m.provenance.why})")
        if "value" in want:
            w = want["value"]
            same = (m.value is None) if w is None else (m.value is not None and isinstance(w, (int, float))
                                                         and abs(m.value - float(w)) < 1e-9)
            need(same, f"measure {mid}: expected value {w}, got {m.value} ({m.provenance.why})")
        texts(f"measure {mid} why", m.provenance.why, want.get("why"))

    if "tier" in exp:
        got = res.tier.tier if res.tier else "none"
        need(str(exp["tier"]) == got, f"tier: expected {exp['tier']}, got {got}"
             + (f" ({res.tier.provenance.why})" if res.tier else ""))
        if res.tier:
            why.append(f"tier {res.tier.tier}: {res.tier.provenance.why}")
    if "score" in exp:
        got = res.score.value if res.score else None
        wanted = None if exp["score"] in (None, "missing") else float(exp["score"])
        need(got == wanted, f"score: expected {exp['score']}, got {got if got is not None else 'missing'}")
        if res.score:
            why.append(f"score: {res.score.provenance.why}")
    if "segments" in exp:
        got = [s.segment for s in res.segments]
        need(sorted(got) == sorted(exp["segments"] or []), f"segments: expected {sorted(exp['segments'] or [])}, got {sorted(got)}")

    if "cannot_determine" in exp:
        got = sorted({c.id for c in res.cannot_determine})
        wanted = sorted({str(x).split(":", 1)[1] if ":" in str(x) else str(x) for x in exp["cannot_determine"] or []})
        need(got == wanted, f"cannot_determine: expected {wanted}, got {got}")
        why += [f"cannot determine {c.source}: {c.why}" for c in res.cannot_determine]

    if "rules_fired" in exp or "rules_not_fired" in exp:
        ctx = Context.as_of(case.as_of, proto.period)
        keys, _ = fired_conditions(case.record, proto, ctx, engine)
        rules = {k[5:] for k in keys if k.startswith("rule:")}
        known = {r.id for r in proto.rules}
        for rid in exp.get("rules_fired") or []:
            need(rid in known, f"rule {rid!r} is not in the protocol")
            need(rid in rules, f"rule {rid!r}: expected to fire, did not (fired: {sorted(rules)})")
        for rid in exp.get("rules_not_fired") or []:
            need(rid in known, f"rule {rid!r} is not in the protocol")
            need(rid not in rules, f"rule {rid!r}: expected not to fire, fired")
        undetermined = {c.id for c in res.cannot_determine if c.source == f"rule:{c.id}"}
        for rid in list(exp.get("rules_fired") or []) + list(exp.get("rules_not_fired") or []):
            need(rid not in undetermined, f"rule {rid!r} cannot be determined (a codelist it needs is not supplied): "
                                          f"list it under cannot_determine")
        for t in res.tasks:
            if t.kind != "activity":
                why.append(f"task {t.title!r}: {t.provenance.why}")
    return Outcome(case, problems, list(dict.fromkeys(why)), proto.key)


def run_file(path: Path, engine: str = "durable") -> tuple[CaseFile, list[Outcome]]:
    cf = load_cases(path)
    return cf, [run_case(cf, c, engine) for c in cf.cases]
