"""The four columnar tables (engine/engines/sql/records.py) as Spark temporary views: from PatientRecords
(the spec-suite adapter) or from a population's Parquet files (`carepath generate`, or a real extract with
the same columns). Dates and times are read as UTC wall-clock values (the session runs in UTC)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from engine.engines.sql.records import SCHEMA, TABLES, record_rows

_SPARK_TYPES = {"INTEGER": "INT", "VARCHAR": "STRING", "DATE": "DATE", "TIMESTAMP": "TIMESTAMP", "DOUBLE": "DOUBLE",
                "BIGINT": "BIGINT", "BOOLEAN": "BOOLEAN"}


def _raw_schema(table: str) -> str:
    """Rows from Python arrive with dates and times as ISO text (cast in SQL, in UTC: no local-time surprises)."""
    return ", ".join(f"`{c}` {'STRING' if t in ('DATE', 'TIMESTAMP') else _SPARK_TYPES[t]}"
                     for c, t in SCHEMA[table].items())


def _typed_select(table: str, source: str) -> str:
    cols = ", ".join(f"CAST(`{c}` AS {_SPARK_TYPES[t]}) AS `{c}`" for c, t in SCHEMA[table].items())
    return f"SELECT {cols} FROM {source}"


def _coerce(table: str, rows: list[tuple]) -> list[tuple]:
    types = list(SCHEMA[table].values())
    dbl = [i for i, t in enumerate(types) if t == "DOUBLE"]
    if not dbl:
        return rows
    out = []
    for r in rows:
        r = list(r)
        for i in dbl:
            if r[i] is not None:
                r[i] = float(r[i])
        out.append(tuple(r))
    return out


def register(spark, frames: dict, prefix: str = "", cache: bool = True) -> None:
    """Name each table's DataFrame as a temporary view `<prefix><table>` (cached: every query reads them)."""
    for t in TABLES:
        df = frames[t]
        if cache:
            df = df.cache()
        df.createOrReplaceTempView(prefix + t)


def load_records(spark, records: Iterable, prefix: str = "", first_pid: int = 0) -> int:
    """PatientRecords as the four views (replacing them). Returns the number of patients."""
    rows: dict[str, list[tuple]] = {t: [] for t in TABLES}
    n = 0
    for i, rec in enumerate(records):
        prow, facts, codings, attrs = record_rows(first_pid + i, rec)
        rows["patients"].append(prow)
        rows["facts"].extend(facts)
        rows["fact_codings"].extend(codings)
        rows["fact_attrs"].extend(attrs)
        n += 1
    frames = {}
    for t in TABLES:
        raw = spark.createDataFrame(_coerce(t, rows[t]), _raw_schema(t))
        raw.createOrReplaceTempView(f"__raw_{prefix}{t}")
        frames[t] = spark.sql(_typed_select(t, f"`__raw_{prefix}{t}`"))
    drop(spark, prefix)
    register(spark, frames, prefix)
    return n


def drop(spark, prefix: str = "") -> None:
    for t in TABLES:
        name = prefix + t
        if spark.catalog.tableExists(name):
            spark.catalog.uncacheTable(name)
            spark.catalog.dropTempView(name)


def load_parquet(spark, folder: Path | str, prefix: str = "", first: int | None = None, cache: bool = False) -> None:
    """`<folder>/<table>/*.parquet` or `<folder>/<table>.parquet` as the four views, columns cast to the
    engine's types (a table with no file is empty). `first`: only patients with pid < first."""
    folder = Path(folder)
    frames = {}
    for t in TABLES:
        single, many = folder / f"{t}.parquet", folder / t
        src = str(single) if single.exists() else str(many) if many.is_dir() and any(many.glob("*.parquet")) else None
        if src is None:
            df = spark.createDataFrame([], _raw_schema(t))
        else:
            df = spark.read.parquet(src)
        df.createOrReplaceTempView(f"__raw_{prefix}{t}")
        sql = _typed_select(t, f"`__raw_{prefix}{t}`")
        if first is not None:
            sql += f" WHERE pid < {int(first)}"
        frames[t] = spark.sql(sql)
    drop(spark, prefix)
    register(spark, frames, prefix, cache=cache)
