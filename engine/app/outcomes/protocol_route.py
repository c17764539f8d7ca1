"""The outcome table from the protocol's outcome measures over a whole population, with the DuckDB batch
engine (issue 19: "the outcome measures run over 750,000 people").

    table = from_population(Path("var/population"), proto, as_of=dt.date(2026, 11, 30), months=12)
    table = from_registry(engine_or_url, proto, as_of)         # the registry's records (the outcomes page)
    table = from_synthetic(3000, seed=1, as_of=..., proto=proto)  # a generated population (`--synthetic`)

This is the one definition of the outcome counts carepath reports (the page, `carepath outcomes report`,
the FHIR series): the protocol's `value:` measures. The registry is read by exporting its records to a
population DuckDB file (engine.app.outcomes.risk_model.registry_population, as the risk-model check does)
and running the same DuckDB route over it. tests/outcomes_reference.py keeps a direct count (records ->
events, no protocol) only as the tests' independent reference.

`proto` is pilot-outcomes (measures `<outcome>-<cohort>` with `value:`). Each reported month is one
measurement period (period start = the month's first day, as-of = its last), as
engine.app.outcomes.table.from_measure_values does per record; here the population is read in chunks of
patients (engine/engines/duckdb/run.py's chunking). Per chunk, its facts are matched to the protocol's value
sets once, as of the last month's end (batch.create_shared, engine/engines/sql/shared_matches.py, the population
run's shared pass); per month the protocol's compiled query runs once, reading the rows of facts started by
the month's end from that pass (_MatchedUpTo: the rows the month's own pass would make, so results are
identical to matching month by month; tests/unit/test_outcomes_route_one_match.py), and its measure values are
summed in SQL by (practice, age band, sex, cohort) — no per-person rows leave DuckDB. Person-time: each person
in a measure's cohort that month (its denominator, not excluded) counts the whole month (people who die in the
month too, as the measure counts them); the age band is the age on the month's last day (as
from_measure_values).

Still one query per month, not one pass for all months: the compiled SQL has the period start and as-of as
constants (cohorts at the period start, windows such as `during period`); a pass over all months at once
would need the compiler to take the period from a joined months table. Cost and measurements: docs/outcomes.md
("The protocol route at population scale").

Definitions (the protocol's, which differ from the tests' direct reference count,
tests/outcomes_reference.py events_and_cohorts):
- cohorts are fixed at each month's start (codes dated before it, age at it), not at the report's as-of date;
  the cohorts are the protocol's (diabetes, 75-plus, frailty, tier-1..3), there is no "all";
- emergency admissions are the GM-SDE emergency admission code set only (the direct reference adds the QOF
  asthma and COPD emergency admission clusters);
- bed days count in the month the stay ENDS (`days of emergency_admission where end exists ends during
  period`), stays not yet ended count nothing; the direct reference counts them in the month of admission,
  up to the as-of date while still in;
- A&E attendances: the protocol declares a cluster the site supplies (AE_ATTENDANCE, LOCAL); until it is
  supplied the A&E measures cannot be determined and the outcome is listed in `unavailable` (never 0, and
  no code is put in its place; the direct reference uses SNOMED CT 4525004);
- person-time: the whole month for everyone alive at its start (registration dates are not read); the
  direct reference counts days registered and alive.
"""
from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from engine.app.outcomes.table import (AGE_EDGES, MEASURE_OUTCOMES, OutcomeTable, _next_month)
from engine.engines.duckdb import batch
from engine.engines.duckdb import run as population_run
from engine.engines.duckdb.run import balanced_chunk, open_population
from engine.engines.sql import measures as sql_measures
from engine.language.model import Protocol


def split_measure(measure: str) -> tuple[str | None, str]:
    """'admissions-75-plus' -> ('emergency_admission', '75-plus'); (None, ...) for other measures."""
    for prefix, outcome in sorted(MEASURE_OUTCOMES.items(), key=lambda kv: -len(kv[0])):
        if measure.startswith(prefix + "-"):
            return outcome, measure[len(prefix) + 1:]
    return None, measure


def cohorts_of(proto: Protocol) -> list[str]:
    """The cohorts the protocol's outcome measures name, in their order ('75-plus', 'diabetes', ...)."""
    out: list[str] = []
    for m in proto.measures:
        outcome, cohort = split_measure(m.id)
        if outcome and m.has_value and cohort not in out:
            out.append(cohort)
    return out


