"""A population run's measure counts in SQL, for every SQL engine (DuckDB's run, Spark's run, the audit over
stored rows): compiled from the one description of the measure steps (engine/ir/measure_steps.py) that the
per-patient engines use too. The SQL is portable (CAST, AND / NOT, identifiers), so one definition serves
every dialect."""
from __future__ import annotations

from dataclasses import dataclass

from engine.engines.sql.compiler import ident, lit, lowered_for
from engine.ir import measure_steps
from engine.language.model import Protocol

# The populations a run counts, as engine.app.audit names them (measure_steps keys -> columns).
COUNTED = {"ip": "initial_population", "den": "denominator", "excl": "exclusions", "num": "numerator", "exc": "exceptions"}
# The column order of the `measures` result table's counts.
COUNT_COLUMNS = ("initial_population", "denominator", "exclusions", "numerator", "exceptions")


@dataclass(frozen=True)
class MeasureSQL:
    """One measure's counts for one patient row, as SQL integer expressions (column -> SQL): 0 / 1 for a
    patient-based measure, the number of the patient's episodes in each population for an episode-based one."""
    measure: str
    basis: str  # patient | episode
    counts: dict  # the COUNTED columns and "cannot_determine"
    counted: str | None = None  # measures with `value:`: SQL for "this patient's value counts" (denominator, not excluded)


def measure_sql(proto: Protocol, part_sql=None) -> list[MeasureSQL]:
    """Each measure's counts per patient row: every population, denominator exceptions included, and for a
    measure counted per episode the sum over its episodes (keys `measure:<id>:<step>#k`, k = 1 ..
    episodes_at_most; an episode counts only from its initial population on, as the evaluator counts it).
    A measure resting on a codelist the site has not supplied counts the patients it leaves undecided in
    `cannot_determine` and in no other column (section 12a), as the evaluator and the live audit do.
    `part_sql(key)` is the SQL for "condition `key` held": by default its boolean column in the compiled
    query; engine/engines/duckdb/audit.py passes a test on the stored fired lists."""
    conds = set(lowered_for(proto).conditions)
    part_sql = part_sql or ident
    out = []
    und = proto.undetermined
    for m in proto.measures:
        key = f"measure:{m.id}"
        steps = measure_steps.steps(m)
        suffixes = [f"#{k}" for k in range(1, m.episodes_at_most + 1)] if m.episode_based else [""]
        counts = {}
        for pop, column in COUNTED.items():
            terms = []
            for sfx in suffixes:
                def col(part, sfx=sfx):
                    k = f"{key}:{part}{sfx}"
                    return part_sql(k) if k in conds else "FALSE"
                terms.append(f"CAST({measure_steps.to_sql(steps[pop], col, m.counts_deceased)} AS INTEGER)")
            counts[column] = " + ".join(terms)

        def held(part):
            return part_sql(f"{key}:{part}") if f"{key}:{part}" in conds else "FALSE"
        counted = None
        if m.has_value:
            counted = (f"({measure_steps.to_sql(steps['den'], held, m.counts_deceased)} "
                       f"AND NOT {measure_steps.to_sql(steps['excl'], held, m.counts_deceased)})")
        counts["cannot_determine"] = "0"
        if key in und:  # a missing codelist: those it leaves undecided are counted apart, never as not met
            blocked = _blocked_sql(m, key, und, conds, part_sql)
            counts = {c: f"(CASE WHEN {blocked} THEN 0 ELSE {sql} END)" for c, sql in counts.items()}
            alive = "TRUE" if m.counts_deceased else "(NOT deceased)"
            counts["cannot_determine"] = f"CAST({alive} AND {blocked} AS INTEGER)"
            if counted is not None:
                counted = f"({counted} AND NOT {blocked})"
        out.append(MeasureSQL(m.id, "episode" if m.episode_based else "patient", counts, counted))
    return out


