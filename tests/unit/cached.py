"""The shipped protocol library, loaded once per test process (test speed only, never behaviour).

`load_library([ROOT / "protocols"])` costs about 2 s of CPU a call (8-15 s on the loaded 2-core machine: ruamel
reads every protocol file with its comments), and many tests load the same folder. `shipped_library()` loads
it once; the tests that take it never change it. `cached_load_library` stands in for load_library in the code
under test (the `shipped_library_once` fixture, tests/unit/conftest.py). Under pytest-xdist each worker
process loads it once.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from engine.language.library import load_library as _load_library  # the real one, whatever a test patches later

ROOT = Path(__file__).resolve().parents[2]
PROTOCOLS = ROOT / "protocols"


@lru_cache(maxsize=None)
def shipped_library():
    return _load_library([PROTOCOLS])


def cached_load_library(paths, *args, **kwargs):
    """load_library, answered from `shipped_library()` when asked for the shipped protocols/ folder alone (as
    the CLI's default `protocols` or ROOT / "protocols"); any other folder is loaded as usual."""
    paths = list(paths)
    if not args and not kwargs and len(paths) == 1 and Path(paths[0]).resolve() == PROTOCOLS:
        return shipped_library()
    return _load_library(paths, *args, **kwargs)