def _band_sql(birth: str, on: dt.date) -> str:
    age = (f"({on.year} - year({birth}) - CASE WHEN month({birth}) > {on.month} OR "
           f"(month({birth}) = {on.month} AND day({birth}) > {on.day}) THEN 1 ELSE 0 END)")
    return "CASE " + " ".join(f"WHEN {age} < {e} THEN {i}" for i, e in enumerate(AGE_EDGES)) + f" ELSE {len(AGE_EDGES)} END"


class _MatchedUpTo:
    """One month's matched facts out of the chunk's one matching pass (`shared`, made as of the last month's
    end): the rows of facts started by `ref`, the month's as-of date. The same rows as the month's own pass
    (compiler.matches_sql keeps facts started on or before the reference date; `day` is that start date), so
    results are identical; the chunk's facts are matched to the value sets once, not once a month. Passed to
    population_run.patient_columns as its `shared` (batch.prepare copies the protocol's rows from it)."""

    def __init__(self, shared, ref: dt.date):
        self.shared, self.ref = shared, ref

    def protocol_sql(self, protocol: Protocol, names: list[str]) -> str:
        return f"SELECT * FROM ({self.shared.protocol_sql(protocol, names)}) WHERE day <= {batch.lit(self.ref)}"


def _match_chunk(con, proto: Protocol, last: dt.date):
    """The loaded chunk's facts matched once to the protocol's value sets, as of `last` (the last month's
    end; engine/engines/sql/shared_matches.py, as the population run shares its pass between protocols)."""
    return batch.create_shared(con, [proto], last, None, batch.default_tables(population_run.CHUNK_PREFIX))


def _month_rows(con, proto: Protocol, first: dt.date, last: dt.date, shared=None) -> list[tuple]:
    """(measure, practice, mdt, locality, band, sex, people, value_sum) for one month over the loaded chunk.
    `shared`: the chunk's one matching pass (_match_chunk, as of this month's end or later); without it the
    month's query matches the chunk's facts itself."""
    tables = batch.default_tables(population_run.CHUNK_PREFIX)
    body, _keys, drop, values = population_run.patient_columns(
        con, proto, last, first, tables, _MatchedUpTo(shared, last) if shared is not None else None)
    con.execute(f"CREATE OR REPLACE TEMP TABLE oc_cur AS SELECT o.*, p.practice, p.mdt, p.locality, "
                f"p.birth_date AS oc_birth, p.sex AS oc_sex, "
                f"coalesce(p.death_date <= {batch.lit(last)}, FALSE) AS deceased FROM ({body}) o JOIN {tables['patients']} p USING (pid)")
    parts = []
    band = _band_sql("oc_birth", last)
    for ms in sql_measures.measure_sql(proto):
        v = sql_measures.value_sql(ms, values)  # None: no value, or one resting on a codelist not supplied (A&E)
        if v is None or split_measure(ms.measure)[0] is None:
            continue
        parts.append(f"SELECT {batch.lit(ms.measure)}, practice, mdt, locality, {band}, CAST(oc_sex AS VARCHAR), "
                     f"count(*), sum({v}) FROM oc_cur WHERE {ms.counted} GROUP BY ALL")
    rows = con.execute(" UNION ALL ".join(parts)).fetchall() if parts else []
    con.execute("DROP TABLE oc_cur")
    for t in drop:
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return rows


_JOB: dict = {}  # what forked workers inherit (the protocol need not be pickled)


def _chunk(lo: int, hi: int) -> tuple[int, list, float, float]:
    """In a worker (or in-process): one chunk's rows for every month; (lo, [(month index, rows)], load s, months s)."""
    job = _JOB
    con = job.get("con")
    if con is None:
        con = job["con"] = open_population(job["data"], threads=1, first=job["first"])
    t0 = time.perf_counter()
    population_run.load_chunk(con, lo, hi)
    t1 = time.perf_counter()
    if not job["months"]:
        return lo, [], t1 - t0, 0.0
    shared = _match_chunk(con, job["proto"], max(last for _m, _first, last in job["months"]))
    try:
        out = [(m, _month_rows(con, job["proto"], first, last, shared)) for m, first, last in job["months"]]
    finally:
        if shared is not None:
            batch.drop_shared(con, shared)
    return lo, out, t1 - t0, time.perf_counter() - t1


def _chunk_task(args):
    return _chunk(*args)


