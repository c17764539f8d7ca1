"""Library checks beyond one file's syntax and types (run by `carepath validate` via load_library).

- logic: a rule, tier, segment, activity `when`, goal or measure part that can never hold (it
  contradicts itself or the register), a tier never chosen (earlier tiers always take its patients),
  rules that fire together and set one flag to different levels, a rule that fires for everyone;
- assignment: activities, rule / tier tasks and escalations no role agreement assigns in some
  locality, or only a wildcard assigns with another role than the protocol's; `where` naming a
  locality / MDT / practice the area does not have; assign entries that can never win;
- versions: a newer version taking effect before an older one; content changed without a version
  bump, or a published version removed, against `published.lock` (written by `carepath publish`).

Satisfiability is decided on the lowered conditions (the fields the rule engine compares with
constants), each field as an independent variable over the reals: a reported contradiction is a real
one (never a false alarm); some impossible combinations across different fields go unnoticed.
"""
from __future__ import annotations

import hashlib
import re
import itertools
from dataclasses import dataclass
from pathlib import Path

from engine.language.errors import Location, Problem, suggest
from engine.language.manifest import MANIFEST, find_manifest, read_manifest  # noqa: F401  (also used as checks.*)


MAX_TERMS = 20000  # DNF terms examined per question; beyond it the question is skipped (unknown)


# ---- satisfiability over lowered conditions ------------------------------------------------------------
class _TooBig(Exception):
    pass


def _dnf(t, limit: int = MAX_TERMS) -> list[tuple]:
    from engine.ir.lowering import All, AnyOf, Cmp
    if isinstance(t, Cmp):
        return [(t,)]
    if isinstance(t, All):
        terms: list[tuple] = [()]
        for item in t.items:
            sub = _dnf(item, limit)
            if len(terms) * len(sub) > limit:
                raise _TooBig
            terms = [a + b for a in terms for b in sub]
        return terms
    if isinstance(t, AnyOf):
        out: list[tuple] = []
        for item in t.items:
            out += _dnf(item, limit)
            if len(out) > limit:
                raise _TooBig
        return out
    raise TypeError(t)


def _neg(t):
    from engine.ir.lowering import All, AnyOf, Cmp
    from engine.ir.nodes import NEGATE
    if isinstance(t, Cmp):
        return Cmp(t.field, NEGATE[t.op], t.value)
    if isinstance(t, All):
        return AnyOf(tuple(_neg(i) for i in t.items))
    return All(tuple(_neg(i) for i in t.items))


def _conflict(term: tuple) -> tuple | None:
    """The comparisons on one field that cannot all hold, or None if the term is satisfiable."""
    by_field: dict[str, list] = {}
    for c in term:
        by_field.setdefault(c.field, []).append(c)
    for cmps in by_field.values():
        if not _field_ok(cmps):
            return tuple(cmps)
    return None


def _field_ok(cmps) -> bool:
    eq, neq = [], []
    lo, lo_strict, hi, hi_strict = None, False, None, False
    for c in cmps:
        v = c.value
        if c.op == "==":
            eq.append(v)
        elif c.op == "!=":
            neq.append(v)
        elif c.op in (">", ">="):
            if lo is None or v > lo or (v == lo and c.op == ">"):
                lo, lo_strict = v, c.op == ">"
        elif c.op in ("<", "<="):
            if hi is None or v < hi or (v == hi and c.op == "<"):
                hi, hi_strict = v, c.op == "<"

    def in_bounds(v) -> bool:
        try:
            if lo is not None and (v < lo or (v == lo and lo_strict)):
                return False
            if hi is not None and (v > hi or (v == hi and hi_strict)):
                return False
        except TypeError:
            return True
        return True

    if eq:
        first = eq[0]
        if any(type(x) is not type(first) or x != first for x in eq[1:]):
            return False
        return first not in neq and in_bounds(first)
    if lo is not None and hi is not None:
        if lo > hi or (lo == hi and (lo_strict or hi_strict)):
            return False
        if lo == hi and lo in neq:
            return False
    if isinstance(next(iter(neq), None), bool) and len({x for x in neq}) >= 2:
        return False  # a yes/no field that is neither yes nor no
    return True


