"""Protocol test cases: the loader and checker live in engine/app/cases.py (the `carepath test`
command uses them too); this module keeps the names the protocol tests import."""
from functools import lru_cache
from pathlib import Path

from engine.app.cases import (ASSIGN_FIELDS, MEASURE_FIELDS, MEASURE_SHORTHAND, TASK_FIELDS, Case, CaseFile, CaseFileError,  # noqa: F401
                                    Outcome, case_files, check_case, load_cases, run_case, run_file)
from engine.language.library import Library, load_library

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"


@lru_cache(maxsize=1)
def shipped_library() -> Library:
    """The shipped protocol library (protocols/), loaded once per test process; the tests only read it."""
    return load_library([PROTOCOLS])


def shipped_cases(path: Path) -> CaseFile:
    """A case file, loaded once per test process for the same file and $CAREPATH_SITE_CODELISTS (the codelists
    its protocol versions read). Shared: a test that changes a case changes a deep copy of it."""
    import os

    from engine.language.site_codelists import SITE_ENV
    return _cases(Path(path).resolve(), os.environ.get(SITE_ENV, "").strip())


@lru_cache(maxsize=None)
def _cases(path: Path, site: str) -> CaseFile:
    return load_cases(path)


def protocol_text(path: str | Path) -> dict:
    """What a protocol (or role agreement) file says, without its version, status and effective date (comments are
    not read)."""
    from ruamel.yaml import YAML
    data = dict(YAML(typ="safe").load(Path(path).read_text(encoding="utf-8")))
    return {k: v for k, v in data.items() if k not in ("version", "status", "effective")}


def repeated_by_a_higher_version(lib: Library) -> set[str]:
    """Keys of the versions whose text a higher version of the same protocol repeats unchanged (re-issued to take
    effect on another date: asthma 1.1.0 by 1.1.1). Engines given the same text agree or disagree the same way, so
    the engine-equivalence suites run such a text once, as the higher version."""
    from engine.language.library import version_key
    out = set()
    for p in lib.protocols:
        text = None
        for q in lib.protocols:
            if q.id == p.id and version_key(q.version) > version_key(p.version):
                text = protocol_text(p.source) if text is None else text
                if protocol_text(q.source) == text:
                    out.add(p.key)
                    break
    return out
