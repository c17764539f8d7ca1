"""Things many tests build the same way, built once per test process (test speed only, never behaviour).

- `shipped_library()`: `load_library([ROOT / "protocols"])` — 8-15 s a call on a loaded 2-core machine (ruamel
  reads every protocol file with its comments). The tests that take it never change it.
- `generated(n, seed, as_of, outcomes=False)`: the generator's first n people as PatientRecords (a tuple). A
  person does not depend on where the stream starts (test_population.test_reproducible_and_seeded), so a
  shorter list is the start of a longer one and both are cut from one cached stream. The records are shared:
  a test that changes one (or hands them to code that does) takes `copies(...)`.
- `population(n, seed, as_of, outcomes=False)`: write_population's Parquet folder of the same people, written
  once. Read only: a run over it must store its results elsewhere (`results=`), since evaluate_population_run's
  default is a results.duckdb inside the folder and a second run there is skipped.

Under pytest-xdist each worker process has its own caches.
"""
from __future__ import annotations

import atexit
import datetime as dt
import shutil
import tempfile
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


_streams: dict[tuple, list] = {}


def generated(n: int, seed: int, as_of: dt.date, outcomes: bool = False) -> tuple:
    """People 0 .. n-1 of generate(seed, as_of) (with OutcomeModel() when `outcomes`)."""
    from engine.synthetic.generate import generate

    key = (seed, as_of, outcomes)
    have = _streams.setdefault(key, [])
    if len(have) < n:
        from engine.synthetic.outcomes import OutcomeModel

        have.extend(generate(n - len(have), seed=seed, as_of=as_of, start=len(have),
                             outcomes=OutcomeModel() if outcomes else None))
    return tuple(have[:n])


def copies(records) -> list:
    return [r.model_copy(deep=True) for r in records]


_folder: list[Path] = []


def _root() -> Path:
    if not _folder:
        _folder.append(Path(tempfile.mkdtemp(prefix="carepath-test-populations-")))
        atexit.register(shutil.rmtree, _folder[0], True)
    return _folder[0]


@lru_cache(maxsize=None)
def population(n: int, seed: int, as_of: dt.date, outcomes: bool = False) -> Path:
    """A Parquet population folder (write_population, one worker) of people 0 .. n-1; read only."""
    from engine.synthetic.generate import write_population
    from engine.synthetic.outcomes import OutcomeModel

    out = _root() / f"pop-{n}-{seed}-{as_of.isoformat()}{'-outcomes' if outcomes else ''}"
    write_population(out, n, seed=seed, as_of=as_of, workers=1, outcomes=OutcomeModel() if outcomes else None)
    return out
