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