def satisfiable(t) -> tuple[bool | None, tuple | None]:
    """(True, None) when some values make the condition hold; (False, an example conflict) when none can;
    (None, None) when it is too large to decide."""
    try:
        terms = _dnf(t)
    except _TooBig:
        return None, None
    example = None
    for term in terms:
        c = _conflict(term)
        if c is None:
            return True, None
        example = example or c
    return False, example


# ---- logic checks ----------------------------------------------------------------------------------------
def _describe_conflict(conflict: tuple | None, lowered) -> str:
    if not conflict:
        return "it can never hold"
    from engine.ir import nodes as ir
    words = []
    for c in conflict:
        name = c.field[:-3] if c.field.endswith("__p") else c.field
        spec = lowered.fields.get(name)
        what = ir.describe(spec.node) if spec is not None else c.field
        if c.field.endswith("__p"):
            words.append(f"{what} {'recorded' if c.value else 'missing'}")
        elif isinstance(c.value, bool):
            words.append(f"{what}: {'yes' if (c.value if c.op == '==' else not c.value) else 'no'}")
        else:
            value = c.value
            if spec is not None and spec.node.type == ir.DATE and isinstance(value, int):
                import datetime as dt
                value = dt.date.fromordinal(value).isoformat()
            words.append(f"{what} {c.op} {value:g}" if isinstance(value, float) else f"{what} {c.op} {value}")
    return " and ".join(dict.fromkeys(words)) + " cannot all hold"


