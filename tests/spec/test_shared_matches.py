"""One value-set matching pass per chunk for every protocol (engine/engines/sql/shared_matches.py) gives what
each protocol's own pass gives: every protocol version in the library, on the generator's first patients,
one shared pass for all of them (versions whose lists share names but not codes included)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.engines.duckdb import batch
from engine.engines.duckdb.columnar import load_records
from engine.engines.sql.compiler import carried_columns, condition_groups
from engine.engines.sql.shared_matches import valueset_id
from engine.language.library import load_library

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 300
REF = dt.date(2026, 3, 31)
LIB = load_library([ROOT / "protocols"]).protocols
NEWEST_T2DM = max((p for p in LIB if p.id == "t2dm-annual-care"), key=lambda p: tuple(map(int, p.version.split(".")))).key


@pytest.fixture(scope="module")
def con():
    from engine.synthetic.generate import generate

    c = batch.connect(threads=2)
    load_records(c, list(generate(PATIENTS, seed=7, as_of=REF)))
    shared = batch.create_shared(c, LIB, REF)
    yield c, shared
    c.close()


@pytest.mark.parametrize("proto", LIB, ids=lambda p: p.key)
def test_shared_pass_gives_each_protocol_its_own_matched_rows(con, proto):
    """The rows a protocol's queries read (its matched-facts table), condition group by group: identical from
    the shared pass and from the protocol's own pass, and not empty."""
    c, shared = con
    matched = 0
    for group in condition_groups(proto):
        rows = []
        for sh in (None, shared):
            compiled = batch.prepare(c, proto, REF, keys=group, shared=sh)
            rows.append(sorted(c.execute(f"SELECT * FROM {compiled.vsm_table}").fetchall(), key=repr))
        assert rows[0] == rows[1]
        matched += len(rows[0])
    assert matched > PATIENTS // 10


@pytest.mark.parametrize("key", [NEWEST_T2DM, "depression@1.1.0"])
def test_shared_pass_gives_each_protocols_own_results(con, key):
    """And so the same fired conditions and summary facts, patient by patient (every protocol in force goes
    through the shared pass in the population-run tests, tests/unit/test_population.py)."""
    c, shared = con
    proto = next(p for p in LIB if p.key == key)
    want = batch.results_by_patient(c, proto, REF)
    got = batch.results_by_patient(c, proto, REF, shared=shared)
    assert len(want) == PATIENTS and got == want
    assert sum(1 for f, _ in want.values() if f) >= PATIENTS // 100


def test_value_sets_are_shared_by_content_not_by_name(con):
    _, shared = con
    ids = {(p.ruleset_name, n): shared.ids[p.ruleset_name][n] for p in LIB for n in shared.ids[p.ruleset_name]}
    assert len(set(ids.values())) < len(ids)  # versions of a pathway share lists: one pass matches each once
    t2dm = {p.version: p for p in LIB if p.id == "t2dm-annual-care"}
    # the same name with other codes in two versions is two lists (1.2.0 replaced made-up codes)
    differ = [n for n in t2dm["1.0.0"].valuesets if n in t2dm["1.2.0"].valuesets
              and t2dm["1.0.0"].valuesets[n].codes != t2dm["1.2.0"].valuesets[n].codes]
    assert differ
    assert valueset_id(t2dm["1.0.0"].valuesets[differ[0]]) != valueset_id(t2dm["1.2.0"].valuesets[differ[0]])


def test_where_on_a_facts_own_column_reads_the_matched_row_not_the_facts(con):
    """`where kind / status ...` (every eCQM query has dozens) is a test of the event row's own column: the
    matched rows carry the columns those tests read (compiler.carried_columns), from the shared pass as from
    the protocol's own; no `where` step joins the facts again."""
    c, shared = con
    proto = next(p for p in LIB if p.id == "ecqm-cms165-controlling-high-blood-pressure")
    assert carried_columns(proto) == ("status", "kind")
    for sh in (None, shared):
        compiled = batch.prepare(c, proto, REF, shared=sh)
        cols = [r[0] for r in c.execute(f"DESCRIBE {compiled.vsm_table}").fetchall()]
        assert cols[-2:] == ["status", "kind"]
        wheres = [sql for name, sql in compiled.ctes if name.startswith("whr")]
        assert sum("coalesce(s.kind " in sql or "coalesce(s.status " in sql for sql in wheres) > 5
        assert not [sql for sql in wheres if "JOIN " + batch.default_tables()["facts"] in sql]