def _blocked_sql(m, key: str, und: dict, conds: set, part_sql) -> str:
    """SQL for "this patient's result of measure `m` cannot be determined", as the evaluator decides it
    (engine.evaluation.evaluator._measure_blocked): a measure counted per episode, or a step needing a missing
    codelist that the patient reaches (out of a determined initial population or denominator: out, decided, and
    counted in those populations as usual)."""
    if m.episode_based or "population" in und:
        return "TRUE"
    reached = []
    for step in ("ip", "den"):
        k = f"{key}:{step}"
        if k in und:
            break
        reached.append(part_sql(k) if k in conds else "FALSE")
    return "(" + " AND ".join(reached or ["TRUE"]) + ")"


def value_sql(ms: MeasureSQL, values: dict | None) -> str | None:
    """A `value:` measure's number for one patient row where it counts (denominator, not excluded), NULL where
    it is missing (never 0). None when the measure has no compiled value: no `value:`, no value columns given
    (`values`: measure:<id>:value -> (column, presence column or None)), or a value resting on a codelist the
    site has not supplied (not compiled at all: its patients are in cannot_determine)."""
    if ms.counted is None or not values or f"measure:{ms.measure}:value" not in values:
        return None
    col, pcol = values[f"measure:{ms.measure}:value"]
    return f"CASE WHEN {ms.counted}{f' AND {ident(pcol)}' if pcol else ''} THEN CAST({ident(col)} AS DOUBLE) END"


def register_sql(keys: list[str]) -> str:
    """On the register: alive and the protocol's `population` condition held (FALSE without one)."""
    return "(NOT deceased AND \"population\")" if "population" in keys else "FALSE"


def measures_select(proto: Protocol, meta: str, source: str, values: dict | None = None) -> str:
    """The `measures` rows of one (protocol, chunk): per measure, the counts summed by practice / MDT / locality
    over `source` (one row per patient with the condition columns, practice, mdt, locality and deceased), the
    patients whose result cannot be determined, and for a `value:` measure its values added up with the counts
    of patients with a value and with a missing one (NULL for other measures, and without `values`).
    `meta`: the SQL of the leading columns (run, protocol, version, chunk). '' when the protocol counts none."""
    parts = []
    for ms in measure_sql(proto):
        sums = ", ".join(f"CAST(coalesce(sum({ms.counts[c]}), 0) AS BIGINT) AS {c}" for c in COUNT_COLUMNS)
        undetermined = f"CAST(coalesce(sum({ms.counts['cannot_determine']}), 0) AS BIGINT) AS cannot_determine"
        v = value_sql(ms, values)
        value_cols = (f"sum({v}) AS value_sum, CAST(count({v}) AS BIGINT) AS value_patients, "
                      f"CAST(count(CASE WHEN {ms.counted} AND ({v}) IS NULL THEN 1 END) AS BIGINT) AS value_missing"
                      if v else "CAST(NULL AS DOUBLE) AS value_sum, CAST(NULL AS BIGINT) AS value_patients, "
                                "CAST(NULL AS BIGINT) AS value_missing")
        parts.append(f"SELECT {meta}, {lit(ms.measure)} AS measure, practice, mdt, locality, {sums}, "
                     f"{lit(ms.basis)} AS basis, {undetermined}, {value_cols} FROM {source} GROUP BY practice, mdt, locality")
    return " UNION ALL ".join(parts)


def measure_values_select(proto: Protocol, meta: str, source: str, values: dict | None) -> str:
    """The `measure_values` rows of one (protocol, chunk): one per patient counted by a `value:` measure, with
    the number (NULL = missing). '' when the protocol has no compiled value."""
    parts = [f"SELECT {meta}, {lit(ms.measure)} AS measure, nhs_number, practice, mdt, locality, {v} AS value "
             f"FROM {source} WHERE {ms.counted}"
             for ms in measure_sql(proto) if (v := value_sql(ms, values))]
    return " UNION ALL ".join(parts)