def from_population(data: Path, proto: Protocol, as_of: dt.date, months: int | None = None,
                    chunk_size: int | None = None, first: int | None = None, workers: int = 1,
                    log=None) -> OutcomeTable:
    """The outcome table of the population at `data` (a `carepath generate` folder or a population.duckdb)
    from `proto`'s outcome measures, for the complete months before `as_of` (the last `months` of them).
    `workers` > 1: chunks in forked worker processes (one DuckDB thread each), as evaluate-population. `chunk_size`:
    patients per chunk (None: equal chunks on the workers, as evaluate-population: run.balanced_chunk)."""
    from multiprocessing import get_context

    t = OutcomeTable(as_of, source=f"protocol measures {proto.id}@{proto.version} (DuckDB batch engine)")
    keep = list(range(len(t.months) - months if months else 0, len(t.months)))
    for m in proto.measures:  # declared clusters not supplied: the outcome cannot be determined, never 0
        outcome, _ = split_measure(m.id)
        key = f"measure:{m.id}"
        if outcome and m.has_value and key in proto.undetermined:
            t.unavailable[outcome] = "codelist not supplied: " + ", ".join(proto.undetermined[key])
    con = open_population(Path(data), threads=1, first=first)
    lo_pid, hi_pid, t.people = con.execute("SELECT coalesce(min(pid), 0), coalesce(max(pid), -1), count(*) "
                                            "FROM patients").fetchone()
    con.close()
    t.timings = {"load_seconds": 0.0, "month_seconds": 0.0}
    bounds = [(m, t.months[m], _next_month(t.months[m]) - dt.timedelta(days=1)) for m in keep]
    chunk_size = chunk_size or balanced_chunk(hi_pid - lo_pid + 1, workers)
    tasks = [(lo, lo + chunk_size) for lo in range(lo_pid, hi_pid + 1, chunk_size)]
    _JOB.clear()
    _JOB.update(data=Path(data), first=first, proto=proto, months=bounds)
    pool = get_context("fork").Pool(min(workers, len(tasks))) if workers > 1 and len(tasks) > 1 else None
    try:
        results = pool.imap_unordered(_chunk_task, tasks) if pool else map(_chunk_task, tasks)
        for lo, per_month, load_s, month_s in results:
            t.timings["load_seconds"] += load_s
            t.timings["month_seconds"] += month_s
            for m, rows in per_month:
                start, end = t.months[m], _next_month(t.months[m]) - dt.timedelta(days=1)
                years = ((end - start).days + 1) / 365.25
                for measure, practice, mdt, locality, b, sex, people, vsum in rows:
                    if not practice:
                        continue
                    outcome, cohort = split_measure(measure)
                    t.units.setdefault(practice, (mdt or "unknown", locality or "unknown"))
                    sex = sex if sex in ("female", "male") else "other"
                    cell = t._cell((practice, b, sex, cohort))
                    if outcome == "emergency_admission":  # person-time once per cohort (every cohort has it)
                        cell.person_years[m] += people * years
                    if vsum is not None:
                        cell.counts[outcome][m] += vsum
            if log:
                log(f"people {lo}-{min(lo + chunk_size, hi_pid + 1) - 1}: {len(keep)} months done")
    finally:
        if pool:
            pool.terminate()
            pool.join()
        c = _JOB.pop("con", None)
        if c is not None:
            c.close()
        _JOB.clear()
    return t.keep_last(months).finish()


def from_registry(engine_or_url, proto: Protocol, as_of: dt.date, months: int | None = None,
                  log=None) -> OutcomeTable:
    """The outcome table of the registry's records (every patient, as stored) by the protocol route: the
    records are exported to a temporary population DuckDB file and from_population runs over it."""
    from engine.app.outcomes.risk_model import registry_population

    with tempfile.TemporaryDirectory(prefix="carepath-outcomes-") as tmp:
        data = registry_population(engine_or_url, Path(tmp) / "population.duckdb")
        t = from_population(data, proto, as_of, months=months, log=log)
    t.source = f"registry; {t.source}"
    return t


def from_synthetic(n: int, seed: int, as_of: dt.date, proto: Protocol, model=None, months: int | None = None,
                   workers: int = 1, log=None) -> OutcomeTable:
    """The outcome table of a generated population of `n` people (records with hospital care from the
    synthetic hazard model `model`, e.g. with a planted effect) by the protocol route."""
    from engine.synthetic.generate import write_population
    from engine.synthetic.outcomes import OutcomeModel

    with tempfile.TemporaryDirectory(prefix="carepath-outcomes-") as tmp:
        write_population(Path(tmp), n, seed=seed, as_of=as_of, workers=1, outcomes=model or OutcomeModel())
        t = from_population(Path(tmp), proto, as_of, months=months, workers=workers, log=log)
    t.source = f"synthetic population: {n} people, seed {seed}; {t.source}"
    return t
