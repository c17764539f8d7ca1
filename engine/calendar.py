"""Response-time clocks: working days skip weekends and England bank holidays; hours follow the provider.

Working-day deadlines fall at the same time of day N working days later (a task raised on Friday
with "1 working day" is due Monday, or Tuesday after a bank-holiday Monday). Hours count the
provider's opening hours when its role agreement gives them (engine.opening_hours: a GP practice's
4 hours from Friday 16:00 end on Monday 09:30); without opening hours, or for a 24/7 service
(urgent community response, crisis team), hours are wall-clock and do not stop for weekends.
Bank holidays are England's, which Wales shares (`holidays`, GB subdivision ENG, substitute days
included).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import holidays



@lru_cache(maxsize=None)
def _england(year: int):
    return holidays.country_holidays("GB", subdiv="ENG", years=[year])


def is_bank_holiday(day: dt.date) -> bool:
    """A bank holiday in England and Wales as gov.uk lists them: weekdays only (Christmas Day on a Saturday is
    not one; its substitute Monday is)."""
    return day.weekday() < 5 and day in _england(day.year)


def is_working_day(day: dt.date) -> bool:
    return day.weekday() < 5 and not is_bank_holiday(day)


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

    def due_from(self, start: dt.datetime, hours=None) -> dt.datetime:
        """The deadline `self` after `start`; hours count only the provider's open time when `hours` is given."""
        if self.unit == "hours":
            if hours is not None:
                return hours.add_hours(start, self.amount)
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
