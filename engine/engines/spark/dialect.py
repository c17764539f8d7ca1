"""Spark SQL's spelling of what engine/engines/sql/compiler.py cannot write portably (the ehrQL pattern: one
compiler, one small dialect per database). Run with `spark.sql.ansi.enabled` and
`spark.sql.ansi.doubleQuotedIdentifiers` on (session.py), so the compiler's "quoted" identifiers and
single-quoted strings mean the same as in DuckDB."""
from __future__ import annotations

from engine.engines.sql.compiler import Dialect
from engine.ir import nodes as ir

FORMAT_G_UDF = "carepath_format_g"  # Python's '%g' (derive.result_text), registered by session.py


class SparkDialect(Dialect):
    name = "spark"
    string_type = "STRING"
    semi_join = "LEFT SEMI JOIN"
    arg_min, arg_max = "min_by", "max_by"  # Spark orders structs field by field, as DuckDB does

    def materialized(self, cte_name: str) -> str:
        return ""  # Spark decides itself whether a CTE read several times is computed once

    def shift_date(self, expr: str, sign: int, d: ir.Duration) -> str:
        # add_months clamps to the month's end (31 Jan + 1 month = 28/29 Feb), as relativedelta and DuckDB do
        n = int(d.amount) * (1 if sign > 0 else -1)
        if d.unit == "days":
            return f"date_add({expr}, {n})"
        if d.unit == "weeks":
            return f"date_add({expr}, {n * 7})"
        if d.unit == "months":
            return f"add_months({expr}, {n})"
        if d.unit == "years":
            return f"add_months({expr}, {n * 12})"
        raise NotImplementedError(f"spark engine: duration unit {d.unit!r}")

    def days_between(self, start: str, end: str) -> str:
        return f"datediff({end}, {start})"

    def epoch_us(self, ts: str) -> str:
        return f"unix_micros({ts})"

    def struct(self, items: list[tuple[str, str]]) -> str:
        return "named_struct(" + ", ".join(f"'{k}', {v}" for k, v in items) + ")"

    def qualify(self, cols: str, rest: str, window: str, value: int) -> str:
        return f"SELECT {cols} FROM (SELECT *, {window} AS __rn {rest}) __q WHERE __rn = {value}"

    def format_g(self, expr: str) -> str:
        return f"{FORMAT_G_UDF}({expr})"

    def not_finite(self, expr: str) -> str:
        return f"isnan({expr}) OR abs({expr}) = CAST('inf' AS DOUBLE)"

    def func(self, name: str, args: list[str], body) -> str:
        # The arguments bound once to a lambda's variable: written out, each nested function repeats its
        # arguments ~4 times (missing? finite?), and a CKD-EPI eGFR grew to 160,000 characters whose analysis
        # took Spark minutes and gigabytes. Lambda variables are unique per depth (nested ones do not shadow).
        self._depth = getattr(self, "_depth", 0) + 1
        var = f"__a{self._depth}"
        try:
            inner = body(name, [f"{var}[{i}]" for i in range(len(args))])
        finally:
            self._depth -= 1
        return f"transform(array(array({', '.join(args)})), {var} -> {inner})[0]"


SPARK = SparkDialect()
