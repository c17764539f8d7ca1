"""The one CSV writer for exports people open in a spreadsheet (worklists; any later export).

Spreadsheet formula ("CSV") injection, OWASP: a cell whose text starts with `=`, `+`, `-`, `@`, a tab
(0x09) or a carriage return (0x0D) can be run as a formula by Excel / LibreOffice / Google Sheets
(`=HYPERLINK(...)` phoning home with the row, `=cmd|...` on old Excel). Every *text* cell starting
with one of them, or with their full-width forms (＝ ＋ － ＠, which some spreadsheets accept too) or
a line feed, gets a leading single quote, so the spreadsheet shows it as text. Numbers (int / float
values from numeric columns) are written as they are, so `-5` stays a number; a negative number
that arrives as text is quoted like any other text. The csv module quotes separators, quotes
and line breaks inside cells.

Not for data-interchange files read back by programs (the population generator's and the batch
engine's DuckDB loads): those must keep their values byte for byte.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Sequence

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(value: Any) -> Any:
    """One cell: None -> "", numbers unchanged, text that a spreadsheet could run prefixed with '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A whole CSV document (header row first), every cell neutralised."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([neutralise(c) for c in columns])
    for row in rows:
        w.writerow([neutralise(v) for v in row])
    return buf.getvalue()