def logic_problems(proto) -> list[Problem]:
    """Unreachable / contradictory rules, tiers, segments, activity `when`, goals and measures."""
    from engine.ir.lowering import TRUE, All, ConditionTooComplex, lower_all
    try:
        lowered = lower_all(proto.all_conditions)
    except ConditionTooComplex:
        return []  # reported by the loader
    conds, locs = lowered.conditions, proto.condition_locations
    pop = conds.get("population", TRUE)
    out: list[Problem] = []

    def loc(key: str) -> Location:
        return locs.get(key) or Location(proto.source, 1, 1)

    def never(key: str, what: str, severity: str = "error", extra: str = "") -> None:
        ok, conflict = satisfiable(All((pop, conds[key])))
        if ok is False:
            own, _ = satisfiable(conds[key])
            where = "" if own is False else " for anyone on the register"
            out.append(Problem(loc(key), f"{what} can never hold{where}: {_describe_conflict(conflict, lowered)}{extra}",
                               expected="a condition some patient on the register can meet", severity=severity))

    if "population" in conds and satisfiable(pop)[0] is False:
        out.append(Problem(loc("population"), f"the register can never hold anyone: "
                                              f"{_describe_conflict(satisfiable(pop)[1], lowered)}"))
        return out
    for r in proto.rules:
        never(f"rule:{r.id}", f"rule {r.id!r}")
    for a in proto.activities:
        if f"activity:{a.id}:applies" in conds:
            never(f"activity:{a.id}:applies", f"activity {a.id!r} when")
    for g in proto.goals:
        never(f"goal:{g.id}:applies", f"goal {g.id!r} when")
    for s in getattr(proto, "segments", []):
        never(f"segment:{s.id}", f"segment {s.id!r}")
    tiers = getattr(proto, "tiers", [])
    for i, t in enumerate(tiers):
        key = f"tier:{t.id}"
        ok, _ = satisfiable(All((pop, conds[key])))
        if ok is False:
            never(key, f"tier {t.id!r}")
            continue
        if i:
            earlier = tuple(_neg(conds[f"tier:{x.id}"]) for x in tiers[:i])
            ok, _ = satisfiable(All((pop, *earlier, conds[key])))
            if ok is False:
                out.append(Problem(loc(key), f"tier {t.id!r} is never chosen: every patient it takes is taken by an "
                                             f"earlier tier ({', '.join(x.id for x in tiers[:i])})",
                                   expected="tiers from the most specific to the most general", severity="warning"))
    for m in proto.measures:
        k = f"measure:{m.id}"
        if getattr(m, "episode_based", False):
            k += "#1"  # every episode has the same steps: check the first
            parts = [conds[f"measure:{m.id}:ip#1"], conds[f"measure:{m.id}:den#1"]]
            conds = {**conds, f"{k}:num": conds[f"measure:{m.id}:num#1"], f"{k}:den": conds[f"measure:{m.id}:den#1"]}
        else:
            parts = [conds[f"{k}:ip"], conds[f"{k}:den"]]
        if satisfiable(All(tuple(parts)))[0] is False:
            out.append(Problem(loc(f"{k}:den"), f"measure {m.id!r}: no patient can be in the denominator: "
                                                f"{_describe_conflict(satisfiable(All(tuple(parts)))[1], lowered)}",
                               severity="warning"))
        elif satisfiable(All(tuple(parts + [conds[f"{k}:num"]])))[0] is False:
            out.append(Problem(loc(f"{k}:num"), f"measure {m.id!r}: the numerator can never be met in the denominator: "
                                                f"{_describe_conflict(satisfiable(All(tuple(parts + [conds[f'{k}:num']])))[1], lowered)}",
                               severity="warning"))
    # rules that fire together and set one flag to different levels
    flagged = [(r, f"rule:{r.id}") for r in proto.rules if r.flag] + [(t, f"tier:{t.id}") for t in tiers if t.flag]
    for (a, ka), (b, kb) in itertools.combinations(flagged, 2):
        if a.flag.code != b.flag.code or a.flag.level == b.flag.level:
            continue
        if ka.startswith("tier:") and kb.startswith("tier:"):
            continue  # only one tier is ever chosen
        if satisfiable(All((pop, conds[ka], conds[kb])))[0]:
            out.append(Problem(loc(kb), f"{ka.replace(':', ' ')!s} and {kb.replace(':', ' ')} can fire for the same patient and set "
                                        f"flag {a.flag.code!r} to {a.flag.level} and to {b.flag.level}",
                               expected="one level per flag code, or conditions that exclude each other",
                               severity="warning"))
    # a rule that fires for everyone on the register
    for r in proto.rules:
        key = f"rule:{r.id}"
        if "population" in conds and satisfiable(All((pop, _neg(conds[key]))))[0] is False:
            out.append(Problem(loc(key), f"rule {r.id!r} fires for everyone on the register (its condition always holds)",
                               severity="warning"))
    return out


# ---- role agreement coverage ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Work:
    protocol: str
    target: str  # activity id, rule:<id>, tier:<id>, escalation:<rule id>
    role: str
    what: str
    location: Location
    exact_only: bool  # rule / tier tasks and escalations: a wildcard with another role is suspect


def _work(proto) -> list[_Work]:
    out = [_Work(proto.id, a.id, a.role, f"activity {a.id!r}", a.location, False) for a in proto.activities]
    for kind, items in (("rule", proto.rules), ("tier", getattr(proto, "tiers", []))):
        for r in items:
            if r.task:
                out.append(_Work(proto.id, f"{kind}:{r.id}", r.task.role, f"the task of {kind} {r.id!r} ({r.task.title})",
                                 r.location, True))
            if r.escalation and r.escalation.to != "mdt":
                target = f"escalation:{r.id}" if kind == "rule" else f"escalation:tier:{r.id}"
                out.append(_Work(proto.id, target, r.escalation.to, f"the escalation of {kind} {r.id!r} to {r.escalation.to}",
                                 r.location, True))
    return out


