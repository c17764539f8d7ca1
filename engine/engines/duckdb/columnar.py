"""The columnar form of patient records: the tables the batch engine (engine/engines/duckdb/batch.py) reads.

A PatientRecord is a patient plus a list of facts; at population scale the same data lives in
four flat tables (DuckDB tables, or Parquet / CSV files with these columns):

    patients      one row per patient               pid, nhs_number, birth_date, sex, practice, ...
    facts         one row per fact                  pid, seq, fid, kind, system, code, start, end,
                                                    value, unit, status, source_system, care_setting, ...
    fact_codings  extra codings of a fact           pid, seq, role ('code' = codes[1:], 'value_code'), pos, system, code
    fact_attrs    a fact's setting-specific extras  pid, seq, key, form, sval, nval, vtype, csys, ccode

`pid` is a dense integer per patient and `seq` the fact's position in `PatientRecord.facts`
(the per-patient deriver breaks full ties by that order). `fact_attrs` holds each attribute in
the shapes derive.py reads it in: form 'c' (values compared with `where field = ...`: dicts
give their `code`, booleans become 'true'/'false'), form 'v' (codings, for `in valueset`) and, for
value_string / value_text / value_boolean, form 'r' (what `E.result` shows: sval = str(raw) when
raw is truthy, ccode = 'true' / 'false' when raw is a boolean).

Rows go through CSV (no numpy / pyarrow needed); DuckDB reads them in parallel and can write
Parquet.
"""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Iterable

from engine.engines.sql.records import (  # noqa: F401  (re-exported)
    NULL, RESULT_KEYS, SCHEMA, TABLES, _cell, attr_rows, patient_row, record_rows,
)
from engine.records.model import PatientRecord


class CsvTables:
    """Appends rows to one CSV file per table (a shard); `paths` maps table -> file."""

    def __init__(self, folder: Path, suffix: str = ""):
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = {t: folder / f"{t}{suffix}.csv" for t in TABLES}
        self._fh = {t: open(p, "w", newline="", encoding="utf-8") for t, p in self.paths.items()}
        self._w = {t: csv.writer(fh, lineterminator="\n") for t, fh in self._fh.items()}

    def write(self, table: str, rows: Iterable[tuple]) -> None:
        self._w[table].writerows([[_cell(v) for v in r] for r in rows])

    def write_encoded(self, table: str, rows: Iterable[tuple]) -> None:
        """Rows whose missing values are already NULL (floats are written as repr, as `write` does)."""
        self._w[table].writerows(rows)

    def add_record(self, pid: int, rec: PatientRecord) -> None:
        prow, facts, codings, attrs = record_rows(pid, rec)
        self.write("patients", [prow])
        self.write("facts", facts)
        if codings:
            self.write("fact_codings", codings)
        if attrs:
            self.write("fact_attrs", attrs)

    def close(self) -> None:
        for fh in self._fh.values():
            fh.close()


def read_csv_sql(table: str, paths: list[Path] | list[str]) -> str:
    cols = ", ".join(f"'{c}': '{t}'" for c, t in SCHEMA[table].items())
    files = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"
    return (f"read_csv({files}, header=false, columns={{{cols}}}, nullstr='\\N', allow_quoted_nulls=false, "
            f"quote='\"', escape='\"', delim=',', new_line='\\n', auto_detect=false)")


def create_empty(con, prefix: str = "") -> None:
    for t, cols in SCHEMA.items():
        body = ", ".join(f'"{c}" {ty}' for c, ty in cols.items())
        con.execute(f'CREATE OR REPLACE TABLE "{prefix}{t}" ({body})')


def load_csv_shards(con, shards: dict[str, list[Path]], prefix: str = "") -> None:
    """Create the four tables from CSV shard files (table -> files), replacing existing ones."""
    create_empty(con, prefix)
    for t in TABLES:
        files = [p for p in shards.get(t, []) if os.path.getsize(p) > 0]
        if files:
            con.execute(f'INSERT INTO "{prefix}{t}" SELECT * FROM {read_csv_sql(t, files)}')


def load_records(con, records: Iterable[PatientRecord], prefix: str = "", first_pid: int = 0) -> int:
    """Put PatientRecords into the four tables (replacing them). Returns the number of patients."""
    with tempfile.TemporaryDirectory(prefix="carepath-cols-") as tmp:
        out = CsvTables(Path(tmp))
        n = 0
        for i, rec in enumerate(records):
            out.add_record(first_pid + i, rec)
            n += 1
        out.close()
        load_csv_shards(con, {t: [p] for t, p in out.paths.items()}, prefix)
    return n


def has_population(folder: Path) -> bool:
    """Does `folder` hold Parquet tables (`facts.parquet` or `facts/*.parquet`)?"""
    folder = Path(folder)
    return (folder / "facts.parquet").exists() or any((folder / "facts").glob("*.parquet"))


def load_parquet(con, folder: Path, prefix: str = "", views: bool = True) -> None:
    """Expose `<folder>/<table>.parquet` (or `<table>/*.parquet`) as the four tables (views by default)."""
    for t in TABLES:
        single, many = folder / f"{t}.parquet", folder / t
        src = f"'{single}'" if single.exists() else f"'{many}/*.parquet'" if many.is_dir() else None
        if src is None:
            body = ", ".join(f'"{c}" {ty}' for c, ty in SCHEMA[t].items())
            con.execute(f'CREATE OR REPLACE TABLE "{prefix}{t}" ({body})')
            continue
        kind = "VIEW" if views else "TABLE"
        con.execute(f'CREATE OR REPLACE {kind} "{prefix}{t}" AS SELECT * FROM read_parquet({src})')
