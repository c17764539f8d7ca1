"""Impact of a protocol change before it is published: evaluate the old and the new version over a
population and say what moves, where, for whom and why.

    report = impact(old, new, records, agreements, as_of)

Counts patients entering and leaving the register; tasks and flags added, removed or changed (a task
is the same task when its key is: patient | protocol | activity or rule); care-plan statuses that
change; measure populations; tiers. Broken down by the assigned role, provider and the patient's
practice, with example patients and the why-lines of what changed for them.

Populations (`load_population`): a folder of FHIR bundles (`carepath demo` writes var/demo-bundles/),
one bundle, a registry database (a SQLite file or a DATABASE_URL), or `demo` / `demo:N` (the demo
patients plus N synthetic people from engine/synthetic/generate.py).
"""
from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from engine.app import practices
from engine.evaluation.evaluator import Options, evaluate
from engine.records.model import PatientRecord


class PopulationError(ValueError):
    pass


def load_population(spec: str, as_of: dt.date) -> Iterator[PatientRecord]:
    """Records from a folder of FHIR bundles, a bundle, a registry database, or `demo[:N]`."""
    if spec == "demo" or spec.startswith("demo:"):
        from engine.synthetic.demo import demo_records
        yield from demo_records(as_of)
        n = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if n:
            from engine.synthetic.generate import generate
            yield from generate(n, seed=1, as_of=as_of)
        return
    if "://" in spec:
        yield from _registry(spec)
        return
    path = Path(spec)
    if not path.exists():
        raise PopulationError(f"{spec}: no such file or folder (expected FHIR bundles, a registry database or demo[:N])")
    if path.is_dir():
        bundles = sorted(path.glob("*.json"))
        if not bundles:
            raise PopulationError(f"{spec}: no FHIR bundles (*.json) in this folder")
        for b in bundles:
            yield from _bundle(b)
        return
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        yield from _registry(f"sqlite:///{path.resolve()}")
        return
    yield from _bundle(path)


def _bundle(path: Path) -> Iterator[PatientRecord]:
    from engine.records.fhir.bundle import BundleError, import_bundle
    try:
        result = import_bundle(json.loads(path.read_text(encoding="utf-8")), source_system=path.stem)
    except (json.JSONDecodeError, BundleError) as e:
        raise PopulationError(f"{path}: {e}") from None
    yield from result.records


def _registry(url: str) -> Iterator[PatientRecord]:
    from sqlmodel import Session

    from engine.registry.db import make_engine
    from engine.registry.ingest import iter_records
    engine = make_engine(url)
    with Session(engine) as s:
        yield from iter_records(s)


@dataclass
class Example:
    nhs_number: str
    practice: str | None
    change: str
    why: str
    practice_name: str | None = None  # beside the ODS code, from the one practice table (engine/app/practices.py)


PRACTICE_COLUMNS = ("entering", "leaving", "tasks_added", "tasks_removed", "clinical_flags_added",
                    "clinical_flags_removed", "compliance_flags_added", "compliance_flags_removed")
FLAG_KINDS = ("clinical", "compliance")
TOTALS = ("tasks_added", "tasks_removed", "tasks_changed", "clinical_flags_added", "clinical_flags_removed",
          "compliance_flags_added", "compliance_flags_removed", "care_plan_changes", "tier_changes")


