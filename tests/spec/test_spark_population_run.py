"""`carepath evaluate-population --engine spark` writes the result tables of the DuckDB run — fired, measures,
measure_values, registers — with the same rows, on the same Parquet population; and a run resumes per (protocol, chunk).

Protocols: atrial fibrillation (measures with denominator exceptions, a register; a small query, so the test
stays within CI's Spark budget), and the eCQM blood-pressure screening measure counted per episode (condition
groups joined on pid) cut to 1 episode (2 groups) for the same reason; and the pilot's outcome measures (`value:`:
admissions, bed days — the value columns of the measures rows, which the Spark run once left NULL, and the
per-person measure_values rows, which it once did not write). The diabetes pathway, Spark's largest query, is compared patient by patient in test_spark_equivalence.py."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from engine.engines.duckdb.run import evaluate_population_run
from engine.engines.spark.run import RESULT_TABLES, evaluate_population_spark
from engine.language.library import load_library
from engine.language.loader import load_protocol
from engine.synthetic.generate import write_population

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 20)
PATIENTS = 120
COLS = {"fired": "run, protocol, version, chunk, nhs_number, practice, deceased, list_sort(fired)",
        "measures": "run, protocol, version, chunk, measure, practice, mdt, locality, initial_population, denominator, "
                    "exclusions, numerator, exceptions, basis, cannot_determine, value_sum, value_patients, value_missing",
        "measure_values": "run, protocol, version, chunk, measure, nhs_number, practice, mdt, locality, value",
        "registers": "run, protocol, version, chunk, practice, patients"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spark-run")
    write_population(tmp / "pop", PATIENTS, seed=5, as_of=AS_OF, workers=1)
    af = next(p for p in load_library([ROOT / "protocols"]).protocols if p.id == "atrial-fibrillation")
    src = (ROOT / "protocols/ecqm/cms22-bp-screening.yaml").read_text(encoding="utf-8")
    assert "episodes_at_most: 12" in src
    (tmp / "cms22.yaml").write_text(src.replace("episodes_at_most: 12", "episodes_at_most: 1"), encoding="utf-8")
    cms22 = load_protocol(tmp / "cms22.yaml", [ROOT / "protocols/ecqm", ROOT / "protocols/ecqm/valuesets"])
    outcomes = next(p for p in load_library([ROOT / "protocols"]).protocols if p.id == "pilot-outcomes")
    protos = [af, cms22, outcomes]
    duck = evaluate_population_run(tmp / "pop", protos, AS_OF, workers=1, chunk_size=60, run="r",
                                   results=tmp / "results.duckdb", log=lambda m: None)
    logs: list[str] = []
    spark = evaluate_population_spark(tmp / "pop", protos, AS_OF, out=tmp / "spark", run="r", chunk_size=60,
                                      log=logs.append)
    return tmp, protos, duck, spark, logs


def _rows(con, table: str, source: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT {COLS[table]} FROM {source}").fetchall(), key=repr)


def test_spark_run_writes_the_duckdb_run_tables_row_for_row(runs):
    tmp, protos, duck, spark, _ = runs
    assert spark["chunks"] == duck["chunks"] == 2 and spark["patients"] == PATIENTS
    con = duckdb.connect(str(tmp / "results.duckdb"), read_only=True)
    for table in RESULT_TABLES:
        want = _rows(con, table, table)
        got = _rows(con, table, f"read_parquet('{tmp}/spark/{table}/*/*/*.parquet', hive_partitioning = false)")
        assert got == want, table
        assert want, table
    con.close()
    # the comparison is not of empty counts: both protocols count patients, cms22 per episode
    counted = {p["protocol"]: p["measures"] for p in duck["protocols"]}
    assert all(sum(m["denominator"] for m in counted[p.key].values()) > 0 for p in protos)
    assert sum(m["numerator"] for p in protos for m in counted[p.key].values()) > 0
    # and of values: the outcome measures add up admissions and bed days (not NULL, not all 0)
    con = duckdb.connect(str(tmp / "results.duckdb"), read_only=True)
    patients, total = con.execute("SELECT sum(value_patients), sum(value_sum) FROM measures "
                                  "WHERE protocol = 'pilot-outcomes'").fetchone()
    assert patients > 0 and total > 0
    con.close()


def test_spark_run_resumes_per_protocol_and_chunk(runs):
    tmp, protos, _, _, _ = runs
    ledger = (tmp / "spark" / "run_chunks.jsonl")
    lines = ledger.read_text().splitlines()
    assert len(lines) == 6  # 3 protocols x 2 chunks
    ledger.write_text("\n".join(lines[:5]) + "\n")  # as if killed before the last (protocol, chunk) was done
    logs: list[str] = []
    again = evaluate_population_spark(tmp / "pop", protos, AS_OF, out=tmp / "spark", run="r", chunk_size=60,
                                      log=logs.append)
    assert [(p["protocol"], p["chunk"]) for p in again["protocols"]] == [(protos[2].key, 1)]
    # chunk 0 whole (not even loaded), then the protocol done in chunk 1
    assert [m for m in logs if "already done" in m] == ["chunk 0: already done in run r, skipped",
                                                       f"{protos[0].key} chunk 1: already done in run r, skipped",
                                                       f"{protos[1].key} chunk 1: already done in run r, skipped"]
    con = duckdb.connect(str(tmp / "results.duckdb"), read_only=True)
    for table in RESULT_TABLES:
        assert _rows(con, table, f"read_parquet('{tmp}/spark/{table}/*/*/*.parquet', hive_partitioning = false)") \
            == _rows(con, table, table), table
    con.close()
