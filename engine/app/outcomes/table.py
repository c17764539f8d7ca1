"""The outcome table every analysis here reads: person-time and events by practice, age band, sex,
cohort and calendar month.

    t = OutcomeTable(as_of)                      # complete months of the 3 years before as_of
    t.add_person(practice, mdt, locality, birth, sex, start, end, cohorts, events)   # one person's row
    from_measure_values(records, protocol, as_of, months)   # the protocol's measures, record by record

What carepath reports is counted by the outcome measures written in the protocol language
(protocols/pilot-outcomes.yaml, measures with `value:`): over a population or the registry with the DuckDB
batch engine (engine/app/outcomes/protocol_route.py: from_population, from_registry), or record by record
with any engine (from_measure_values below). `add_person` is the table's plain input (events with their
start and end; used by the tests' independent reference adapter, tests/outcomes_reference.py): each
person contributes person-time (days / 365.25, their age band on each day's month start) in every month
between `start` and `end` to each cohort they belong to, and each event to the month it starts in.
"""
from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

OUTCOMES = ("emergency_admission", "ae_attendance", "bed_days", "readmission_30d")
OUTCOME_NAMES = {"emergency_admission": "Emergency admissions", "ae_attendance": "A&E attendances",
                 "bed_days": "Emergency bed days", "readmission_30d": "Emergency readmissions within 30 days"}
COHORTS = ("all", "diabetes", "older-frail")
COHORT_NAMES = {"all": "Everyone registered", "diabetes": "Diabetes register",
                "older-frail": "Aged 75 or over, or moderately or severely frail"}
# Age bands of the standard population (years): 0-17, 18-44, 45-64, 65-74, 75-84, 85+.
AGE_EDGES = (18, 45, 65, 75, 85)
BAND_NAMES = ("0-17", "18-44", "45-64", "65-74", "75-84", "85+")
SEXES = ("female", "male", "other")

VALUESETS = Path(__file__).resolve().parents[3] / "protocols" / "valuesets"


def band(age: int) -> int:
    for i, edge in enumerate(AGE_EDGES):
        if age < edge:
            return i
    return len(AGE_EDGES)


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _birthday(birth: dt.date, years: int) -> int:
    """Day ordinal of the `years`-th birthday (29 February birthdays on 1 March)."""
    try:
        return birth.replace(year=birth.year + years).toordinal()
    except ValueError:
        return dt.date(birth.year + years, 3, 1).toordinal()


def _month_start(d: dt.date) -> dt.date:
    return d.replace(day=1)


def _next_month(d: dt.date) -> dt.date:
    return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


@dataclass
class Cell:
    """One (practice, age band, sex, cohort): person-years and event counts per month."""
    person_years: list[float]
    counts: dict[str, list[float]]


