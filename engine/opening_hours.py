"""Provider opening hours: response times in hours count only while the provider is open.

A role agreement's party may say when it works (`hours:` on the party):

    hours: 24/7                                                  # round the clock, every day
    hours: {weekdays: "08:00-18:30", bank_holidays: closed}      # a GP practice (GMS core hours)
    hours: {every_day: "08:00-20:00", bank_holidays: open}       # bank holidays as that weekday
    hours: {weekdays: ["08:30-12:30", "13:30-17:00"], saturday: "09:00-12:00"}

Keys: `weekdays` (Monday-Friday), `weekends` (Saturday and Sunday), `every_day`, a day's name
(`monday` ... `sunday`, which overrides the groups), and `bank_holidays`. A value is one time range
"HH:MM-HH:MM" (the end may be 24:00), a list of them, or `closed`. Days not mentioned are closed.
`bank_holidays` is `closed` (the default when not written), `open` (as that weekday), or time
ranges. Bank holidays are England's (England and Wales share them; from the `holidays` package,
substitute days included, see engine.calendar).

With hours, for a task assigned to that provider:
- an agreed response in **hours** counts open time only: 4 hours from Friday 16:00 at a practice
  open Monday-Friday 08:00-18:30 is Monday 09:30 (2.5 hours on Friday, 1.5 on Monday; Tuesday
  09:30 after a bank-holiday Monday); from Friday 16:30 it is Monday 10:00. Raised while closed,
  the clock starts when the provider next opens.
- any **deadline** (the agreed one, the rule's clinical `within`, the activity's due date) that
  would fall while the provider is closed moves back to its last closing time, so the work is due
  while someone is there to do it (a same-day task raised Friday 16:00 is due Friday 18:30, not
  Saturday 16:00). If the task was raised in that same closed spell, it is due when the provider
  next opens instead.
A provider without `hours` (or with `24/7`) works round the clock: hours are wall-clock.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
GROUPS = {"every_day": range(7), "weekdays": range(5), "weekends": range(5, 7)}
KEYS = (*GROUPS, *DAY_NAMES, "bank_holidays")
ALWAYS = ("24/7", "24x7", "always")
_RANGE = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-4]):([0-5]\d)\s*$")
_MAX_DAYS = 400  # how far ahead (or back) a clock looks for open time

Spans = tuple[tuple[int, int], ...]  # minutes after midnight, [start, end)


class HoursError(ValueError):
    """Opening hours that cannot be read (the message says what is wrong)."""


@dataclass(frozen=True)
class OpeningHours:
    week: tuple[Spans, ...] = (((0, 1440),),) * 7  # Monday .. Sunday
    bank_holidays: Spans | None = None  # None: as that weekday; () closed
    text: str = "24/7"

    @property
    def always(self) -> bool:
        return all(s == ((0, 1440),) for s in self.week) and self.bank_holidays is None

    def spans(self, day: dt.date) -> Spans:
        from engine.calendar import is_bank_holiday
        if self.bank_holidays is not None and is_bank_holiday(day):
            return self.bank_holidays
        return self.week[day.weekday()]

    def _intervals(self, day: dt.date) -> list[tuple[dt.datetime, dt.datetime]]:
        """The open intervals of one day, as datetimes; spans running to midnight join the next day's."""
        midnight = dt.datetime.combine(day, dt.time())
        return [(midnight + dt.timedelta(minutes=a), midnight + dt.timedelta(minutes=b)) for a, b in self.spans(day)]

    def is_open(self, when: dt.datetime) -> bool:
        return any(a <= when < b for a, b in self._intervals(when.date()))

    def add_hours(self, start: dt.datetime, hours: float) -> dt.datetime:
        """`hours` of open time after `start` (the clock stops while closed)."""
        if self.always:
            return start + dt.timedelta(hours=hours)
        left = dt.timedelta(hours=hours)
        day = start.date()
        for _ in range(_MAX_DAYS):
            for a, b in self._intervals(day):
                a = max(a, start)
                if a >= b:
                    continue
                if b - a >= left:
                    return a + left
                left -= b - a
            day += dt.timedelta(days=1)
        raise HoursError(f"no open time within {_MAX_DAYS} days of {start:%Y-%m-%d %H:%M} ({self.text})")

    def fit(self, due: dt.datetime, raised: dt.datetime) -> dt.datetime:
        """A deadline moved into open time: kept if the provider is open then (or it is a closing time);
        else the last closing time before it, if that is after `raised`; else the next opening."""
        if self.always or any(a <= due <= b for a, b in self._intervals(due.date())):
            return due
        day = due.date()
        for _ in range(_MAX_DAYS):
            ends = [b for a, b in self._intervals(day) if b <= due]
            if ends:
                last = max(ends)
                if last > raised:
                    return last
                break
            if day <= raised.date():
                break
            day -= dt.timedelta(days=1)
        day = due.date()
        for _ in range(_MAX_DAYS):
            starts = [a for a, b in self._intervals(day) if a >= due]
            if starts:
                return min(starts)
            day += dt.timedelta(days=1)
        raise HoursError(f"no open time within {_MAX_DAYS} days of {due:%Y-%m-%d %H:%M} ({self.text})")

    def __str__(self) -> str:
        return self.text