@dataclass
class Report:
    protocol: str
    old: str | None
    new: str
    as_of: str
    patients: int = 0
    register_old: int = 0
    register_new: int = 0
    entering: int = 0
    leaving: int = 0
    tasks_added: Counter = field(default_factory=Counter)      # by title
    tasks_removed: Counter = field(default_factory=Counter)
    tasks_changed: Counter = field(default_factory=Counter)
    clinical_flags_added: Counter = field(default_factory=Counter)      # by code (level)
    clinical_flags_removed: Counter = field(default_factory=Counter)
    compliance_flags_added: Counter = field(default_factory=Counter)    # by code (level)
    compliance_flags_removed: Counter = field(default_factory=Counter)
    care_plan_changes: Counter = field(default_factory=Counter)  # "activity: old -> new"
    tiers: Counter = field(default_factory=Counter)            # "old -> new"
    by_role: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))      # role -> [added, removed]
    by_provider: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    by_practice: dict = field(default_factory=lambda: defaultdict(lambda: [0] * len(PRACTICE_COLUMNS)))  # practice -> PRACTICE_COLUMNS
    measures: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0]))  # id -> [den old, num old, den new, num new]
    examples: list[Example] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.entering or self.leaving or any(self.totals().values()))

    def totals(self) -> dict[str, int]:
        """The headline numbers: how many tasks, clinical flags and compliance flags are added / removed
        (one per patient and task or flag), care-plan status changes and tier changes, over every patient."""
        out = {k: sum(getattr(self, k).values()) for k in TOTALS if k != "tier_changes"}
        out["tier_changes"] = sum(self.tiers.values())
        return out

    def as_dict(self) -> dict:
        """One shape for every caller: `carepath impact --format json`, POST /protocols/impact and the
        impact runs (GET /protocols/impact/runs/{id}, the web page) all return this."""
        d = {k: getattr(self, k) for k in ("protocol", "old", "new", "as_of", "patients", "register_old", "register_new",
                                           "entering", "leaving")}
        d["totals"] = self.totals()
        for k in ("tasks_added", "tasks_removed", "tasks_changed", "clinical_flags_added", "clinical_flags_removed",
                  "compliance_flags_added", "compliance_flags_removed", "care_plan_changes", "tiers"):
            d[k] = dict(sorted(getattr(self, k).items()))
        d["examples"] = [asdict(e) for e in self.examples]
        d["by_role"] = {k: {"added": v[0], "removed": v[1]} for k, v in sorted(self.by_role.items())}
        d["by_provider"] = {k: {"added": v[0], "removed": v[1]} for k, v in sorted(self.by_provider.items())}
        d["by_practice"] = {k: dict(zip(PRACTICE_COLUMNS, v)) for k, v in sorted(self.by_practice.items())}
        d["measures"] = {k: {"denominator_old": v[0], "numerator_old": v[1], "denominator_new": v[2], "numerator_new": v[3]}
                         for k, v in sorted(self.measures.items())}
        return d