def assignment_problems(lib) -> list[Problem]:
    from engine.language.agreements import resolve
    every = [a for a in lib.agreements if a.status != "retired"]
    if not every:
        return []
    agreements = _latest_agreements(every)  # older versions of an agreement were checked when they were current
    out: list[Problem] = []
    areas = {}
    for ag in agreements:
        for loc_id, mdts in ag.localities.items():
            areas.setdefault(loc_id, {}).update(mdts)
    places = [{"locality": l, "mdt": m, "practice": None} for l, mdts in sorted(areas.items()) for m in sorted(mdts)]
    seen: set[tuple[str, str]] = set()
    for proto in lib.protocols:
        if proto.status == "retired":
            continue
        for w in _work(proto):
            if (w.protocol, w.target) in seen:
                continue
            seen.add((w.protocol, w.target))
            anywhere = [x for ag in agreements for x in ag.assigns if x.protocol in (w.protocol, "*") and x.target in (w.target, "*")]
            if not anywhere:
                if w.target.startswith(("rule:", "tier:", "escalation:")):
                    out.append(Problem(w.location, f"{w.what} of {w.protocol} is not assigned by any role agreement "
                                                   f"(the protocol's role and default response times will be used)",
                                       expected=f"an assign entry for {w.protocol}/{w.target} or {w.protocol}/*",
                                       severity="warning"))
                continue  # activities without any entry: reported by library._cross_checks
            missing, wildcard_roles = [], set()
            for place in places or [{"locality": None, "mdt": None, "practice": None}]:
                r = resolve(agreements, w.protocol, w.target, place)
                if r is None:
                    missing.append(place["mdt"] or "anywhere")
                elif w.exact_only and r.assign.target == "*" and r.assign.role and r.assign.role != w.role:
                    wildcard_roles.add((r.assign.role, r.agreement.key))
            if missing:
                out.append(Problem(w.location, f"{w.what} of {w.protocol} is not assigned in MDT(s) {', '.join(missing)}",
                                   expected=f"an assign entry for {w.protocol}/{w.target} covering them", severity="warning"))
            for role, key in sorted(wildcard_roles):
                out.append(Problem(w.location, f"{w.what} of {w.protocol} asks for a {w.role}, but only the wildcard "
                                               f"{w.protocol}/* of {key} assigns it, to a {role}",
                                   expected=f"an assign entry for {w.protocol}/{w.target}", severity="warning"))
    # where-clauses against the area's localities, MDTs and practices; entries that can never win
    if areas:
        known = {"locality": set(areas), "mdt": {m for mdts in areas.values() for m in mdts},
                 "practice": {p for mdts in areas.values() for ps in mdts.values() for p in ps}}
        for ag in every:
            for x in ag.assigns:
                for k, values in x.where.items():
                    for v in sorted(values):
                        if v not in known[k]:
                            out.append(Problem(x.location, f"where {k} {v!r} is not a {k} of the area",
                                               expected={"locality": "a locality", "mdt": "an MDT", "practice": "a practice"}[k] + " listed under localities:",
                                               suggestion=suggest(v, known[k])))
    first: dict[tuple, Location] = {}
    for ag in agreements:
        for x in ag.assigns:
            key = (x.protocol, x.target, tuple(sorted((k, tuple(sorted(v))) for k, v in x.where.items())))
            if key in first:
                out.append(Problem(x.location, f"this assign entry for {x.protocol}/{x.target} never applies: the same "
                                               f"target and places are assigned at {first[key]}, which wins ties",
                                   severity="warning"))
            first.setdefault(key, x.location)
    return out


def _latest_agreements(agreements: list) -> list:
    """The newest version of each agreement id (drafts included: they are what is being written), in the given order."""
    from engine.language.model import version_key
    newest: dict[str, object] = {}
    for a in agreements:
        if a.id not in newest or version_key(a.version) > version_key(newest[a.id].version):
            newest[a.id] = a
    return [a for a in agreements if newest[a.id] is a]


