"""The durable-rules memory benchmark at a tiny scale: it runs, agrees with both references, reports memory."""
from __future__ import annotations

import datetime as dt

from benchmarks.bench_durable import growth, run
from engine.synthetic.generate import write_population


def test_growth_is_measured_from_the_ten_percent_point():
    s = [(0, 50.0, 40.0), (500, 58.0, 48.0), (1000, 60.0, 50.0), (2000, 61.0, 51.0), (10000, 62.5, 52.0)]
    g = growth(s)
    assert (g["rss_10pct_mib"], g["rss_end_mib"], g["growth_mib"], g["from_evaluation"]) == (60.0, 62.5, 2.5, 1000)


def test_tiny_benchmark(tmp_path):
    as_of = dt.date(2026, 11, 20)
    write_population(tmp_path / "pop", 150, seed=3, as_of=as_of, workers=1)
    out = run(evaluations=2500, patients=150, seed=3, as_of=as_of, protocols=["t2dm-annual-care", "hypertension"],
              chunk_size=100, sample_every=200, data_dir=tmp_path / "pop", write=False)
    assert out["evaluations_done"] == 2500 and out["failures"] == 0 and out["worker_deaths"] == []
    assert out["reference_mismatches"] == 0 and out["batch_mismatches"] == 0
    assert [p["evaluations"] for p in out["protocols"]] == [1250, 1250]  # cycling over the 150 patients
    assert len(out["memory"]) == 2 and out["verdict"] in ("flat", "growing")
    assert all(len(series) >= 5 for series in out["rss_series"].values())