def impact(old, new, records: Iterable[PatientRecord], agreements: list, as_of: dt.date, engine: str = "python",
           examples_per_change: int = 3, max_examples: int = 40,
           progress: Callable[[int], None] | None = None) -> Report:
    """Evaluate `old` (a Protocol, or None for a new pathway) and `new` over the records and compare.
    The one impact preview: `carepath impact`, POST /protocols/impact, the impact runs and the web page
    all come here. `progress(patients_done)` is called after each patient (a background run records it)."""
    rep = Report(protocol=new.id, old=old.version if old else None, new=new.version, as_of=as_of.isoformat())
    opts = Options(engine=engine)
    shown: Counter = Counter()

    def example(rec, change: str, why: str) -> None:
        if shown[change] < examples_per_change and len(rep.examples) < max_examples:
            shown[change] += 1
            rep.examples.append(Example(rec.patient.nhs_number, rec.patient.practice, change, why,
                                        practices.practice_name(rec.patient.practice) or None))

    for rec in records:
        if progress is not None and rep.patients:
            progress(rep.patients)
        rep.patients += 1
        practice = rec.patient.practice or "(no practice)"
        b = evaluate(rec, [old], agreements, as_of=as_of, options=opts).protocols[0] if old else None
        a = evaluate(rec, [new], agreements, as_of=as_of, options=opts).protocols[0]
        was, now = bool(b and b.on_register), a.on_register
        rep.register_old += was
        rep.register_new += now
        if now and not was:
            rep.entering += 1
            rep.by_practice[practice][0] += 1
            example(rec, "enters the register", a.register_why)
        if was and not now:
            rep.leaving += 1
            rep.by_practice[practice][1] += 1
            example(rec, "leaves the register", a.register_why)
        old_tasks = {t.key: t for t in (b.tasks if b else [])}
        new_tasks = {t.key: t for t in a.tasks}
        for side, (tasks, other, counter, label) in enumerate(((new_tasks, old_tasks, rep.tasks_added, "added"),
                                                               (old_tasks, new_tasks, rep.tasks_removed, "removed"))):
            for k in sorted(tasks.keys() - other.keys()):  # side 0: added, 1: removed (the per-role/provider/practice columns)
                t = tasks[k]
                counter[t.title] += 1
                rep.by_role[t.assigned.role][side] += 1
                rep.by_provider[t.assigned.provider or "(protocol role only)"][side] += 1
                rep.by_practice[practice][2 + side] += 1
                why = (_why_gone(a, k) if side else None) or t.provenance.why
                example(rec, f"task {label}: {t.title}", why)
        for k in new_tasks.keys() & old_tasks.keys():
            t0, t1 = old_tasks[k], new_tasks[k]
            diff = [f"{f} {getattr(t0, f)} -> {getattr(t1, f)}" for f in ("title", "priority") if getattr(t0, f) != getattr(t1, f)]
            if t0.assigned.role != t1.assigned.role or t0.assigned.provider != t1.assigned.provider:
                diff.append(f"assigned {t0.assigned.provider}/{t0.assigned.role} -> {t1.assigned.provider}/{t1.assigned.role}")
            if diff:
                rep.tasks_changed[f"{t1.title}: {'; '.join(diff)}"] += 1
                example(rec, f"task changed: {t1.title}", "; ".join(diff))
        for n, kind in enumerate(FLAG_KINDS):  # clinical and compliance flags counted apart, both shown
            old_flags = {(f.key, f.level): f for f in (b.flags if b else []) if f.kind == kind}
            new_flags = {(f.key, f.level): f for f in a.flags if f.kind == kind}
            for side, (flags, other, counter, label) in enumerate(
                    ((new_flags, old_flags, getattr(rep, f"{kind}_flags_added"), "added"),
                     (old_flags, new_flags, getattr(rep, f"{kind}_flags_removed"), "removed"))):
                for k in sorted(flags.keys() - other.keys()):
                    f = flags[k]
                    counter[f"{f.code} ({f.level})"] += 1
                    rep.by_practice[practice][4 + 2 * n + side] += 1
                    example(rec, f"{kind} flag {label}: {f.code} ({f.level})", f.provenance.why)
        old_plan = {i.activity: i.status for i in (b.care_plan if b else [])}
        for i in a.care_plan:
            before = old_plan.pop(i.activity, "not in plan")
            if before != i.status:
                change = f"{i.activity}: {before} -> {i.status}"
                rep.care_plan_changes[change] += 1
                example(rec, f"care plan {change}", i.provenance.why)
        for aid, status in old_plan.items():
            rep.care_plan_changes[f"{aid}: {status} -> not in plan"] += 1
        t_old = b.tier.tier if b and b.tier else "none"
        t_new = a.tier.tier if a.tier else "none"
        if t_old != t_new:
            rep.tiers[f"{t_old} -> {t_new}"] += 1
            example(rec, f"tier {t_old} -> {t_new}", a.tier.provenance.why if a.tier else a.register_why)
        for m in (b.measures if b else []):
            rep.measures[m.measure][0] += m.denominator and not m.exclusion
            rep.measures[m.measure][1] += m.numerator
        for m in a.measures:
            rep.measures[m.measure][2] += m.denominator and not m.exclusion
            rep.measures[m.measure][3] += m.numerator
    if progress is not None:
        progress(rep.patients)
    return rep


