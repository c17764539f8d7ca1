"""Load a pathway protocol file: check it, compile every expression, or reject it whole.

A file with any error raises ProtocolError listing every problem with file:line:column; nothing
from it is registered, so an invalid file is never partly loaded.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from engine.calendar import parse_response
from engine.ir import nodes as ir
from engine.language.errors import Location, Problems, ProtocolError, suggest
from engine.language.expr import AGE_AT, CONTEXT_DATES, PATIENT_ATTRS, ExprError, Scope, ValueSetDecl, compile_expr

BUILTIN_NAMES = PATIENT_ATTRS | CONTEXT_DATES | set(AGE_AT)
from engine.language.model import (FLAG_LEVELS, PRIORITIES, STATUSES, Activity, DeclaredCluster, EcqmRef,
                                    EscalationSpec, FlagSpec, Goal, Measure, Protocol, Rule, Segment, TaskSpec, Tier)
from engine.language.units import KNOWN_ANALYTES, is_known_unit, normalise_unit
from engine.language.valuesets import (ValueSet, ValueSetFileError, any_code_of_kind, inline, load_csv,
                                       load_fhir_valueset)
from engine.language.yamlsrc import Node, Reader, read_yaml, subtract
from engine.language import shared

TOP = {"protocol": True, "version": True, "title": True, "status": True, "effective": True, "owner": True,
       "evidence": True, "description": False, "period": False, "valuesets": True, "population": True,
       "define": False, "activities": False, "goals": False, "rules": False, "measures": False,
       "score": False, "segments": False, "tiers": False, "demo_only": False, "uses": False}
ACTIVITY = {"id": True, "title": True, "when": False, "every": True, "done_by": True, "done_when": False, "excepted_when": False,
            "due_soon": False, "role": True, "priority": False, "because": False, "evidence": False, "patient_text": False}
RULE = {"id": True, "title": False, "when": True, "then": True, "because": True, "evidence": False}
SEGMENT = {"id": True, "title": True, "when": True, "because": False}
TIER = {"id": True, "level": True, "title": True, "when": True, "then": False, "because": True, "evidence": False}
THEN = {"task": False, "flag": False, "escalation": False}
TASK = {"title": True, "role": True, "priority": False, "within": False}
FLAG = {"code": True, "level": True, "text": False}
ESCALATION = {"to": True, "title": True, "priority": False}
GOAL = {"id": True, "title": True, "when": False, "target": True, "because": False, "patient_text": False}
MEASURE = {"id": True, "title": True, "initial_population": False, "denominator": False, "exclusions": False,
           "exceptions": False, "numerator": False, "achievers_kept": False, "evidence": False, "ecqm": False,
           "episodes": False, "episodes_at_most": False, "counts_deceased": False, "value": False,
           "improvement": False}
IMPROVEMENT = ("increase", "decrease")  # FHIR measure-improvement-notation: which way is better
DEFAULT_EPISODES_AT_MOST = 10
ECQM = {"url": True, "version": False}
VALUESET = {"codelist": False, "fhir": False, "codes": False, "system": False, "column": False, "where": False,
            "unit": False, "analyte": False, "kind": False, "incomplete": False,
            "cluster": False, "refset": False, "publisher": False}
POPULATION = {"all": False, "any": False, "since": False}
CONDITION_FORMS = ("all", "any", "not")


def load_protocol(path: str | Path, valueset_dirs: list[Path] | None = None) -> Protocol:
    path = Path(path)
    problems = Problems()
    data, raw = read_yaml(path)
    r = Reader(path, problems)
    top = r.mapping(data, Location(str(path), 1, 1), "the protocol", TOP)
    if top is None:
        problems.raise_if_errors()
    return _Compiler(path, raw, top, r, problems, valueset_dirs or []).build()


class _Compiler:
    def __init__(self, path: Path, raw: bytes, top, reader: Reader, problems: Problems, vs_dirs: list[Path]):
        self.path, self.raw, self.top, self.r, self.p = path, raw, top, reader, problems
        self.vs_dirs = [path.parent, path.parent / "valuesets", *vs_dirs]
        self.valuesets: dict[str, ValueSet] = {}
        self.decls: dict[str, ValueSetDecl] = {}
        self.definitions: dict[str, ir.Node] = {}
        self.conditions: dict[str, ir.Node] = {}
        self.cond_locs: dict[str, Location] = {}
        self._raw_defs: dict[str, Node] = {}
        self._compiling: list[str] = []
        self._failed: set[str] = set()  # definitions with errors (already reported)
        self.clusters: dict[str, DeclaredCluster] = {}  # declared clusters (supplied or missing)
        self.labels: dict[str, str] = {}  # definition -> `label:`
        self.vs_locs: dict[str, Location] = {}
        self.values: dict[str, ir.Node] = {}  # measure:<id>:value -> a number per patient (`value:`)

    # ---- entry ---------------------------------------------------------------------------------
    def build(self) -> Protocol:
        r, top = self.r, self.top
        pid = r.text(top, "protocol", "the protocol id")
        version = r.version(top)
        status = r.choice(top, "status", "status", STATUSES, "draft")
        effective = r.date(top, "effective", "effective date")
        period = r.duration(top, "period", "measurement period", ir.Duration(12, "months"))
        evidence = r.text_list(top, "evidence", "evidence")
        if "evidence" in top and not evidence:
            self.p.error(r.loc_of(top, "evidence"), "a protocol needs at least one evidence reference")
        self.load_valuesets()
        uses = shared.expand_uses(self)  # `uses: [efi@1.0.0]`: shared definitions, prefixed
        self.load_definitions()
        since = self.population()
        activities = [a for a in (self.activity(item, loc) for item, loc in r.seq(top, "activities", "activities")) if a]
        goals = [g for g in (self.goal(item, loc) for item, loc in r.seq(top, "goals", "goals")) if g]
        rules = [x for x in (self.rule(item, loc) for item, loc in r.seq(top, "rules", "rules")) if x]
        measures = [x for x in (self.measure(item, loc) for item, loc in r.seq(top, "measures", "measures")) if x]
        segments = [x for x in (self.segment(item, loc) for item, loc in r.seq(top, "segments", "segments")) if x]
        tiers = [x for x in (self.tier(item, loc) for item, loc in r.seq(top, "tiers", "tiers")) if x]
        score = self.score_name()
        levels: dict[int, Tier] = {}
        for t in tiers:
            if t.level in levels:
                self.p.error(t.location, f"tier {t.id!r} has the same level ({t.level}) as tier {levels[t.level].id!r}",
                             expected="a different level for each tier")
            levels.setdefault(t.level, t)
        for kind, items in (("activity", activities), ("goal", goals), ("rule", rules), ("measure", measures),
                            ("segment", segments), ("tier", tiers)):
            seen: dict[str, Location] = {}
            for it in items:
                if it.id in seen:
                    self.p.error(it.location, f"duplicate {kind} id {it.id!r} (first at line {seen[it.id].line})")
                seen.setdefault(it.id, it.location)
        demo_only = top.get("demo_only", False)
        if not isinstance(demo_only, bool):
            self.p.error(r.loc_of(top, "demo_only"), "demo_only should be true or false")
        self.p.raise_if_errors()
        from engine.language.determinacy import split
        missing = {c.valueset: c.cluster for c in self.clusters.values() if c.missing}
        both, undetermined_both, undetermined = split(
            {**self.conditions, **self.values}, self.definitions, missing, since, score, [t.id for t in tiers])
        conditions = {k: v for k, v in both.items() if k not in self.values}
        undetermined_conditions = {k: v for k, v in undetermined_both.items() if k not in self.values}
        return Protocol(
            id=pid, version=version, title=r.text(top, "title", "title"), status=status, effective=effective,
            owner=r.text(top, "owner", "owner"), evidence=evidence, source=str(self.path),
            content_hash=hashlib.sha256(self.raw).hexdigest(), period=period, valuesets=self.valuesets,
            definitions=self.definitions, conditions=conditions, condition_locations=self.cond_locs,
            since=since, activities=activities, goals=goals, rules=rules, measures=measures,
            warnings=self.p.warnings, description=r.text(top, "description", "description"),
            score=score, segments=segments, tiers=tiers, demo_only=demo_only is True, clusters=self.clusters,
            undetermined_conditions=undetermined_conditions, undetermined=undetermined, labels=self.labels,
            variant=self._variant() + "".join(u.content_hash[:6] for u in uses), uses=uses,
            valueset_locations=self.vs_locs,
            values={k: v for k, v in both.items() if k in self.values},
            undetermined_values={k: v for k, v in undetermined_both.items() if k in self.values},
        )

    def _variant(self) -> str:
        """Which declared clusters were supplied and with what codes ("" when the protocol declares none)."""
        if not self.clusters:
            return ""
        h = hashlib.sha256()
        for name in sorted(self.clusters):
            c = self.clusters[name]
            vs = self.valuesets.get(name)
            h.update(repr((name, c.cluster, sorted(vs.codes) if vs is not None else None)).encode())
        return h.hexdigest()[:8]

    # ---- value sets ------------------------------------------------------------------------------
    def load_valuesets(self) -> None:
        node = self.r.get(self.top, "valuesets")
        if node is None:
            return
        from ruamel.yaml.comments import CommentedMap
        if not isinstance(node.value, CommentedMap):
            self.p.error(node.loc, "valuesets should be a set of 'name: {codelist: file.csv}' lines")
            return
        m = node.value
        for name in m:
            loc = self.r.loc_of(m, name)
            self.vs_locs[str(name)] = loc
            spec = m[name]
            if name in BUILTIN_NAMES:
                self.p.error(self.r.key_loc(m, name), f"value set name {name!r} is a built-in name; choose another")
            if isinstance(spec, str):  # shorthand: name: file.csv
                vm = {"codelist": spec}
            else:
                vm = self.r.mapping(spec, loc, f"value set {name!r}", VALUESET)
                if vm is None:
                    continue
            unit = vm.get("unit")
            if unit is not None:
                unit = normalise_unit(str(unit))
                if not is_known_unit(unit):
                    self.p.error(loc, f"value set {name!r} has an unknown unit {vm.get('unit')!r}", expected="a UCUM unit")
            analyte = vm.get("analyte")
            if analyte is not None and analyte not in KNOWN_ANALYTES:
                self.p.error(loc, f"unknown analyte {analyte!r}", expected=", ".join(sorted(KNOWN_ANALYTES)),
                             suggestion=suggest(str(analyte), KNOWN_ANALYTES))
            kinds = self._kinds(name, vm, loc)
            if kinds is None:
                continue
            if "cluster" in vm and not any(k in vm for k in ("codelist", "fhir", "codes")):
                vs = self._declared_cluster(name, vm, loc)
                if vs is None:  # missing: expressions may use it; what depends on it cannot be determined
                    self.decls[name] = ValueSetDecl(name, unit, analyte, (), False, _words(vm, None))
                    continue
            else:
                vs = self._load_one(name, vm, loc, kinds)
            if vs is None:
                continue
            vs = vs.with_options(unit, analyte, kinds)
            if vs.expansion_total is not None:
                # a truncated expansion: codes beyond it are never matched. The protocol must say how it
                # handles that (`incomplete: <how>`), else `validate` warns
                if not str(vm.get("incomplete") or "").strip():
                    self.p.warning(loc, f"value set {name!r} is a truncated expansion ({len(vs.codes)} of "
                                        f"{vs.expansion_total} codes): facts coded with a missing code are not "
                                        f"matched", expected="a complete expansion, or incomplete: <how the "
                                        "protocol handles it>")
            elif "incomplete" in vm:
                self.p.warning(loc, f"value set {name!r} is marked incomplete but its expansion is complete")
            self.valuesets[name] = vs
            self.decls[name] = ValueSetDecl(name, unit, analyte, vs.columns, vs.any_code, _words(vm, vs))

    def _declared_cluster(self, name: str, vm, loc: Location) -> ValueSet | None:
        """`{cluster: FOOTEXAM_COD, refset: "...", publisher: PCD}` with no codes: the site's file
        `<site dir>/footexam_cod.csv` if there is one (loaded like any codelist, `source` per row), else
        None: the value set is missing (recorded in self.clusters)."""
        from engine.language.site_codelists import site_dir, site_file
        cluster = str(vm.get("cluster") or "").strip()
        if not re.fullmatch(r"[A-Za-z0-9_]+", cluster):
            self.p.error(self.r.loc_of(vm, "cluster"), f"value set {name!r}: cluster {cluster!r} is not a cluster name",
                         expected="the publisher's cluster id, e.g. FOOTEXAM_COD")
            return None
        refset = vm.get("refset")
        if refset is not None and not isinstance(refset, str):
            self.p.error(self.r.loc_of(vm, "refset"), f"value set {name!r}: refset {refset!r} was read as a number",
                         expected='the refset id in quotes, e.g. refset: "999001011000230105"')
            refset = str(refset)
        if refset is not None and not re.fullmatch(r"\d{6,18}", refset):
            self.p.error(self.r.loc_of(vm, "refset"), f"value set {name!r}: refset {refset!r} is not a SNOMED CT id")
        publisher = vm.get("publisher")
        directory = site_dir(self.path)
        expected = site_file(directory, cluster)
        supplied = None
        vs = None
        if expected.is_file():
            where = None
            if "where" in vm:
                where = {str(k): [x.strip() for x in (v if isinstance(v, list) else str(v).split(","))]
                         for k, v in vm["where"].items()}
            try:
                vs = load_csv(expected, name, str(vm.get("system", "snomed")), str(vm.get("column", "code")), where,
                              require_source=True)
                supplied = str(expected)
            except ValueSetFileError as e:
                self.p.error(loc, f"value set {name!r} (cluster {cluster}, supplied by the site): {e}",
                             expected="a file written by `carepath codelists import`")
        self.clusters[name] = DeclaredCluster(name, cluster, refset, str(publisher) if publisher is not None else None,
                                              loc, str(expected), supplied)
        return vs

    def _kinds(self, name: str, vm, loc: Location) -> frozenset[str] | None:
        """`kind: medication` or `kind: [condition, observation]`: only facts of these kinds."""
        from engine.records.model import FactKind
        if "kind" not in vm:
            return frozenset()
        raw = vm["kind"]
        items = [str(x) for x in (raw if isinstance(raw, list) else [raw])]
        allowed = [k.value for k in FactKind]
        bad = [k for k in items if k not in allowed]
        if bad or not items:
            self.p.error(self.r.loc_of(vm, "kind"), f"value set {name!r}: unknown fact kind {bad[0] if bad else ''!r}",
                         expected=" / ".join(allowed), suggestion=suggest(bad[0], allowed) if bad else None)
            return None
        return frozenset(items)

    def _find(self, rel: str) -> Path | None:
        for d in self.vs_dirs:
            candidate = (d / rel)
            if candidate.is_file():
                return candidate
        return None

    def _load_one(self, name: str, vm, loc: Location, kinds: frozenset[str] = frozenset()) -> ValueSet | None:
        sources = [k for k in ("codelist", "fhir", "codes") if k in vm]
        if not sources and kinds:  # every fact of these kinds, whatever its code
            return any_code_of_kind(name, kinds, f"{self.path}:{loc.line}")
        if len(sources) != 1:
            self.p.error(loc, f"value set {name!r} needs exactly one of codelist / fhir / codes (or only kind:)")
            return None
        try:
            if "codes" in vm:
                items = []
                for c in vm["codes"]:
                    if isinstance(c, str) and "|" in c:
                        system, code = c.split("|", 1)
                    else:
                        system, code = str(vm.get("system", "snomed")), str(c)
                    items.append((system, code))
                return inline(name, items, f"{self.path}:{loc.line}")
            rel = str(vm["codelist"] if "codelist" in vm else vm["fhir"])
            found = self._find(rel)
            if found is None:
                self.p.error(loc, f"value set {name!r}: file {rel!r} not found",
                             expected=f"a file under {', '.join(str(d) for d in self.vs_dirs[:2])}")
                return None
            if "fhir" in vm:
                return load_fhir_valueset(found, name)
            where = None
            if "where" in vm:
                where = {str(k): [s.strip() for s in (v if isinstance(v, list) else str(v).split(","))]
                         for k, v in vm["where"].items()}
            return load_csv(found, name, str(vm.get("system", "snomed")), str(vm.get("column", "code")), where)
        except ValueSetFileError as e:
            self.p.error(loc, f"value set {name!r}: {e}")
            return None

    # ---- expressions -----------------------------------------------------------------------------
    def scope(self) -> Scope:
        return _LazyScope(self)

    def expr(self, node: Node, want: str | None, what: str) -> ir.Node | None:
        if node is None:
            return None
        if not isinstance(node.value, (str, int, float, bool)):
            self.p.error(node.loc, f"{what} should be an expression on one line")
            return None
        try:
            return compile_expr(str(node.value).strip(), self.scope(), want)
        except ExprError as e:
            if e.message.endswith("has errors of its own (see above)"):
                return None  # the definition's own error is reported once, where it is; not again at each use
            loc, msg, expected, suggestion = e.located(node.loc, node.quoted)
            self.p.error(loc, f"in {what}: {msg}", expected, suggestion)
            return None
        except _CycleError as e:
            self.p.error(node.loc, f"in {what}: definitions refer to each other in a loop ({' -> '.join(e.args[0])})")
            return None

    def condition(self, value, loc: Location, what: str) -> ir.Node | None:
        """A yes/no condition: an expression, or {all: [...]}, {any: [...]}, {not: ...} nested."""
        from ruamel.yaml.comments import CommentedMap
        if isinstance(value, CommentedMap):
            if len(value) != 1 or next(iter(value)) not in CONDITION_FORMS:
                self.p.error(loc, f"{what} should be an expression or one of all: / any: / not:",
                             expected="all, any or not", suggestion=suggest(str(next(iter(value), "")), CONDITION_FORMS))
                return None
            form = next(iter(value))
            return self._form(form, value[form], self.r.loc_of(value, form), what)
        return self.expr(Node(value, loc), ir.BOOL, what)

    def _form(self, form: str, inner, iloc: Location, what: str) -> ir.Node | None:
        from ruamel.yaml.comments import CommentedSeq
        if form == "not":
            c = self.condition(inner, iloc, what)
            return ir.Not(c) if c is not None else None
        if not isinstance(inner, CommentedSeq) or not inner:
            self.p.error(iloc, f"{form}: should be a non-empty list of conditions")
            return None
        parts = [self.condition(x, self.r.loc_of(inner, i), what) for i, x in enumerate(inner)]
        if any(p is None for p in parts):
            return None
        return (ir.And if form == "all" else ir.Or)(tuple(parts))

    def add_condition(self, key: str, node: ir.Node | None, loc: Location) -> None:
        if node is not None and "#" not in key and ir.uses_episode(node):
            self.p.error(loc, "'episode' is only meaningful in a measure counted per episode",
                         expected="a measure with episodes: <the list of events counted>")
            return
        if node is not None:
            self.conditions[key] = node
            self.cond_locs[key] = loc
            # the rule engine's limit on `or` alternatives: report it here, with the line, not at evaluation
            from engine.ir.lowering import ConditionTooComplex, lower_all
            try:
                lower_all({key: node})
            except ConditionTooComplex as e:
                self.p.error(loc, str(e), expected="fewer 'or' alternatives (each 'not (value compared)' counts two)")

    def load_definitions(self) -> None:
        node = self.r.get(self.top, "define")
        if node is None:
            return
        from ruamel.yaml.comments import CommentedMap
        if not isinstance(node.value, CommentedMap):
            self.p.error(node.loc, "define should be a set of 'name: expression' lines")
            return
        for name in node.value:
            if not str(name).isidentifier() or str(name) != str(name).lower():
                self.p.error(self.r.key_loc(node.value, name), f"definition name {name!r} should be lower_case_with_underscores")
            if name in self.decls:
                self.p.error(self.r.key_loc(node.value, name), f"definition {name!r} has the same name as a value set")
            if name in BUILTIN_NAMES:
                self.p.error(self.r.key_loc(node.value, name), f"definition name {name!r} is a built-in name; choose another")
            self._raw_defs[str(name)] = Node(node.value[name], self.r.loc_of(node.value, name))
        for name in self._raw_defs:
            self.definition(name)

    def definition(self, name: str) -> ir.Node | None:
        if name in self.definitions:
            return self.definitions[name]
        if name in self._failed:  # reported once, when first compiled: never again for each use
            return None
        if name in self._compiling:
            raise _CycleError(self._compiling[self._compiling.index(name):] + [name])
        self._compiling.append(name)
        try:
            raw = self._raw_defs[name]
            if hasattr(raw.value, "items") and "label" in raw.value:
                compiled = self._labelled(name, raw)
            elif hasattr(raw.value, "items") and len(raw.value) == 1 and "sum" in raw.value:
                compiled = self.sum_form(raw.value["sum"], self.r.loc_of(raw.value, "sum"), f"definition {name!r}")
            elif hasattr(raw.value, "items") or isinstance(raw.value, list):
                compiled = self.condition(raw.value, raw.loc, f"definition {name!r}")
            else:
                compiled = self.expr(raw, None, f"definition {name!r}")
        finally:
            self._compiling.pop()
        if compiled is not None:
            self.definitions[name] = compiled
        else:
            self._failed.add(name)
        return compiled

    def _labelled(self, name: str, raw: Node) -> ir.Node | None:
        """`name: {label: <words>, is: <expression or condition>}` (or label with sum: / all: / any: / not:):
        a definition with the words why-lines use for it ("no foot examination in the last 15 months")."""
        m, what = raw.value, f"definition {name!r}"
        label = m.get("label")
        if not isinstance(label, str) or not label.strip():
            self.p.error(self.r.loc_of(m, "label"), f"{what}: label should be words, e.g. foot examination in the last year")
            return None
        self.labels[name] = " ".join(label.split())
        rest = [k for k in m if k != "label"]
        forms = ("is", "sum", *CONDITION_FORMS)
        if len(rest) != 1 or rest[0] not in forms:
            bad = next((k for k in rest if k not in forms), None)
            self.p.error(raw.loc, f"{what}: with a label, give the definition under exactly one of is: / sum: / all: / "
                                  f"any: / not:", expected="is: <expression>", suggestion=suggest(str(bad), forms) if bad else None)
            return None
        key = rest[0]
        loc = self.r.loc_of(m, key)
        if key == "sum":
            return self.sum_form(m["sum"], loc, what)
        if key != "is":
            return self._form(key, m[key], loc, what)
        value = m["is"]
        if hasattr(value, "items") or isinstance(value, list):
            return self.condition(value, loc, what)
        return self.expr(Node(value, loc), None, what)

    def sum_form(self, items, loc: Location, what: str) -> ir.Node | None:
        """`sum:` a list of score lines: `{points: 2, when: <condition>}`, a condition (1 point when it
        holds) or a number (count(...), another score ...). The total is a number definition."""
        from ruamel.yaml.comments import CommentedMap, CommentedSeq
        if not isinstance(items, CommentedSeq) or not items:
            self.p.error(loc, f"{what}: sum: should be a non-empty list of score lines",
                         expected="'- {points: 2, when: <condition>}', '- <condition>' or '- <number>'")
            return None
        parts, ok = [], True
        for i, item in enumerate(items):
            iloc = self.r.loc_of(items, i)
            if isinstance(item, CommentedMap):
                m = self.r.mapping(item, iloc, f"a score line of {what}", {"points": True, "when": True, "because": False})
                if m is None or "points" not in m or "when" not in m:
                    ok = False
                    continue
                pts = m["points"]
                if isinstance(pts, bool) or not isinstance(pts, (int, float)):
                    self.p.error(self.r.loc_of(m, "points"), f"{what}: points should be a number, not {pts!r}")
                    ok = False
                    continue
                cond = self.condition(m["when"], self.r.loc_of(m, "when"), what)
                if cond is None:
                    ok = False
                    continue
                parts.append(ir.Points(float(pts), cond))
                continue
            node = self.expr(Node(item, iloc), None, what)
            if node is None:
                ok = False
            elif node.type == ir.BOOL:
                parts.append(ir.Points(1.0, node))
            elif node.type == ir.NUMBER:
                parts.append(node)
            else:
                self.p.error(iloc, f"{what}: a score line is a number or a condition, not "
                                   f"{'an event' if node.type in (ir.SET, ir.EVENT) else node.type}",
                             expected="'{points: 2, when: <condition>}', a condition, or a number such as count(...)")
                ok = False
        if not ok:
            return None
        units = {normalise_unit(getattr(p, "unit", None)) for p in parts} - {None, "1"}
        if len(units) > 1:
            self.p.error(loc, f"{what}: the score lines are in different units ({', '.join(sorted(units))})")
            return None
        return ir.Sum(tuple(parts), units.pop() if units else None)

    # ---- sections ---------------------------------------------------------------------------------
    def population(self) -> ir.Node | None:
        node = self.r.get(self.top, "population")
        if node is None:
            return None
        from ruamel.yaml.comments import CommentedMap
        value, since = node.value, None
        if not isinstance(value, CommentedMap):
            self.add_condition("population", self.condition(value, node.loc, "population"), node.loc)
            return None
        self.r.mapping(value, node.loc, "population", POPULATION)
        if "since" in value:
            since = self.expr(Node(value["since"], self.r.loc_of(value, "since")), ir.EVENT, "population 'since'")
        parts = [self._form(f, value[f], self.r.loc_of(value, f), "population") for f in ("all", "any") if f in value]
        if not parts:
            self.p.error(node.loc, "population needs all: or any: (a list of conditions)")
        elif all(p is not None for p in parts):
            self.add_condition("population", parts[0] if len(parts) == 1 else ir.And(tuple(parts)), node.loc)
        return since

    def ids(self, m, loc, what) -> str | None:
        ident = self.r.text(m, "id", f"{what} id")
        if ident is not None and not all(ch.isalnum() or ch in "-_" for ch in ident):
            self.p.error(self.r.loc_of(m, "id"), f"{what} id {ident!r} may only use letters, digits, '-' and '_'")
        return ident

    def activity(self, item, loc) -> Activity | None:
        r = self.r
        m = r.mapping(item, loc, "an activity", ACTIVITY)
        if m is None:
            return None
        aid = self.ids(m, loc, "activity")
        every = r.duration(m, "every", "interval")
        due_soon = r.duration(m, "due_soon", "due-soon window", ir.Duration(1, "months"))
        done_by = self.expr(r.get(m, "done_by"), ir.EVENT, f"activity {aid!r} done_by")
        done_when = self.condition(m["done_when"], r.loc_of(m, "done_when"), f"activity {aid!r} done_when") if "done_when" in m else None
        excepted = self.condition(m["excepted_when"], r.loc_of(m, "excepted_when"), f"activity {aid!r} excepted_when") if "excepted_when" in m else None
        applies = self.condition(m["when"], r.loc_of(m, "when"), f"activity {aid!r} when") if "when" in m else None
        priority = r.choice(m, "priority", "priority", PRIORITIES, "routine")
        if not (aid and every and done_by is not None):
            return None
        recent_window = subtract(every, due_soon) if due_soon else every
        if recent_window is None:
            self.p.error(r.loc_of(m, "due_soon"), f"due_soon {due_soon} cannot be taken from interval {every}",
                         expected="both in months/years or both in days/weeks")
            return None

        def done_within(d: ir.Duration) -> ir.Node:
            base = ir.Exists(ir.Window(done_by, "ago", d))
            return ir.And((base, done_when)) if done_when is not None else base

        key = f"activity:{aid}"
        self.add_condition(f"{key}:recent", done_within(recent_window), loc)
        self.add_condition(f"{key}:in_interval", done_within(every), loc)
        if excepted is not None:
            self.add_condition(f"{key}:excepted", excepted, r.loc_of(m, "excepted_when"))
        if applies is not None:  # only for part of the register (e.g. moderate or severe frailty)
            self.add_condition(f"{key}:applies", applies, r.loc_of(m, "when"))
        return Activity(
            id=aid, title=r.text(m, "title", "title"), every=every, done_by=done_by, role=r.text(m, "role", "role"),
            location=loc, due_soon=due_soon, priority=priority, because=r.text(m, "because", "because"),
            evidence=r.text_list(m, "evidence", "evidence"), patient_text=r.text(m, "patient_text", "patient text"),
            has_done_when=done_when is not None, has_excepted_when=excepted is not None, has_when=applies is not None,
        )

    def goal(self, item, loc) -> Goal | None:
        r = self.r
        m = r.mapping(item, loc, "a goal", GOAL)
        if m is None:
            return None
        gid = self.ids(m, loc, "goal")
        target = self.condition(m["target"], r.loc_of(m, "target"), f"goal {gid!r} target") if "target" in m else None
        when = self.condition(m["when"], r.loc_of(m, "when"), f"goal {gid!r} when") if "when" in m else ir.Const(True, ir.BOOL)
        if not gid or target is None or when is None:
            return None
        self.add_condition(f"goal:{gid}:applies", when, loc)
        self.add_condition(f"goal:{gid}:met", target, r.loc_of(m, "target"))
        return Goal(gid, r.text(m, "title", "title"), loc, r.text(m, "because", "because"),
                    r.text(m, "patient_text", "patient text"))

    def rule(self, item, loc) -> Rule | None:
        r = self.r
        m = r.mapping(item, loc, "a rule", RULE)
        if m is None:
            return None
        rid = self.ids(m, loc, "rule")
        when = self.condition(m["when"], r.loc_of(m, "when"), f"rule {rid!r} when") if "when" in m else None
        task, flag, esc = self.actions(r.get(m, "then"), f"rule {rid!r}")
        if not rid or when is None:
            return None
        self.add_condition(f"rule:{rid}", when, r.loc_of(m, "when"))
        return Rule(rid, r.text(m, "title", "title") or (task.title if task else rid), loc, task, flag, esc,
                    r.text(m, "because", "because"), r.text_list(m, "evidence", "evidence"))

    def score_name(self) -> str | None:
        """`score: <definition>`: a number definition reported with every evaluation (e.g. a risk score)."""
        node = self.r.get(self.top, "score")
        if node is None:
            return None
        name = str(node.value)
        if name not in self._raw_defs:
            self.p.error(node.loc, f"score {name!r} is not a definition", expected="the name of a number under define",
                         suggestion=suggest(name, self._raw_defs))
            return None
        d = self.definitions.get(name)
        if d is not None and d.type != ir.NUMBER:
            self.p.error(node.loc, f"score {name!r} is {'a condition' if d.type == ir.BOOL else d.type}, not a number",
                         expected="a number definition, e.g. one with sum:")
            return None
        return name

    def segment(self, item, loc) -> Segment | None:
        r = self.r
        m = r.mapping(item, loc, "a segment", SEGMENT)
        if m is None:
            return None
        sid = self.ids(m, loc, "segment")
        when = self.condition(m["when"], r.loc_of(m, "when"), f"segment {sid!r} when") if "when" in m else None
        if not sid or when is None:
            return None
        self.add_condition(f"segment:{sid}", when, r.loc_of(m, "when"))
        return Segment(sid, r.text(m, "title", "title") or sid, loc, r.text(m, "because", "because"))

    def tier(self, item, loc) -> Tier | None:
        r = self.r
        m = r.mapping(item, loc, "a tier", TIER)
        if m is None:
            return None
        tid = self.ids(m, loc, "tier")
        level = m.get("level")
        if "level" in m and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
            self.p.error(r.loc_of(m, "level"), f"tier level {level!r} should be a whole number (higher = more need)",
                         expected="e.g. 3 for case management, 1 for supported self-care")
            level = None
        when = self.condition(m["when"], r.loc_of(m, "when"), f"tier {tid!r} when") if "when" in m else None
        task, flag, esc = self.actions(r.get(m, "then"), f"tier {tid!r}")
        if not tid or when is None or level is None:
            return None
        self.add_condition(f"tier:{tid}", when, r.loc_of(m, "when"))
        return Tier(tid, level, r.text(m, "title", "title") or tid, loc, task, flag, esc, r.text(m, "because", "because"),
                    r.text_list(m, "evidence", "evidence"))

    def actions(self, then_node, what: str) -> tuple[TaskSpec | None, FlagSpec | None, EscalationSpec | None]:
        """`then: {task: ..., flag: ..., escalation: ...}` of a rule or a tier."""
        r = self.r
        task = flag = esc = None
        if then_node is not None:
            t = r.mapping(then_node.value, then_node.loc, f"{what} then", THEN)
            if t is not None:
                if not t:
                    self.p.error(then_node.loc, f"{what} does nothing", expected="task, flag or escalation")
                if "task" in t:
                    tm = r.mapping(t["task"], r.loc_of(t, "task"), "a task", TASK)
                    if tm is not None:
                        task = TaskSpec(r.text(tm, "title", "task title"), r.text(tm, "role", "task role"),
                                        r.choice(tm, "priority", "priority", PRIORITIES, "routine"),
                                        self.deadline(tm))
                if "flag" in t:
                    fm = r.mapping(t["flag"], r.loc_of(t, "flag"), "a flag", FLAG)
                    if fm is not None:
                        flag = FlagSpec(r.text(fm, "code", "flag code"), r.choice(fm, "level", "flag level", FLAG_LEVELS, "amber"),
                                        r.text(fm, "text", "flag text"))
                if "escalation" in t:
                    em = r.mapping(t["escalation"], r.loc_of(t, "escalation"), "an escalation", ESCALATION)
                    if em is not None:
                        esc = EscalationSpec(r.text(em, "to", "escalation target"), r.text(em, "title", "escalation title"),
                                             r.choice(em, "priority", "priority", PRIORITIES, "urgent"))
        return task, flag, esc

    def deadline(self, tm):
        """A task's clinical deadline: hours, working days (England), days, weeks or months."""
        n = self.r.get(tm, "within")
        if n is None:
            return None
        try:
            return parse_response(str(n.value))
        except ValueError:
            self.p.error(n.loc, f"task deadline {n.value!r} is not a time",
                         expected="e.g. '4 hours', '1 working day', '2 weeks', '3 months'")
            return None

    def measure(self, item, loc) -> Measure | None:
        r = self.r
        m = r.mapping(item, loc, "a measure", MEASURE)
        if m is None:
            return None
        mid = self.ids(m, loc, "measure")
        key = f"measure:{mid}"
        episodes, at_most = None, 0
        if "episodes" in m:  # counted per episode: each event of this list is one episode
            episodes = self.expr(Node(m["episodes"], r.loc_of(m, "episodes")), None, f"measure {mid!r} episodes")
            if episodes is not None and episodes.type != ir.SET:
                self.p.error(r.loc_of(m, "episodes"), f"measure {mid!r} episodes should be a list of events "
                             f"(e.g. the qualifying encounters)", expected="a value set or a definition of events")
                episodes = None
            elif episodes is not None and ir.uses_episode(episodes):
                self.p.error(r.loc_of(m, "episodes"), "the episodes of a measure cannot refer to 'episode'")
                episodes = None
            at_most = m.get("episodes_at_most", DEFAULT_EPISODES_AT_MOST)
            if not isinstance(at_most, int) or isinstance(at_most, bool) or not 1 <= at_most <= 50:
                self.p.error(r.loc_of(m, "episodes_at_most"), "episodes_at_most should be a whole number from 1 to 50")
                at_most = DEFAULT_EPISODES_AT_MOST
        elif "episodes_at_most" in m:
            self.p.error(r.loc_of(m, "episodes_at_most"), "episodes_at_most without episodes:",
                         expected="episodes: <the list of events counted, one per episode>")
        ip = (self.condition(m["initial_population"], r.loc_of(m, "initial_population"), f"measure {mid!r} initial population")
              if "initial_population" in m else self.conditions.get("population"))
        den = (self.condition(m["denominator"], r.loc_of(m, "denominator"), f"measure {mid!r} denominator")
               if "denominator" in m else ir.Const(True, ir.BOOL))
        num = self.condition(m["numerator"], r.loc_of(m, "numerator"), f"measure {mid!r} numerator") if "numerator" in m else None
        value = self.measure_value(m, mid)
        if "numerator" not in m and "value" in m:
            num = ir.Const(True, ir.BOOL)  # a value measure counts everyone in its denominator; the number is `value`
        elif "numerator" not in m:
            self.p.error(loc, f"measure {mid!r} needs a numerator (a condition) or a value (a number per patient)",
                         expected="numerator: <condition>, or value: <number expression>, e.g. "
                                  "value: count(emergency_admissions during period)")
        lists = {}
        for step, word in (("exclusions", "exclusion"), ("exceptions", "exception")):
            if step not in m:
                continue
            items = m[step]
            if not isinstance(items, list) or not items:
                self.p.error(r.loc_of(m, step), f"{step} should be a non-empty list of conditions")
                continue
            parts = [self.condition(x, r.loc_of(items, i), f"measure {mid!r} {word}") for i, x in enumerate(items)]
            if all(p is not None for p in parts):
                lists[step] = ir.Or(tuple(parts)) if len(parts) > 1 else parts[0]
        excl, exc = lists.get("exclusions"), lists.get("exceptions")
        achievers = m.get("achievers_kept", False)
        if not isinstance(achievers, bool):
            self.p.error(r.loc_of(m, "achievers_kept"), "achievers_kept should be true or false")
        counts_deceased = m.get("counts_deceased", False)
        if not isinstance(counts_deceased, bool):
            self.p.error(r.loc_of(m, "counts_deceased"), "counts_deceased should be true or false")
        ecqm = self.ecqm(m, mid)
        improvement = m.get("improvement", "increase")
        if improvement not in IMPROVEMENT:
            self.p.error(r.loc_of(m, "improvement"), f"measure {mid!r}: improvement {improvement!r} is not a direction",
                         expected="improvement: increase (a higher rate is better, the default) or decrease "
                                  "(a lower rate is better, e.g. poor control)")
            improvement = "increase"
        if "value" in m and "episodes" in m:
            self.p.error(r.loc_of(m, "value"), f"measure {mid!r}: value: is a number per patient; a measure counted per "
                         f"episode already counts its episodes", expected="value: or episodes:, not both")
            return None
        if not mid or ip is None or den is None or num is None or ("episodes" in m and episodes is None) or (
                "value" in m and value is None):
            return None
        if value is not None:
            self.values[f"{key}:value"] = value
        steps = [("ip", ip, loc), ("den", den, loc), ("num", num, r.loc_of(m, "numerator"))]
        if excl is not None:
            steps.append(("excl", excl, r.loc_of(m, "exclusions")))
        if exc is not None:
            steps.append(("exc", exc, r.loc_of(m, "exceptions")))
        if episodes is None:
            for step, node, sloc in steps:
                if ir.uses_episode(node):
                    self.p.error(sloc, f"measure {mid!r} refers to 'episode' but is not counted per episode",
                                 expected="episodes: <the list of events counted> on the measure")
                    return None
                self.add_condition(f"{key}:{step}", node, sloc)
        else:
            named = ir.Named(f"{mid.lower()}_episodes", episodes) if not isinstance(episodes, ir.Named) else episodes
            for k in range(1, at_most + 1):
                ep = ir.Named(f"episode_{k}", ir.Pick(named, "nth", k))
                for step, node, sloc in steps:
                    sub = ir.substitute(node, ir.EpisodeRef(), ep)
                    if step == "ip":
                        sub = ir.And((ir.Exists(ep), sub))
                    self.add_condition(f"{key}:{step}#{k}", sub, sloc)
            # more episodes than counted: reported as a data problem, never silently dropped
            self.add_condition(f"{key}:episodes_over", ir.Compare(">", ir.Count(named), ir.Const(float(at_most), ir.NUMBER)),
                               r.loc_of(m, "episodes"))
        return Measure(mid, r.text(m, "title", "title"), loc, bool(achievers), r.text_list(m, "evidence", "evidence"),
                       excl is not None, ecqm, has_exceptions=exc is not None, counts_deceased=bool(counts_deceased),
                       episodes_at_most=at_most if episodes is not None else 0, has_value=value is not None,
                       value_location=r.loc_of(m, "value") if value is not None else None, improvement=improvement)

    def measure_value(self, m, mid) -> ir.Node | None:
        """`value: <number expression>`: a number per patient in the denominator (eCQM continuous variable style:
        admissions, bed days). An expression on one line; a yes/no, a date or a list of events is an error."""
        if "value" not in m:
            return None
        node = Node(m["value"], self.r.loc_of(m, "value"))
        value = self.expr(node, None, f"measure {mid!r} value")
        if value is None:
            return None
        if value.type != ir.NUMBER:
            hint = {ir.SET: "count(...) of it", ir.EVENT: "its .value, or count(...)", ir.BOOL: "a count or a sum",
                    ir.DATE: "a number", ir.STRING: "a number"}.get(value.type, "a number")
            self.p.error(node.loc, f"measure {mid!r} value is {'a yes/no condition' if value.type == ir.BOOL else 'a ' + value.type}"
                         f", not a number", expected=f"a number per patient, e.g. value: count(emergency_admissions "
                                                      f"during period) ({hint})")
            return None
        if ir.uses_episode(value):
            self.p.error(node.loc, f"measure {mid!r} value refers to 'episode'")
            return None
        return value

    def ecqm(self, m, mid) -> EcqmRef | None:
        """`ecqm: {url: <canonical Measure url>, version: <measure version>}`: the published eCQM this
        measure implements; conformance kits are matched to protocols by it."""
        node = self.r.get(m, "ecqm")
        if node is None:
            return None
        em = self.r.mapping(node.value, node.loc, f"measure {mid!r} ecqm", ECQM)
        if em is None or "url" not in em:
            return None
        url = self.r.text(em, "url", "ecqm url")
        version = self.r.text(em, "version", "ecqm version")
        if url is None:
            return None
        if not re.fullmatch(r"https?://[^\s/]+/\S+", url):
            self.p.error(self.r.loc_of(em, "url"), f"ecqm url {url!r} is not a canonical measure URL",
                         expected="e.g. https://madie.cms.gov/Measure/CMS122FHIRDiabetesAssessGreaterThan9Percent")
            return None
        if "version" in em and not isinstance(em["version"], str):
            self.p.error(self.r.loc_of(em, "version"), f"ecqm version {em['version']!r} was read as a number",
                         expected="the version in quotes, e.g. '0.5.000'")
            return None
        if version is not None and not re.fullmatch(r"\d+(\.\d+)*", version):
            self.p.error(self.r.loc_of(em, "version"), f"ecqm version {version!r} is not a measure version",
                         expected="digits and dots, e.g. 0.5.000 (quote it in YAML)")
            return None
        return EcqmRef(url, version)


