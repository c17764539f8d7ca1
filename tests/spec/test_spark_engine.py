"""The Spark engine (engine/engines/spark/) on a stated subset of the shared spec suite.

Spark plans and runs a job per query part (~1 s of fixed cost per query on 2 cores), so the whole spec suite
per patient would not fit CI's time; the engine is therefore not in evaluator.ENGINES. This module re-runs,
on Spark, the spec tests that exercise every place where the Spark SQL dialect (engine/engines/spark/dialect.py)
spells something differently from DuckDB: month arithmetic and its clamping (add_months), the leap day, per-
patient date shifts, QUALIFY (union, nth, first coded value), DISTINCT ON, struct-ordered arg_min / min_by
(latest / earliest ties, count distinct by first coding), Python's '%g' (result text), infinities in
functions, casts to text. The generator's first 2,000 patients: tests/spec/test_spark_equivalence.py.
"""
from __future__ import annotations

import pytest

from engine.engines import spark as spark_engine
from engine.evaluation import evaluator

from test_ecqm_constructs import (  # noqa: F401  (collected again here, on Spark)
    test_result_text_can_be_compared,
    test_union_counts_each_fact_once_and_picks_across_lists,
)
from test_spec_aggregates import (  # noqa: F401
    test_latest_and_earliest_pick_by_date,
    test_latest_on_a_day_with_several_values_picks_the_lowest,
    three_readings,
)
from test_spec_counts_and_scores import test_distinct_codes_of_every_fact_of_a_kind  # noqa: F401
from test_spec_measure_values import (  # noqa: F401  (measure values: date differences and shifts in Spark SQL)
    test_bed_days_add_up_lengths_of_stay,
    test_readmission_is_an_admission_after_a_discharge_within_30_days,
    test_value_is_counted_for_the_denominator,
)
from test_spec_order_and_age import test_age_of_someone_born_on_a_leap_day  # noqa: F401
from test_spec_units import test_lowest_of_the_day_is_chosen_after_conversion  # noqa: F401
from test_spec_wave2 import test_scalar_functions as _scalar_functions
from test_spec_wave2 import test_where_result_exists_for_every_result_type as _result_exists
from test_spec_windows import (  # noqa: F401
    test_leap_day_reference,
    test_month_arithmetic_clamps_to_month_end,
    test_within_after_in_months_clamps,
)


@pytest.fixture
def engine_name(monkeypatch) -> str:
    """Every imported spec test runs on Spark only (the other engines run them in their own modules)."""
    monkeypatch.setitem(evaluator.ENGINES, "spark", spark_engine.fired)
    return "spark"


def test_functions_with_an_infinite_result_are_missing(spec, engine_name):
    _scalar_functions(spec, engine_name, "greatest(latest(lab).value, latest(x).value) exists", False)
    _scalar_functions(spec, engine_name, "power(latest(lab).value / (1 mmol/L), 10) = 1024", True)


def test_result_exists_for_a_text_attribute(spec, engine_name):
    _result_exists(spec, engine_name, {"value_string": "positive"}, True)
    _result_exists(spec, engine_name, {"value_string": ""}, False)


def test_the_spark_dialect_is_used():
    """Not DuckDB's SQL under another name: the Spark query has no QUALIFY / DISTINCT ON / arg_min."""
    import datetime as dt
    from pathlib import Path

    from engine.engines.derive import Context
    from engine.engines.spark.dialect import SPARK
    from engine.engines.sql.compiler import compile_protocol
    from engine.language.library import load_library

    lib = load_library([Path(__file__).resolve().parents[2] / "protocols"])
    duck_all, spark_all = "", ""
    for proto in lib.protocols:
        ctx = Context.as_of(dt.date(2026, 3, 31), proto.period)
        duck, spark = compile_protocol(proto, ctx), compile_protocol(proto, ctx, dialect=SPARK)
        duck_all += duck.sql + duck.vsm_sql
        spark_all += spark.sql + spark.vsm_sql
    for word in ("QUALIFY", "arg_min(", "MATERIALIZED", "INTERVAL", "epoch_us", "date_diff"):
        assert word in duck_all, word
        assert word not in spark_all, word
    assert "DISTINCT ON" not in spark_all  # neither dialect writes it since the matching pass's distinct keys (q8)
    assert "min_by(" in spark_all and "named_struct(" in spark_all


def test_a_machine_without_java_gets_a_clear_error(monkeypatch):
    """No JAVA_HOME and no `java` on PATH: the engine says what to install instead of failing inside Spark."""
    from engine.engines.spark import session

    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(session.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="openjdk-17-jre-headless"):
        session.ensure_java()


def test_the_java_the_engine_uses_runs():
    import subprocess

    from engine.engines.spark import session

    home = session.ensure_java()
    java = (home + "/bin/java") if home else session.shutil.which("java")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and any(f'version "{v}.' in out.stderr for v in ("17", "21")), out.stderr