# ---- versions ---------------------------------------------------------------------------------------------------------
def version_problems(lib) -> list[Problem]:
    from engine.language.model import version_key
    out: list[Problem] = []
    by_id: dict[str, list] = {}
    for p in lib.protocols:
        if p.status == "active" and p.effective is not None:
            by_id.setdefault(p.id, []).append(p)
    for versions in by_id.values():
        versions.sort(key=lambda p: version_key(p.version))
        for older, newer in zip(versions, versions[1:]):
            if newer.effective < older.effective:  # deliberate for a re-issue that brings a version forward
                out.append(Problem(Location(newer.source, 1, 1),
                                   f"{newer.key} takes effect ({newer.effective}) before {older.key} ({older.effective}), "
                                   f"so {older.key} is never in force: on any date the highest version in force wins",
                                   expected=f"an effective date on or after {older.effective}, unless {newer.key} "
                                            f"replaces {older.key} before it starts", severity="warning"))
    return out




def file_hash(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def publication_problems(lib, paths: list[Path]) -> list[Problem]:
    """Published files must never change (publish a new version instead) and must be kept."""
    out: list[Problem] = []
    manifests = {m for p in paths if (m := find_manifest(Path(p))) is not None}
    loaded = [(p.key, p.source, p.content_hash) for p in lib.protocols] + \
             [(a.key, a.source, a.content_hash or file_hash(a.source)) for a in lib.agreements] + \
             [(s.key, s.source, s.content_hash) for s in getattr(lib, "shared", [])]
    for manifest in sorted(manifests):
        root = manifest.parent
        entries = read_manifest(manifest)
        here = {k: (src, h) for k, src, h in loaded if Path(src).resolve().is_relative_to(root)}
        for key, (src, h) in here.items():
            entry = entries.get(key)
            if entry is not None and entry.get("sha256") != h:
                pid, _, version = key.partition("@")
                out.append(Problem(Location(src, 1, 1),
                                   f"{key} was published on {entry.get('published', '?')} and its content has changed since",
                                   expected=f"the published text back, and the change as a new version "
                                            f"(carepath draft {src} --bump minor)"))
        whole = any(Path(p).resolve() == root or (Path(p).is_dir() and root.is_relative_to(Path(p).resolve()))
                    for p in paths)
        if whole:
            for key, entry in entries.items():
                if key not in here:
                    out.append(Problem(Location(str(root / str(entry.get("file", key))), 1, 1),
                                       f"published version {key} is missing (file {entry.get('file')}): published versions "
                                       f"are kept so that past dates are evaluated with the version then in force",
                                       expected="the file restored from version control"))
    return out


def record_publication(root: Path, key: str, file: Path, published: str, *, author: str | None = None,
                       approved_by: str | None = None) -> Path:
    """Add `key` (protocol or agreement id@version) to <root>/published.lock, with its author and the second
    person who approved it when given (two-person publish); returns the manifest path."""
    manifest = Path(root) / MANIFEST
    entries = read_manifest(manifest) if manifest.is_file() else {}
    entries[key] = {"file": str(Path(file).resolve().relative_to(Path(root).resolve())), "sha256": file_hash(file),
                    "published": str(published)}
    for name, who in (("author", author), ("approved_by", approved_by)):
        if who:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@ -]{0,99}", who):
                raise ValueError(f"{name} {who!r}: letters, digits, spaces and . _ @ - only")
            entries[key][name] = who
    lines = ["# Published protocol and role-agreement versions (written by `carepath publish`; checked by",
             "# `carepath validate`). A published file never changes: publish a change as a new version.",
             ""]
    for k in sorted(entries):
        e = entries[k]
        extra = "".join(f", {n}: {e[n]}" for n in ("author", "approved_by") if e.get(n))
        lines.append(f"{k}: {{file: {e['file']}, sha256: {e['sha256']}, published: {e['published']}{extra}}}")
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def run_all(lib, paths: list[Path]) -> list[Problem]:
    out: list[Problem] = []
    from engine.language.quoted_numbers import quoted_number_problems
    for p in lib.protocols:
        out += logic_problems(p)
        out += quoted_number_problems(p)
    out += assignment_problems(lib)
    out += version_problems(lib)
    out += publication_problems(lib, paths)
    from engine.language.codelist_checks import codelist_problems  # missing clusters, synthetic and LOCAL codes
    out += codelist_problems(lib)
    from engine.language import shared
    out += shared.publication_problems(lib, paths)  # a published protocol uses published shared definitions
    return out