class _CycleError(Exception):
    pass


class _LazyScope(Scope):
    """Definitions may be used before the line that defines them; compile them on first use."""

    def __init__(self, compiler: _Compiler):
        super().__init__(compiler.decls, _LazyDefs(compiler))
        self.labels = compiler.labels  # definition -> `label:` (why-lines say it instead of the name)


class _LazyDefs(dict):
    def __init__(self, compiler: _Compiler):
        super().__init__()
        self.c = compiler

    def __contains__(self, name) -> bool:
        return name in self.c._raw_defs

    def __getitem__(self, name):
        node = self.c.definition(name)
        if node is None:
            raise ExprError(f"definition {name!r} has errors of its own (see above)")
        return node

    def __iter__(self):
        return iter(self.c._raw_defs)

    def keys(self):
        return self.c._raw_defs.keys()


def load_protocols(paths: list[Path], valueset_dirs: list[Path] | None = None) -> tuple[list[Protocol], list]:
    """Load many files; returns (protocols, problems). Files with errors contribute problems only."""
    protocols, problems = [], []
    for p in paths:
        try:
            proto = load_protocol(p, valueset_dirs)
            protocols.append(proto)
            problems.extend(proto.warnings)
        except ProtocolError as e:
            problems.extend(e.problems)
    return protocols, problems


shared.register_compiler(_Compiler)  # shared definitions files are compiled by the same compiler


def _words(vm, vs) -> str | None:
    """A value set's words in why-lines: its cluster's (the one it declares, else those of its codes'
    `source`), None when it is a subset or has none (it then reads as its identifier)."""
    from engine.language.valueset_words import valueset_words
    where = vm.get("where") if hasattr(vm, "get") else None
    where = {str(k): [str(x).strip() for x in (v if isinstance(v, list) else str(v).split(","))]
             for k, v in where.items()} if hasattr(where, "items") else None
    declared = str(vm.get("cluster") or "").strip() if "cluster" in vm and not any(
        k in vm for k in ("codelist", "fhir", "codes")) else None
    clusters = {declared} if declared else (vs.clusters if vs is not None else ())
    return valueset_words(clusters, where)
