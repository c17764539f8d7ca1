"""Measures counted per episode evaluated in one query over (patient, episode) rows (engine/engines/sql/episodes.py)
give what the per-episode queries and the per-patient engine give, key for key: two episode measures with
different episodes_at_most, patients with no episode, fewer, exactly as many and more episodes than counted,
a patient under age and one who died."""
from __future__ import annotations

import datetime as dt

from spec_support import fact, load_spec, record

from engine.engines.derive import Context
from engine.engines.duckdb import batch, run
from engine.engines.duckdb.columnar import load_records
from engine.engines.sql import episodes
from engine.evaluation.evaluator import fired_conditions

VS = {"visit": {"codes": ["v1"], "kind": "encounter"}, "call": {"codes": ["c1"], "kind": "encounter"},
      "lab": {"codes": ["l1"], "unit": "mmol/L"}, "y": ["y1"], "reasons": ["r1"]}
MEASURES = """  - id: e
    title: E
    episodes: visit where kind = "encounter" during period
    episodes_at_most: 3
    initial_population: age >= 18
    exclusions: [y starts on or before (episode - 1 day) exists]
    exceptions: [reasons within 0 days after episode exists]
    numerator: latest(lab during episode).value < 5 mmol/L
  - id: f
    title: F
    episodes: call during period
    episodes_at_most: 1
    initial_population: age >= 18
    numerator: lab within 7 days after episode exists
  - id: p
    title: P
    initial_population: age >= 18
    numerator: lab during period exists
"""
AS_OF = dt.date(2025, 6, 15)


def _records():
    def visits(n, month=1):
        return [fact("v1", f"2025-{month + i:02d}-03T08:00", end=f"2025-{month + i:02d}-03T09:00", kind="encounter")
                for i in range(n)]
    return [
        record(n=1),  # no episode
        record(*visits(1), fact("l1", "2025-01-03T08:30", 4.0, "mmol/L"), n=2),
        record(*visits(2), fact("l1", "2025-02-03T08:30", 6.0, "mmol/L"), fact("r1", "2025-01-03T10:00"), n=3),
        record(*visits(3), fact("y1", "2025-02-10"), fact("c1", "2025-03-01", kind="encounter"),
               fact("c1", "2025-04-01", kind="encounter"), fact("l1", "2025-03-05", 3.0, "mmol/L"), n=4),
        record(*visits(5), fact("l1", "2025-05-03T08:10", 4.5, "mmol/L"), n=5),  # more episodes than counted
        record(*visits(2), birth="2015-01-01", n=6),  # under 18
        record(*visits(2), fact("l1", "2025-01-03T08:30", 4.0, "mmol/L"), death="2025-03-01", n=7),
    ]


def test_episode_rows_fire_what_the_per_episode_queries_and_the_per_patient_engine_fire(tmp_path):
    proto = load_spec(tmp_path, valuesets=VS, measures=MEASURES, period="12 months")
    plan = episodes.plan(proto)
    assert plan is not None and plan.at_most == (3, 1) and len(plan.keys) == 8  # e: ip den num excl exc; f: ip den num
    recs = _records()
    ctx = Context.as_of(AS_OF, proto.period, None)
    con = batch.connect(threads=1)
    try:
        load_records(con, recs)
        rows = batch.fired_by_patient(con, proto, AS_OF)  # (patient, episode) rows
        per_episode = {n: v[0] for n, v in batch.results_by_patient(con, proto, AS_OF).items()}  # one query per episode
        sql, keys, drop, _ = run.patient_columns(con, proto, AS_OF, None, batch.default_tables())  # the population run's
        assert keys == [k for g in batch.condition_groups(proto) for k in g]
        got = con.execute(f"SELECT nhs_number, {', '.join(batch.ident(k) for k in keys)} FROM ({sql})").fetchall()
        by_run = {r[0]: {k for k, v in zip(keys, r[1:]) if v} for r in got}
    finally:
        con.close()
    assert len(rows) == len(per_episode) == len(by_run) == len(recs)
    for rec in recs:
        want, _ = fired_conditions(rec, proto, ctx, "python")
        n = rec.patient.nhs_number
        assert rows[n] == per_episode[n] == by_run[n] == want, n
    fired = set().union(*rows.values())
    # the cases reach what they are here for: a third episode, the cap, an exception, an exclusion, the 2nd list
    assert {"measure:e:ip#3", "measure:e:episodes_over", "measure:e:exc#1", "measure:e:excl#3", "measure:e:num#1",
            "measure:f:ip#1", "measure:f:num#1", "measure:e:den#2"} <= fired


def test_a_protocol_without_episodes_has_no_plan(tmp_path):
    proto = load_spec(tmp_path, valuesets=VS, measures=MEASURES.split("  - id: p\n")[0].split("  - id: e\n")[0]
                      + "  - id: p\n" + MEASURES.split("  - id: p\n")[1])
    assert episodes.plan(proto) is None