ROUND_THE_CLOCK = OpeningHours()


def _spans(value, what: str) -> Spans:
    if isinstance(value, str) and value.strip().lower() == "closed":
        return ()
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        m = _RANGE.match(str(item)) if isinstance(item, str) else None
        if not m:
            raise HoursError(f"{what}: {item!r} is not a time range (e.g. \"08:00-18:30\") or 'closed'")
        a, b = int(m.group(1)) * 60 + int(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))
        if b > 1440 or b <= a:
            raise HoursError(f"{what}: {item!r} should end after it starts, on the same day (at the latest 24:00)")
        out.append((a, b))
    out.sort()
    for (a1, b1), (a2, b2) in zip(out, out[1:]):
        if a2 < b1:
            raise HoursError(f"{what}: the time ranges {a1 // 60:02d}:{a1 % 60:02d}-{b1 // 60:02d}:{b1 % 60:02d} and "
                             f"{a2 // 60:02d}:{a2 % 60:02d}-{b2 // 60:02d}:{b2 % 60:02d} overlap")
    return tuple(out)


def parse_hours(value) -> OpeningHours:
    """`24/7`, or a mapping of day groups / day names / bank_holidays to time ranges (see the module doc)."""
    if isinstance(value, str):
        if value.strip().lower() in ALWAYS:
            return OpeningHours(bank_holidays=None, text="24/7")
        raise HoursError(f"hours {value!r}: expected 24/7 or days with time ranges, "
                         "e.g. {weekdays: \"08:00-18:30\", bank_holidays: closed}")
    if not isinstance(value, dict) or not value:
        raise HoursError("hours: expected 24/7 or days with time ranges, e.g. {weekdays: \"08:00-18:30\", bank_holidays: closed}")
    unknown = [str(k) for k in value if k not in KEYS]
    if unknown:
        raise HoursError(f"hours: unknown day {unknown[0]!r} (expected {', '.join(KEYS)})")
    week: list[Spans] = [()] * 7
    for group, days in GROUPS.items():  # groups first, then single days override them
        if group in value:
            spans = _spans(value[group], group)
            for d in days:
                week[d] = spans
    for i, name in enumerate(DAY_NAMES):
        if name in value:
            week[i] = _spans(value[name], name)
    bh_raw = value.get("bank_holidays", "closed")
    bank = None if isinstance(bh_raw, str) and bh_raw.strip().lower() == "open" else _spans(bh_raw, "bank_holidays")
    if not any(week):
        raise HoursError("hours: the provider is never open (every day closed)")
    text = "; ".join(f"{k} {_show(value[k])}" for k in value)
    return OpeningHours(tuple(week), bank, text)


def _show(v) -> str:
    return ", ".join(str(x) for x in v) if isinstance(v, list) else str(v)
