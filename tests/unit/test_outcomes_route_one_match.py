"""The outcome route matches each chunk's facts to the value sets once for all its months
(engine/app/outcomes/protocol_route.py: _match_chunk, each month reading the rows started by its own end) instead
of once a month. The outcome table must be the one the month-by-month matching gives, cell by cell: person-time,
every outcome's counts, the practices and the outcome that cannot be counted (A&E, its cluster not supplied)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.app.outcomes import protocol_route
from engine.language.loader import load_protocol
from engine.synthetic.generate import write_population
from engine.synthetic.outcomes import OutcomeModel

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 30)


def _cells(t):
    return {k: (c.person_years, c.counts) for k, c in t.cells.items()}


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pop")
    write_population(folder, 300, seed=31, as_of=AS_OF, workers=1, outcomes=OutcomeModel())
    return folder, load_protocol(ROOT / "protocols" / "pilot-outcomes.yaml")


def test_one_matching_pass_per_chunk_gives_the_month_by_month_table(population, monkeypatch):
    folder, proto = population
    # 2 chunks; 4 months: the first three months' queries read a pass holding facts dated after their end
    once = protocol_route.from_population(folder, proto, AS_OF, months=4, chunk_size=160)
    monkeypatch.setattr(protocol_route, "_match_chunk", lambda *a: None)  # each month matches the facts itself
    monthly = protocol_route.from_population(folder, proto, AS_OF, months=4, chunk_size=160)
    assert once.months == monthly.months and len(once.months) == 4
    assert once.people == monthly.people == 300
    assert once.units == monthly.units
    assert _cells(once) == _cells(monthly)
    assert sum(sum(c.counts["emergency_admission"]) for c in once.cells.values()) > 0  # something was counted
    assert sum(sum(c.counts["bed_days"]) for c in once.cells.values()) > 0
    assert "AE_ATTENDANCE" in once.unavailable["ae_attendance"] and once.unavailable == monthly.unavailable
    assert not any(any(c.counts["ae_attendance"]) for c in once.cells.values())


def test_a_months_rows_of_the_one_pass_are_its_own_matching_pass(population):
    """Per month, the rows taken from the chunk's pass (made as of the last month's end) are exactly those the
    month's own pass makes as of its end: facts started after it are left out."""
    from engine.engines.duckdb import batch
    from engine.engines.duckdb import run as population_run

    folder, proto = population
    con = population_run.open_population(folder, threads=1)
    try:
        population_run.load_chunk(con, 0, 10_000)
        tables = batch.default_tables(population_run.CHUNK_PREFIX)
        shared = protocol_route._match_chunk(con, proto, AS_OF)
        first, last = dt.date(2026, 8, 1), dt.date(2026, 8, 31)
        own = batch.prepare(con, proto, last, first, tables)  # the month's own pass, into own.vsm_table
        took = protocol_route._MatchedUpTo(shared, last).protocol_sql(proto, own.matched)
        later = con.execute(f"SELECT count(*) FROM {shared.vsm_table} WHERE day > DATE '2026-08-31'").fetchone()[0]
        assert later > 0  # the pass holds facts the month must not see
        for a, b in ((own.vsm_table, f"({took})"), (f"({took})", own.vsm_table)):
            assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0] == 0
        assert con.execute(f"SELECT count(*) FROM {own.vsm_table}").fetchone()[0] > 0
    finally:
        con.close()