@dataclass
class OutcomeTable:
    as_of: dt.date
    months: list[dt.date] = field(default_factory=list)  # first day of each complete month reported
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # practice -> (mdt, locality)
    cells: dict[tuple, Cell] = field(default_factory=dict)  # (practice, band, sex, cohort) -> Cell
    people: int = 0
    source: str = ""
    unavailable: dict[str, str] = field(default_factory=dict)  # outcome -> why it cannot be counted

    def cohorts(self) -> list[str]:
        """The cohorts present, in COHORT_NAMES order."""
        have = {k[3] for k in self.cells}
        return [c for c in COHORT_NAMES if c in have]

    def __post_init__(self):
        if not self.months:  # complete calendar months of the 3 years before the as-of date
            first = _next_month(self.as_of - dt.timedelta(days=3 * 365))
            d = first
            while _next_month(d) <= self.as_of:
                self.months.append(d)
                d = _next_month(d)
        self._index = {m: i for i, m in enumerate(self.months)}
        self.lo = self.months[0]
        self.hi = _next_month(self.months[-1]) - dt.timedelta(days=1)  # last day reported
        self._full = {}  # (key, first band) -> people exposed the whole window in one band
        self._bounds = [m.toordinal() for m in self.months] + [self.hi.toordinal() + 1]

    def month_of(self, d: dt.date) -> int | None:
        if d < self.lo or d > self.hi:
            return None
        return self._index[_month_start(d)]

    def _cell(self, key: tuple) -> Cell:
        c = self.cells.get(key)
        if c is None:
            n = len(self.months)
            c = self.cells[key] = Cell([0.0] * n, {o: [0.0] * n for o in OUTCOMES})
        return c

    def add_person(self, practice: str, mdt: str | None, locality: str | None, birth: dt.date, sex: str,
                   start: dt.date, end: dt.date, cohorts: Iterable[str],
                   events: Iterable[tuple[str, dt.datetime, dt.datetime | None]]) -> None:
        """One person: registered with `practice` from `start` to `end` (inclusive; clipped to the months
        reported), in `cohorts` ("all" is added), with events (outcome, start, end)."""
        self.people += 1
        self.units.setdefault(practice, (mdt or "unknown", locality or "unknown"))
        sex = sex if sex in ("female", "male") else "other"
        cohorts = ("all",) + tuple(c for c in cohorts if c != "all")
        lo, hi = max(start, self.lo), min(end, self.hi)
        if lo <= hi:
            # the days on which the person enters each age band (birthdays at the band edges)
            edges = [_birthday(birth, e) for e in AGE_EDGES]
            lo_o, hi_o = lo.toordinal(), hi.toordinal()
            b_lo, b_hi = bisect.bisect_right(edges, lo_o), bisect.bisect_right(edges, hi_o)
            if lo == self.lo and hi == self.hi and b_lo == b_hi:  # the common case: one band, the whole window
                for c in cohorts:
                    k = (practice, b_lo, sex, c)
                    self._full[k] = self._full.get(k, 0) + 1
            else:
                bounds = self._bounds
                m = bisect.bisect_right(bounds, lo_o) - 1
                while m < len(self.months) and bounds[m] <= hi_o:
                    a = max(lo_o, bounds[m])
                    days = min(hi_o, bounds[m + 1] - 1) - a + 1
                    b = bisect.bisect_right(edges, a)
                    for c in cohorts:
                        self._cell((practice, b, sex, c)).person_years[m] += days / 365.25
                    m += 1
        admissions = sorted((s, e) for o, s, e in events if o == "emergency_admission")

        def counted(d: dt.date) -> int | None:  # events count only while the person counts (registered, alive)
            return self.month_of(d) if lo <= d <= hi else None

        for o, s, e in events:
            if o != "ae_attendance":
                continue
            m = counted(s.date())
            if m is not None:
                b = band(age_on(birth, s.date()))
                for c in cohorts:
                    self._cell((practice, b, sex, c)).counts["ae_attendance"][m] += 1
        last_discharge = None
        for s, e in admissions:
            m = counted(s.date())
            readmit = last_discharge is not None and 0 <= (s - last_discharge).total_seconds() <= 30 * 86400
            if m is not None:
                b = band(age_on(birth, s.date()))
                until = e.date() if e is not None else self.as_of
                for c in cohorts:
                    cnt = self._cell((practice, b, sex, c)).counts
                    cnt["emergency_admission"][m] += 1
                    cnt["bed_days"][m] += max(0, (until - s.date()).days)
                    if readmit:
                        cnt["readmission_30d"][m] += 1
            if e is not None:
                last_discharge = max(last_discharge, e) if last_discharge else e
            else:
                last_discharge = None

    def keep_last(self, months: int | None) -> "OutcomeTable":
        """Keep only the last `months` months (the months evaluated; None or 0: all of them)."""
        if months:
            self.months = self.months[len(self.months) - months:]
            for cell in self.cells.values():
                cell.person_years = cell.person_years[-months:]
                for o in cell.counts:
                    cell.counts[o] = cell.counts[o][-months:]
            self.__post_init__()
        return self

    def finish(self) -> "OutcomeTable":
        """Spread the whole-window people over the months (call once, after the last add_person)."""
        month_years = [((_next_month(m) - m).days) / 365.25 for m in self.months]
        for k, n in self._full.items():
            py = self._cell(k).person_years
            for i, y in enumerate(month_years):
                py[i] += n * y
        self._full = {}
        return self

    def practices(self, level: str, unit: str | None) -> set[str]:
        """Practices in one unit of a level (area: all)."""
        if level == "area" or unit is None:
            return set(self.units)
        i = {"mdt": 0, "locality": 1}.get(level)
        if i is None:
            return {unit} if unit in self.units else set()
        return {p for p, u in self.units.items() if u[i] == unit}

    def unit_names(self, level: str) -> list[str]:
        if level == "area":
            return ["area"]
        if level == "practice":
            return sorted(self.units)
        i = {"mdt": 0, "locality": 1}[level]
        return sorted({u[i] for u in self.units.values()})


