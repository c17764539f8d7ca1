"""Fixtures of the unit tests (the shared ones are in tests/conftest.py)."""
from __future__ import annotations

import pytest

from tests.unit.cached import cached_load_library, shipped_library

# Where the code under test looks load_library up (module attributes; cli.authoring and registry_load import it
# inside their functions, from engine.language.library).
_LOADERS = ("cli.common", "cli.main", "engine.app.conformance", "engine.app.demo", "engine.language.library")


@pytest.fixture
def shipped_library_once(monkeypatch):
    """The shipped protocols/ library, loaded once per test process, also for the code under test (CLI commands,
    the conformance runner, the demo seeding) when it asks for protocols/: loading it costs ~2 s of CPU (8-15 s on
    a loaded machine) each time. Any other folder is still loaded from its files (tests/unit/cached.py)."""
    import importlib

    for name in _LOADERS:
        monkeypatch.setattr(importlib.import_module(name), "load_library", cached_load_library)
    return shipped_library()
