"""Spec tests: the protocol language's semantics, written once and run against every engine.

Every test that takes `engine_name` runs once per engine in ENGINES and must give the same answer
on each. A new engine joins the suite by being registered in engine.evaluation.evaluator.ENGINES.
"""
from __future__ import annotations

import pytest

# The engines every spec test runs on: durable-rules, the plain-Python reference over the same lowered
# conditions, and the DuckDB batch engine (engine/engines/duckdb/batch.py) run over one patient.
from engine.evaluation.evaluator import ENGINES as _REGISTERED  # noqa: E402

ENGINES = list(_REGISTERED)  # durable, python (the reference), batch


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def spec(tmp_path):
    """Build a tiny protocol from parts (see spec_support.protocol_text) and load it."""
    from spec_support import load_spec

    def build(**parts):
        return load_spec(tmp_path, **parts)

    return build
