"""One description of the measure steps (engine/ir/measure_steps.py), two compilations: the per-patient
engines evaluate it in Python, the batch engine in SQL. They must agree for every measure of every
protocol in the library, on every combination of parts that held, for the living and the dead."""
from __future__ import annotations

import itertools
from pathlib import Path

import duckdb
import pytest

from engine.ir import measure_steps
from tests.unit.cached import shipped_library

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = shipped_library()
MEASURES = [(p, m) for p in LIBRARY.protocols for m in p.measures]


def test_the_library_has_measures_of_every_kind():
    assert len(MEASURES) > 20
    assert any(m.achievers_kept for _, m in MEASURES) and any(not m.achievers_kept for _, m in MEASURES)
    assert any(m.has_exceptions for _, m in MEASURES)


@pytest.mark.parametrize("proto,measure", MEASURES, ids=[f"{p.key}:{m.id}" for p, m in MEASURES])
def test_python_and_sql_agree(proto, measure):
    con = duckdb.connect()
    key = f"measure:{measure.id}"
    steps = measure_steps.steps(measure)
    cases = list(itertools.product([False, True], repeat=len(measure_steps.PARTS) + 1))
    cols = ", ".join(f'CAST(? AS BOOLEAN) AS "{p}"' for p in measure_steps.PARTS) + ", CAST(? AS BOOLEAN) AS deceased"
    sql = ", ".join(measure_steps.to_sql(e, lambda part: f'"{part}"', measure.counts_deceased) for e in steps.values())
    seen = set()
    for values in cases:
        *parts, deceased = values
        fired = {f"{key}:{p}" for p, v in zip(measure_steps.PARTS, parts) if v}
        py = measure_steps.populations(measure, fired, key, deceased=deceased)
        row = con.execute(f"SELECT {sql} FROM (SELECT {cols})", list(values)).fetchone()
        assert dict(zip(steps, row)) == py, (values, py, row)
        seen.add(tuple(py.values()))
    assert len(seen) >= 5  # the cascade really distinguishes the populations


def test_the_cascade():
    """The eCQM / QOF rules themselves, on a plain measure and a QOF one (achievers kept)."""
    plain = next(m for _, m in MEASURES if not m.achievers_kept and not m.counts_deceased)
    qof = next(m for _, m in MEASURES if m.achievers_kept and not m.counts_deceased)
    k = "measure:x"
    both = {f"{k}:ip", f"{k}:den", f"{k}:num", f"{k}:excl"}
    assert measure_steps.populations(plain, both, k)["excl"] is True      # eCQM: excluded even if met
    assert measure_steps.populations(plain, both, k)["num"] is False
    assert measure_steps.populations(qof, both, k)["excl"] is False       # QOF: an achiever is never excluded
    assert measure_steps.populations(qof, both, k)["num"] is True
    assert measure_steps.populations(plain, {f"{k}:ip", f"{k}:den", f"{k}:exc"}, k)["exc"] is True
    assert measure_steps.populations(plain, {f"{k}:ip", f"{k}:den", f"{k}:num", f"{k}:exc"}, k)["exc"] is False
    assert measure_steps.populations(plain, {f"{k}:ip", f"{k}:den"}, k, deceased=True)["ip"] is False
