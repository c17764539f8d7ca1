"""Load the perf-reference data (/work/shared/perf-reference: gen_data.py's patients.parquet, facts.parquet) into
carepath's columnar population tables (engine/engines/duckdb/columnar.py: patients, facts, fact_codings, fact_attrs).

Reference rows: patients `pid, dob, sex ('F'/'M')`; facts `pid, kind (dx/obs/med/enc), code (symbolic: DM2, HBA1C,
BP, ...), value, value2 (diastolic for BP), date`. Mapping:

- kind dx -> condition, obs -> observation, med -> medication, enc -> encounter;
- code -> the same symbol in carepath's synthetic code system (benchmarks/perf_reference/perfref-diabetes.yaml
  says so: these are the generator's symbols, not clinical codes);
- a BP fact -> two facts on its date: `BP` with the systolic value, `BP_DIA` with the diastolic (value2);
- date -> `start` (midnight), no end; `seq` = the fact's position in the patient's rows (pid, date, code).

The load is one INSERT ... SELECT per table, all in DuckDB.
"""
from __future__ import annotations

from pathlib import Path

from engine.engines.duckdb.columnar import create_empty

SYNTHETIC = "https://carepath.example/CodeSystem/synthetic"
KINDS = {"dx": "condition", "obs": "observation", "med": "medication", "enc": "encounter"}


def load_reference(con, data: Path, n: int | None = None, prefix: str = "") -> tuple[int, int]:
    """Create the four tables (as `<prefix><table>`) from `data`/patients.parquet and facts.parquet, patients
    with pid < n (all when n is None). Returns (patients, facts) loaded."""
    data = Path(data)
    pp, fp = (str(data / "patients.parquet").replace("'", "''"), str(data / "facts.parquet").replace("'", "''"))
    where = f"WHERE pid < {int(n)}" if n is not None else ""
    create_empty(con, prefix)
    con.execute(f"""INSERT INTO "{prefix}patients"
        SELECT pid, lpad(CAST(pid AS VARCHAR), 10, '0'), dob, CASE sex WHEN 'F' THEN 'female' ELSE 'male' END,
               'PERFREF', NULL, NULL, NULL, NULL
        FROM read_parquet('{pp}') {where}""")
    kind = "CASE kind " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in KINDS.items()) + " END"
    con.execute(f"""INSERT INTO "{prefix}facts"
        WITH f AS (
          SELECT pid, kind, code, value, date FROM read_parquet('{fp}') {where}
          UNION ALL
          SELECT pid, kind, 'BP_DIA', value2, date FROM read_parquet('{fp}')
          {where + ' AND' if where else 'WHERE'} code = 'BP')
        SELECT pid, CAST(row_number() OVER (PARTITION BY pid ORDER BY date, code) - 1 AS INTEGER), NULL,
               {kind}, '{SYNTHETIC}', code, CAST(date AS TIMESTAMP), NULL, value, NULL, NULL, 'perf-reference',
               'gp', NULL
        FROM f""")
    pats = con.execute(f'SELECT count(*) FROM "{prefix}patients"').fetchone()[0]
    facts = con.execute(f'SELECT count(*) FROM "{prefix}facts"').fetchone()[0]
    return pats, facts
