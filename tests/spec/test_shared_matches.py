"""One value-set matching pass per chunk for every protocol (engine/engines/sql/shared_matches.py) gives what
each protocol's own pass gives: every protocol version in the library, on the generator's first patients,
fired conditions and summary facts identical patient by patient (the population run uses the shared pass)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.engines.duckdb import batch
from engine.engines.duckdb.columnar import load_records
from engine.engines.sql.shared_matches import valueset_id
from engine.language.library import load_library

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = 400
REF = dt.date(2026, 3, 31)
LIB = load_library([ROOT / "protocols"]).protocols


@pytest.fixture(scope="module")
def con():
    from engine.synthetic.generate import generate

    c = batch.connect(threads=2)
    load_records(c, list(generate(PATIENTS, seed=7, as_of=REF)))
    shared = batch.create_shared(c, LIB, REF)
    yield c, shared
    c.close()


@pytest.mark.parametrize("proto", LIB, ids=lambda p: p.key)
def test_shared_pass_gives_each_protocols_own_results(con, proto):
    c, shared = con
    want = batch.results_by_patient(c, proto, REF)
    got = batch.results_by_patient(c, proto, REF, shared=shared)
    assert len(want) == PATIENTS and got == want
    assert sum(1 for f, _ in want.values() if f) >= PATIENTS // 100  # it fires: not a comparison of empty sets


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
