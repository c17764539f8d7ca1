"""Validating, previewing and publishing protocol versions.

Decision (documented in the README): protocol versions are **files**, the library the engine
already loads. Publishing version V of protocol P writes `P@V.yaml` next to P's existing files
(so its value sets resolve the same way), or in the protocols folder for a new protocol. Old
versions stay as they are; `Library.in_force` picks the highest active version in effect on a
date. A `protocol_publication` row records who published which version when.

Never half-published: the text is written to a hidden `.pending-*.yml.part` file in the target
folder (not picked up by the library), loaded and checked with the real loader there; only a
version with no errors is hard-linked to its final name in one step (`os.link`, which fails if
the name exists, so two publishers of one version cannot both win), and the pending file is
removed whatever happens. Like `carepath publish`, a publication is recorded in `published.lock`
(file and content hash), which freezes the published file.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ruamel.yaml.error import YAMLError

from engine.language.yaml_limits import yaml_problem
from engine.app.impact import impact_of_draft
from engine.language import checks
from engine.language.codelist_checks import made_up_code_problems
from engine.language.errors import Location, Problem, ProtocolError
from engine.language.library import Library, version_key
from engine.language.loader import load_protocol
from engine.language.model import Protocol
from engine.records.model import PatientRecord

SUBMITTED = "<submitted>"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SAFE_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")


def _peek_id(text: str) -> str | None:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s == "---":
            continue
        m = re.match(r"^protocol:\s*['\"]?([^'\"#\s]+)", s)
        return m.group(1) if m and SAFE_ID.match(m.group(1)) else None
    return None


def target_dir(lib: Library, root: Path, protocol_id: str | None) -> Path:
    if protocol_id:
        versions = [p for p in lib.protocols if p.id == protocol_id]
        if versions:
            latest = max(versions, key=lambda p: version_key(p.version))
            d = Path(latest.source).parent
            if d.resolve().is_relative_to(root.resolve()):
                return d
    return root


@contextmanager
def pending_file(directory: Path, text: str) -> Iterator[Path]:
    path = directory / f".pending-{uuid.uuid4().hex}.yml.part"
    path.write_text(text, encoding="utf-8")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def check(lib: Library, path: Path) -> tuple[Protocol | None, list[Problem]]:
    """Load the pending file with the real loader plus the checks that need the library."""
    loc = Location(str(path), 1, 1)
    if problem := yaml_problem(path.read_text(encoding="utf-8")):  # too big / deep to parse (engine/language/yaml_limits.py)
        return None, [Problem(loc, problem)]
    if _peek_id(path.read_text(encoding="utf-8")) is None:
        first = next((ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()
                      if ln.strip() and not ln.strip().startswith("#") and ln.strip() != "---"), "")
        if first.startswith("agreement:"):
            return None, [Problem(loc, "this is a role agreement; only pathway protocols are published here")]
        if first.startswith("protocol:"):
            return None, [Problem(loc, "the protocol id may only use letters, digits, '.', '-' and '_'")]
    try:
        proto = load_protocol(path)
    except ProtocolError as e:
        return None, list(e.problems)
    except (YAMLError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
        # e.g. ruamel's ReaderError for control characters, which read_yaml does not turn into a Problem
        return None, [Problem(loc, f"the file could not be read: {e}")]
    problems = list(proto.warnings)
    problems += made_up_code_problems(proto)  # as `carepath publish` and `carepath validate` refuse them
    if not SAFE_ID.match(proto.id) or not SAFE_VERSION.match(proto.version):
        problems.append(Problem(loc, f"protocol id {proto.id!r} / version {proto.version!r} cannot name a file"))
        return None, problems
    same = [p for p in lib.protocols if p.id == proto.id]
    existing = next((p for p in same if p.version == proto.version), None)
    if existing is not None:
        problems.append(Problem(loc, f"{proto.id} version {proto.version} is already published ({existing.source})",
                                expected="a new version number"))
    elif same:
        latest = max(same, key=lambda p: version_key(p.version))
        if version_key(proto.version) <= version_key(latest.version):
            problems.append(Problem(loc, f"version {proto.version} is not newer than the latest, {latest.version}",
                                    expected=f"a version above {latest.version}"))
    from engine.language.quoted_numbers import quoted_number_problems
    problems += quoted_number_problems(proto)  # words quoting a number the condition no longer uses (as `validate`)
    if lib.agreements:  # the library's own cross-file checks (unassigned activities ...), as warnings
        from engine.language.library import _cross_checks
        trial = Library(protocols=[proto], agreements=list(lib.agreements))
        _cross_checks(trial)
        problems.extend(p for p in trial.problems if p.severity == "warning" and p.location.file == str(path))
    return proto, problems


def publish_file(pending: Path, proto: Protocol) -> Path:
    """Give the checked pending file its final name atomically; FileExistsError if taken."""
    target = pending.parent / f"{proto.id}@{proto.version}.yaml"
    os.link(pending, target)
    return target


def record_publication(target: Path, proto: Protocol, published: dt.date, *, author: str | None = None,
                       approved_by: str | None = None) -> Callable[[], None]:
    """Record the published file in `published.lock` as `carepath publish` does (the lock in its folder
    or up to two above, else a new one beside it), so `carepath validate` refuses any later change to
    it. Returns the undo, for a publication that fails after this."""
    manifest = checks.find_manifest(target)
    before = manifest.read_text(encoding="utf-8") if manifest else None
    written = checks.record_publication(manifest.parent if manifest else target.parent, proto.key, target,
                                        published.isoformat(), author=author, approved_by=approved_by)

    def undo() -> None:
        if before is None:
            written.unlink(missing_ok=True)
        else:
            written.write_text(before, encoding="utf-8")
    return undo


# ---- impact preview ------------------------------------------------------------------------------
def impact(lib: Library, candidate: Protocol, records: Iterable[PatientRecord], as_of: dt.date, **kw) -> dict:
    """Old (in force on `as_of`) vs candidate over the given population: engine.app.impact's one preview
    (the same as `carepath impact OLD NEW`), as its dict. Uses the reference Python engine (identical
    outputs, proven by the spec tests) so drafts register no durable-rules ruleset."""
    return impact_of_draft(lib, candidate, records, as_of, **kw).as_dict()


def example_patients(result: dict) -> list[str]:
    """The NHS numbers an impact result shows (for the access log)."""
    return sorted({e["nhs_number"] for e in result.get("examples", [])})
