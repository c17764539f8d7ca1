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
    counts: dict


def measure_sql(proto: Protocol, part_sql=None) -> list[MeasureSQL]:
    """Each measure's counts per patient row: every population, denominator exceptions included, and for a
    measure counted per episode the sum over its episodes (keys `measure:<id>:<step>#k`, k = 1 ..
    episodes_at_most; an episode counts only from its initial population on, as the evaluator counts it).
    `part_sql(key)` is the SQL for "condition `key` held": by default its boolean column in the compiled
    query; engine/engines/duckdb/audit.py passes a test on the stored fired lists."""
    conds = set(lowered_for(proto).conditions)
    part_sql = part_sql or ident
    out = []
    for m in proto.measures:
        key = f"measure:{m.id}"
        if key in proto.undetermined:  # a missing codelist: left out (listed in the run summary), never counted as not met
            continue
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
        out.append(MeasureSQL(m.id, "episode" if m.episode_based else "patient", counts))
    return out


def register_sql(keys: list[str]) -> str:
    """On the register: alive and the protocol's `population` condition held (FALSE without one)."""
    return "(NOT deceased AND \"population\")" if "population" in keys else "FALSE"


def measures_select(proto: Protocol, meta: str, source: str) -> str:
    """The `measures` rows of one (protocol, chunk): per measure, the counts summed by practice / MDT / locality
    over `source` (one row per patient with the condition columns, practice, mdt, locality and deceased).
    `meta`: the SQL of the leading columns (run, protocol, version, chunk). '' when the protocol counts none."""
    parts = []
    for ms in measure_sql(proto):
        sums = ", ".join(f"CAST(coalesce(sum({ms.counts[c]}), 0) AS BIGINT) AS {c}" for c in COUNT_COLUMNS)
        parts.append(f"SELECT {meta}, {lit(ms.measure)} AS measure, practice, mdt, locality, {sums}, "
                     f"{lit(ms.basis)} AS basis FROM {source} GROUP BY practice, mdt, locality")
    return " UNION ALL ".join(parts)
