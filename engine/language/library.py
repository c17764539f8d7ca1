"""The protocol library: every pathway and role-agreement file under the given paths.

A YAML file is a pathway if it starts with `protocol:`, a role agreement if it starts with
`agreement:`, shared definitions if it starts with `shared:` (engine/language/shared.py); value sets (`valuesets/`) and protocol test files (`*.tests.yaml`) are not protocols.
Several versions of a protocol may live side by side (published versions are kept); `in_force`
picks, per protocol id, the highest active version whose effective date is on or before the date.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from engine.language.agreements import Agreement, load_agreement
from engine.language.errors import Location, Problem, ProtocolError
from engine.language.loader import load_protocol
from engine.language.model import Protocol, version_key  # noqa: F401  (version_key: also imported from here)


@dataclass
class Library:
    protocols: list[Protocol] = field(default_factory=list)
    agreements: list[Agreement] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    shared: list = field(default_factory=list)  # shared definitions files (engine/language/shared.py)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def in_force(self, on: dt.date, include_drafts: bool = False) -> list[Protocol]:
        best: dict[str, Protocol] = {}
        for p in self.protocols:
            if p.status == "retired" or (p.status == "draft" and not include_drafts):
                continue
            if p.effective and p.effective > on:
                continue
            cur = best.get(p.id)
            if cur is None or version_key(p.version) > version_key(cur.version):
                best[p.id] = p
        return sorted(best.values(), key=lambda p: p.id)

    def never_in_force(self) -> dict[str, Protocol]:
        """Active protocol versions that no date puts in force, each with the higher version that pre-empts it: one
        taking effect on or before its own date (from then on the highest version in force wins). A version
        re-issued earlier as a patch (t2dm-annual-care 1.4.0 by 1.4.1) is one; so is 1.2.0 published with 1.3.0's
        date."""
        out: dict[str, Protocol] = {}
        active = [p for p in self.protocols if p.status == "active" and p.effective is not None]
        for older in active:
            pre = [n for n in active if n.id == older.id and n.effective <= older.effective
                   and version_key(n.version) > version_key(older.version)]
            if pre:
                out[older.key] = min(pre, key=lambda n: (n.effective, version_key(n.version)))
        return out

    def agreements_in_force(self, on: dt.date) -> list[Agreement]:
        best: dict[str, Agreement] = {}
        for a in self.agreements:
            if a.status != "active" or (a.effective and a.effective > on):
                continue
            cur = best.get(a.id)
            if cur is None or version_key(a.version) > version_key(cur.version):
                best[a.id] = a
        return sorted(best.values(), key=lambda a: a.id)

    def find(self, protocol_id: str, version: str | None = None) -> Protocol | None:
        matches = [p for p in self.protocols if p.id == protocol_id and (version is None or p.version == version)]
        return max(matches, key=lambda p: version_key(p.version)) if matches else None

    def is_value_measure(self, protocol_id: str, version: str | None, measure: str) -> bool:
        """The measure has `value:` (an outcome counted per person, e.g. admissions), not a proportion."""
        proto = self.find(protocol_id, version)
        return proto is not None and any(m.id == measure and m.has_value for m in proto.measures)

    def improvement(self, protocol_id: str, version: str | None, measure: str) -> str:
        """Which way is better for the measure as declared (`improvement:`): "increase" (the default) or
        "decrease" (an inverse measure: a lower rate is better)."""
        proto = self.find(protocol_id, version)
        found = next((m for m in proto.measures if m.id == measure), None) if proto is not None else None
        return found.improvement if found is not None else "increase"


def _kind(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                s = line.strip()
                if not s or s.startswith("#") or s == "---":
                    continue
                if s.startswith("protocol:"):
                    return "protocol"
                if s.startswith("agreement:"):
                    return "agreement"
                if s.startswith("shared:"):
                    return "shared"
                return None
    except (OSError, UnicodeDecodeError):
        return None
    return None


def protocol_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*.y*ml")):
                if "valuesets" in f.parts or f.name.endswith((".tests.yaml", ".tests.yml")):
                    continue
                files.append(f)
        else:
            files.append(p)
    return files


def library_inputs(paths: list[Path]) -> list[Path]:
    """Every file a library loaded from `paths` is read from: the protocol files and the codelists (every file
    under a `valuesets` folder beneath them, the site-supplied ones in `valuesets/site/` included, and the
    folder $CAREPATH_SITE_CODELISTS names). A running service reloads its library when any of them changes
    (api/state.py), so a codelist a site imports takes effect without a restart."""
    from engine.language.site_codelists import SITE_ENV
    import os
    files = protocol_files(paths)
    for p in paths:
        p = Path(p)
        base = p if p.is_dir() else p.parent
        files += sorted(f for f in base.rglob("*") if "valuesets" in f.relative_to(base).parts and f.is_file())
    env = os.environ.get(SITE_ENV, "").strip()
    if env and Path(env).is_dir():
        files += sorted(f for f in Path(env).iterdir() if f.is_file())
    return files


def library_fingerprint(paths: list[Path]) -> tuple:
    """(file, mtime_ns, size) for every input a library loaded from `paths` reads (library_inputs, plus the
    `shared/` folders above a root that `uses:` may reach) and $CAREPATH_SITE_CODELISTS itself: equal
    fingerprints, equal libraries. For callers that keep a loaded library and reuse it until a file changes."""
    from engine.language.shared import search_dirs
    from engine.language.site_codelists import SITE_ENV
    import os
    files = list(library_inputs(paths))
    for p in paths:
        base = Path(p) if Path(p).is_dir() else Path(p).parent
        for d in search_dirs(base / "_"):
            if d.is_dir():
                files += sorted(d.glob("*@*.y*ml"))
    out: list[tuple] = [("env", os.environ.get(SITE_ENV, "").strip())]
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


def load_library(paths: list[Path] | list[str]) -> Library:
    lib = Library()
    for f in protocol_files([Path(p) for p in paths]):
        if not f.exists():
            lib.problems.append(Problem(Location(str(f), 1, 1), "file not found"))
            continue
        kind = _kind(f)
        try:
            if kind == "protocol":
                proto = load_protocol(f)
                lib.protocols.append(proto)
                lib.problems.extend(proto.warnings)
            elif kind == "agreement":
                ag = load_agreement(f)
                lib.agreements.append(ag)
                lib.problems.extend(ag.warnings)
            elif kind == "shared":
                from engine.language.shared import load_shared
                sf = load_shared(f)
                lib.shared.append(sf)
                lib.problems.extend(p for p in sf.warnings if p not in lib.problems)
            else:
                lib.problems.append(Problem(Location(str(f), 1, 1), "not a protocol or role agreement",
                                            expected="a first line 'protocol: <id>' or 'agreement: <id>'",
                                            severity="warning"))
        except ProtocolError as e:  # (a shared file's errors come with each protocol using it: once is enough)
            lib.problems.extend(p for p in e.problems if p not in lib.problems)
    _cross_checks(lib)
    from engine.language.checks import run_all  # logic, role coverage, versions, publications
    lib.problems.extend(run_all(lib, [Path(p) for p in paths]))
    return lib


def _cross_checks(lib: Library) -> None:
    """Checks that need more than one file: duplicates and unassigned activities."""
    seen: dict[tuple[str, str], Protocol] = {}
    for p in lib.protocols:
        k = (p.id, p.version)
        if k in seen and seen[k].content_hash != p.content_hash:
            lib.problems.append(Problem(Location(p.source, 1, 1),
                                        f"{p.id} version {p.version} also in {seen[k].source} with different content",
                                        expected="a new version number for changed content"))
        seen.setdefault(k, p)
    if not lib.agreements:
        return
    for p in lib.protocols:
        if p.status == "retired":
            continue
        for a in p.activities:
            if not any(x.protocol in (p.id, "*") and x.target in (a.id, "*") for ag in lib.agreements for x in ag.assigns):
                lib.problems.append(Problem(a.location, f"activity {a.id!r} of {p.id} is not assigned by any role agreement",
                                            expected="an assign entry for " + f"{p.id}/{a.id}", severity="warning"))
    for ag in lib.agreements:
        for x in ag.assigns:
            if x.protocol == "*":  # any pathway
                continue
            versions = sorted((p for p in lib.protocols if p.id == x.protocol), key=lambda p: version_key(p.version))
            if not versions:
                lib.problems.append(Problem(x.location, f"agreement names unknown protocol {x.protocol!r}", severity="warning"))
                continue
            problems = [_unknown_target(p, x.target) for p in versions]
            if all(problems):  # a target any kept version has is fine (agreements outlive versions)
                lib.problems.append(Problem(x.location, problems[-1][0], suggestion=problems[-1][1], severity="warning"))


def _unknown_target(proto: Protocol, target: str) -> tuple[str, str | None] | None:
    """(message, suggestion) when an agreement names an activity, rule or tier the protocol lacks."""
    from engine.language.errors import suggest
    if target == "*":
        return None
    kind, _, ident = target.partition(":") if ":" in target else ("activity", "", target)
    known = {
        "activity": [a.id for a in proto.activities],
        "rule": [r.id for r in proto.rules],
        "escalation": [r.id for r in proto.rules if r.escalation],
        "tier": [t.id for t in getattr(proto, "tiers", [])],
    }
    if kind not in known:
        return f"{proto.id}: unknown target kind {kind!r}", suggest(kind, known)
    if ident not in known[kind]:
        return f"{proto.id} has no {kind} {ident!r}", suggest(ident, known[kind])
    return None
