"""Outcome values (issue 19): the pilot-outcomes protocol's numbers per person from the per-patient engines
(engine/app/outcomes/values.py) equal the DuckDB population run's (measures.value_*, measure_values)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from engine.app.outcomes.values import outcome_measures, person_values, rate_per_1000_per_year, value_rows
from engine.language.loader import load_protocol
from engine.synthetic.generate import generate, write_population

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 30)


@pytest.fixture(scope="module")
def outcomes():
    return load_protocol(ROOT / "protocols" / "pilot-outcomes.yaml")


def test_population_run_stores_the_values_the_per_patient_engine_gives(tmp_path, outcomes):
    import duckdb

    from engine.engines.duckdb.run import evaluate_population_run

    n = 300
    write_population(tmp_path / "pop", n, seed=19, as_of=AS_OF, workers=1)
    summary = evaluate_population_run(tmp_path / "pop", [outcomes], AS_OF, workers=1, log=lambda m: None)
    con = duckdb.connect(summary["results"], read_only=True)
    stored = {(nhs, m): v for nhs, m, v in con.execute("SELECT nhs_number, measure, value FROM measure_values").fetchall()}
    sums = {m: (s, c, x) for m, s, c, x in con.execute(
        "SELECT measure, sum(value_sum), sum(value_patients), sum(value_missing) FROM measures GROUP BY measure").fetchall()}
    undetermined = dict(con.execute("SELECT measure, sum(cannot_determine) FROM measures GROUP BY measure").fetchall())
    con.close()
    rows = list(value_rows(generate(n, seed=19, as_of=AS_OF), [outcomes], AS_OF))
    want, totals = {}, {}
    for row in rows:
        if row["in_cohort"] and not row["cannot_determine"]:
            want[(row["nhs_number"], row["measure"])] = row["value"]
            t = totals.setdefault(row["measure"], [0.0, 0])
            t[0] += row["value"] or 0.0
            t[1] += row["value"] is not None
    assert stored == want
    assert len(want) > 50 and sum(v for v in want.values() if v) > 0            # people in cohorts, with admissions
    for mid, (total, people) in totals.items():
        s, c, _ = sums[mid]
        assert c == people and (s or 0.0) == pytest.approx(total)
    # A&E: the cluster is not supplied, so no person has an A&E number (cannot determine, never 0): no rows,
    # no sums, and the cohort's people counted apart as the per-patient engine says
    blocked = {}
    for row in rows:
        if row["cannot_determine"]:  # the outcome measures count people who died in the period (counts_deceased)
            blocked[row["measure"]] = blocked.get(row["measure"], 0) + 1
    assert not any(m.startswith("ae-") for _, m in stored) and sums["ae-diabetes"] == (None, None, None)
    assert {m: c for m, c in undetermined.items() if c} == blocked and blocked.get("ae-75-plus")


def test_person_values_api(outcomes):
    rows = list(person_values(generate(120, seed=3, as_of=AS_OF), [outcomes], AS_OF))
    assert len(rows) == 120
    measures = outcome_measures([outcomes], AS_OF)
    assert len(measures) == 24 and {m.key for m in measures} == set(rows[0].values)
    p = next(r for r in rows if r.values[("pilot-outcomes", "admissions-75-plus")].in_cohort)
    assert p.age >= 75 and p.practice and p.sex in ("female", "male", "other", "unknown")
    ae = p.values[("pilot-outcomes", "ae-75-plus")]
    assert ae.value is None and ae.cannot_determine == ("AE_ATTENDANCE",)
    adm = p.values[("pilot-outcomes", "admissions-75-plus")]
    assert adm.value is not None and "value" in adm.why
    young = next(r for r in rows if r.age < 60 and not r.deceased)
    assert young.values[("pilot-outcomes", "admissions-75-plus")] .value is None


def test_rate_per_1000_per_year():
    assert rate_per_1000_per_year(30, 1000, dt.date(2025, 1, 1), dt.date(2025, 12, 31)) == pytest.approx(30 * 365.25 / 365)
    assert rate_per_1000_per_year(5, 0, dt.date(2025, 1, 1), dt.date(2025, 12, 31)) is None
