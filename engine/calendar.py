"""Response-time clocks: working days skip weekends and England bank holidays; hours are wall-clock.

Working-day deadlines fall at the same time of day N working days later (a task raised on Friday
with "1 working day" is due Monday, or Tuesday after a bank-holiday Monday). Hours are counted
round the clock because urgent community services (2-hour UCR) run 08:00-20:00 seven days a week
and escalate beyond that; their clock does not stop for weekends.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import holidays


@lru_cache(maxsize=None)
def _england(year: int):
    return holidays.country_holidays("GB", subdiv="ENG", years=[year])


def is_working_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _england(day.year)


def add_working_days(start: dt.datetime, n: int) -> dt.datetime:
    current = start
    added = 0
    while added < n:
        current += dt.timedelta(days=1)
        if is_working_day(current.date()):
            added += 1
    return current


@dataclass(frozen=True)
class ResponseTime:
    amount: float
    unit: str  # hours | working days | days | weeks | months | years

    def due_from(self, start: dt.datetime) -> dt.datetime:
        if self.unit == "hours":
            return start + dt.timedelta(hours=self.amount)
        if self.unit == "working days":
            return add_working_days(start, int(self.amount))
        if self.unit == "days":
            return start + dt.timedelta(days=self.amount)
        if self.unit == "weeks":
            return start + dt.timedelta(weeks=self.amount)
        if self.unit in ("months", "years"):
            from dateutil.relativedelta import relativedelta
            return start + relativedelta(**{self.unit: int(self.amount)})
        raise ValueError(self.unit)

    def __str__(self) -> str:
        amount = f"{self.amount:g}"
        unit = self.unit if self.amount != 1 else self.unit.rstrip("s")
        return f"{amount} {unit}"


def parse_response(text: str) -> ResponseTime:
    import re
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(hours?|working days?|days?|weeks?|months?|years?)\s*$", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a response time (e.g. '4 hours', '5 working days')")
    unit = m.group(2)
    unit = unit if unit.endswith("s") else unit + "s"
    return ResponseTime(float(m.group(1)), unit)