# ---- the protocol language's outcome measures (engine/app/outcomes/values.py) ----------------------------
MEASURE_OUTCOMES = {"admissions": "emergency_admission", "ae": "ae_attendance", "bed-days": "bed_days",
                    "readmissions": "readmission_30d"}
MEASURE_COHORTS = {"diabetes": "Diabetes register (at the month's start)", "75-plus": "Aged 75 or over",
                   "frailty": "Moderate or severe frailty (65 or over)", "tier-3": "Risk tier 3 (case management)",
                   "tier-2": "Risk tier 2 (disease management)", "tier-1": "Risk tier 1 (supported self-care)"}
COHORT_NAMES.update({k: v for k, v in MEASURE_COHORTS.items() if k not in COHORT_NAMES})


def from_measure_values(records: Iterable, protocol, as_of: dt.date, months: int | None = None,
                        engine: str = "python") -> OutcomeTable:
    """The table from the outcome measures written in the protocol language (protocols/pilot-outcomes.yaml,
    measures `<outcome>-<cohort>` with `value:`): each month is one measurement period (period start = the
    month's first day, as-of = its last), each person in a measure's cohort that month counts the month's
    days as person-time (people who died in the month count the whole month, as the measure counts them)
    and adds their value. `protocol`: the Protocol itself (its effective date may be later than the months
    reported). `months`: only the last N months (every month evaluates every record again). A value that
    cannot be determined (a site-supplied codelist missing, e.g. A&E attendances) is left out and the
    outcome listed in `unavailable`."""
    from engine.app.outcomes.values import person_values

    t = OutcomeTable(as_of, source=f"protocol measures {protocol.id}@{protocol.version}")
    records = list(records)
    keep = range(len(t.months) - months if months else 0, len(t.months))
    for m in keep:
        first = t.months[m]
        last = _next_month(first) - dt.timedelta(days=1)
        years = ((last - first).days + 1) / 365.25
        for pv in person_values(records, [protocol], last, period_start=first, engine=engine):
            if not pv.practice:
                continue
            t.units.setdefault(pv.practice, (pv.mdt or "unknown", pv.locality or "unknown"))
            sex = pv.sex if pv.sex in ("female", "male") else "other"
            b = band(pv.age)
            for (_pid, measure), v in pv.values.items():
                outcome, _, cohort = measure.partition("-")
                if measure.startswith("bed-days-"):
                    outcome, cohort = "bed-days", measure[len("bed-days-"):]
                outcome = MEASURE_OUTCOMES.get(outcome)
                if outcome is None or not v.in_cohort:
                    continue
                if v.cannot_determine:
                    t.unavailable[outcome] = "codelist not supplied: " + ", ".join(v.cannot_determine)
                    continue
                cell = t._cell((pv.practice, b, sex, cohort))
                # person-time once per person, cohort and month (from the admissions measure, which every
                # cohort has); the value of every outcome
                if outcome == "emergency_admission":
                    cell.person_years[m] += years
                if v.value is not None:
                    cell.counts[outcome][m] += v.value
    t.people = len(records)
    return t.keep_last(months).finish()