def impact_of_draft(library, candidate, records: Iterable[PatientRecord], as_of: dt.date, **kw) -> Report:
    """A draft against the version of the same protocol in force on `as_of` (none: a new pathway), with the
    role agreements in force then: what the service previews (the CLI names OLD itself, then calls `impact`)."""
    old = next((p for p in library.in_force(as_of) if p.id == candidate.id), None)
    return impact(old, candidate, records, library.agreements_in_force(as_of), as_of, **kw)


def _why_gone(res, key: str) -> str | None:
    """Why a task is no longer raised: the new version's care-plan line for an activity, if any."""
    part = key.split("|")[-1]
    if part.startswith("activity:"):
        aid = part.split(":", 1)[1]
        item = next((i for i in res.care_plan if i.activity == aid), None)
        if item is not None:
            return f"now {item.status}: {item.provenance.why}"
    if not res.on_register:
        return res.register_why
    return None


def render_text(rep: Report, console) -> None:
    from rich.table import Table
    old = f"{rep.protocol}@{rep.old}" if rep.old else "(no earlier version)"
    console.rule(f"Impact of {rep.protocol}@{rep.new} against {old}, as of {rep.as_of}: {rep.patients} patient(s)")
    console.print(f"Register: {rep.register_old} -> {rep.register_new} ({rep.entering} entering, {rep.leaving} leaving)",
                  highlight=False)
    if not rep.changed:
        console.print("No patient's register status, tasks, flags, care plan or tier changes.", highlight=False)

    def counts(title: str, added: Counter, removed: Counter | None = None) -> None:
        keys = sorted(set(added) | set(removed or {}))
        if not keys:
            return
        t = Table(title, "added", "removed") if removed is not None else Table(title, "patients")
        for k in keys:
            t.add_row(k, str(added.get(k, 0)), str(removed.get(k, 0))) if removed is not None else t.add_row(k, str(added[k]))
        console.print(t)

    counts("Tasks", rep.tasks_added, rep.tasks_removed)
    counts("Tasks changed", rep.tasks_changed)
    counts("Clinical flags", rep.clinical_flags_added, rep.clinical_flags_removed)
    counts("Compliance flags (audit / QOF)", rep.compliance_flags_added, rep.compliance_flags_removed)
    counts("Care plan status changes", rep.care_plan_changes)
    counts("Tier changes", rep.tiers)
    for title, table in (("Tasks by role", rep.by_role), ("Tasks by provider", rep.by_provider)):
        if table:
            t = Table(title, "added", "removed")
            for k, (a, r) in sorted(table.items()):
                t.add_row(k, str(a), str(r))
            console.print(t)
    tot = rep.totals()
    console.print(f"Tasks +{tot['tasks_added']} / -{tot['tasks_removed']}; clinical flags +{tot['clinical_flags_added']} / "
                  f"-{tot['clinical_flags_removed']}; compliance flags +{tot['compliance_flags_added']} / "
                  f"-{tot['compliance_flags_removed']}", highlight=False)
    if rep.by_practice:
        t = Table("Practice", "entering", "leaving", "tasks +", "tasks -", "clinical flags +", "clinical flags -",
                  "compliance flags +", "compliance flags -")
        for k, v in sorted(rep.by_practice.items()):
            t.add_row(k, *(str(x) for x in v))
        console.print(t)
    moved = {k: v for k, v in rep.measures.items() if v[:2] != v[2:]}
    if moved:
        t = Table("Measure", "denominator", "numerator", "rate")
        for k, (d0, n0, d1, n1) in sorted(moved.items()):
            rate = lambda n, d: f"{100 * n / d:.1f}%" if d else "-"  # noqa: E731
            t.add_row(k, f"{d0} -> {d1}", f"{n0} -> {n1}", f"{rate(n0, d0)} -> {rate(n1, d1)}")
        console.print(t)
    if rep.examples:
        console.print("Examples (patient, practice: what changed - why):", highlight=False)
        for e in rep.examples:
            console.print(f"  {e.nhs_number} {e.practice_name or e.practice or ''}: {e.change} - {e.why}", highlight=False, markup=False)
