"""The outcome table every analysis here reads: person-time and events by practice, age band, sex,
cohort and calendar month.

    t = OutcomeTable(as_of)                      # complete months of the 3 years before as_of
    t.add_person(practice, mdt, locality, birth, sex, start, end, cohorts, events)   # the one input row
    from_records(records, as_of)                 # adapter: PatientRecords (registry, FHIR, generator)
    from_generator(n, seed, as_of, model)        # adapter: the synthetic hazard model's own people (fast)

Each person contributes person-time (days / 365.25, their age band on each day's month start) in every
month between `start` and `end` to each cohort they belong to, and each event (`emergency_admission`,
`ae_attendance`, with its start and end) to the month it starts in, if it starts while the person counts
(registered and alive). Derived from the admissions:
`bed_days` (midnights between admission and discharge, or the as-of date while still in, counted in the
month of admission) and `readmission_30d` (an emergency admission starting within 30 days of the
discharge from an earlier one, counted in its own month).

The adapters are the only place that reads records; swapping in per-person values computed by the
protocol language's outcome measures changes `from_records` alone.
"""
from __future__ import annotations

import bisect
import csv
import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
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
ED_ATTENDANCE = "4525004"  # Emergency department patient visit (protocols/valuesets/clinical_local.csv, ed-attendance)


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


# ---- adapters ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _codes(file: str, column: str | None = None, keep: tuple = ()) -> frozenset[str]:
    with (VALUESETS / file).open(newline="", encoding="utf-8-sig") as fh:
        return frozenset(r["code"].strip() for r in csv.DictReader(fh)
                         if column is None or (r.get(column) or "").strip() in keep)


def _emergency_admission_codes() -> frozenset[str]:
    # GM-SDE emergency admission, and the QOF emergency admission clusters for asthma and COPD
    return _codes("emergency_admission.csv") | _codes("astadmsn_cod.csv") | _codes("copdadmsn_cod.csv")


def events_and_cohorts(facts, birth: dt.date, as_of: dt.date) -> tuple[list, set[str]]:
    """From (kind, code set, start, end, status) of a person's facts: their events (outcome, start, end)
    — A&E attendances (4525004) and emergency admissions (GM-SDE emergency admission, QOF asthma and COPD
    emergency admission clusters) among encounters — and their cohorts on the as-of date: the diabetes
    register (a DM_COD diagnosis) and 'older-frail' (75 or over, or a moderate / severe frailty code)."""
    emergency = _emergency_admission_codes()
    dm = _codes("dm_cod.csv")
    frail = _codes("frailty_cod.csv", "severity", ("moderate", "severe"))
    events, cohorts = [], set()
    for kind, codes, start, end, status in facts:
        if status == "entered-in-error":
            continue
        if kind == "encounter":
            if codes & emergency:
                events.append(("emergency_admission", start, end))
            elif ED_ATTENDANCE in codes:
                events.append(("ae_attendance", start, end))
        elif start.date() <= as_of:
            if kind == "condition" and codes & dm:
                cohorts.add("diabetes")
            if codes & frail:
                cohorts.add("older-frail")
    if age_on(birth, as_of) >= 75:
        cohorts.add("older-frail")
    return events, cohorts


def from_records(records: Iterable, as_of: dt.date, source: str = "records") -> OutcomeTable:
    """The table from PatientRecords: person-time from registration (or the start of the window) to death
    or the as-of date, events from the acute encounters."""
    t = OutcomeTable(as_of, source=source)
    for r in records:
        p = r.patient
        if not p.practice:
            continue
        start = max(p.registered_on or p.birth_date, p.birth_date)
        end = min(p.death_date or as_of, as_of)
        sex = getattr(p.sex, "value", p.sex)
        facts = [(f.kind, {c.code for c in f.codes}, f.start, f.end, f.status) for f in r.facts]
        events, cohorts = events_and_cohorts(facts, p.birth_date, as_of)
        t.add_person(p.practice, p.mdt, p.locality, p.birth_date, sex, start, end, cohorts, events)
    return t.finish()


def from_generator(n: int, seed: int, as_of: dt.date, model=None) -> OutcomeTable:
    """The table straight from the synthetic generator's hazard model (outcome-only people: no record is
    built, so cohorts come from the person's drawn conditions and frailty, not from codes)."""
    from engine.synthetic.generate import _dt, person
    from engine.synthetic.outcomes import OutcomeModel

    model = model or OutcomeModel(record=False)
    t = OutcomeTable(as_of, source=f"synthetic population: {n} people, seed {seed}")
    for i in range(n):
        p = person(i, seed, as_of, model)
        prof = p.profile
        cohorts = set()
        if "dm" in prof.conditions:
            cohorts.add("diabetes")
        if p.age >= 75 or prof.frailty in ("moderate", "severe"):
            cohorts.add("older-frail")
        events = [(o, _dt(s), _dt(e) if e else None) for o, s, e in prof.events]
        t.add_person(p.practice.ods, p.practice.mdt, p.practice.locality, p.birth, p.sex,
                     max(p.registered, p.birth), p.deceased or as_of, cohorts, events)
    return t.finish()


def from_registry(engine, as_of: dt.date) -> OutcomeTable:
    """The table from the SQL registry: one query for the patients, one for the facts that matter (acute
    encounters, conditions, observations), streamed in patient order."""
    import sqlalchemy as sa

    from engine.registry.tables import FactRow, PatientRow

    t = OutcomeTable(as_of, source="registry")
    P, F = PatientRow.__table__.c, FactRow.__table__.c
    with engine.connect() as con:
        people = {r.id: r for r in con.execute(sa.select(P.id, P.practice, P.mdt, P.locality, P.birth_date, P.sex,
                                                          P.death_date, P.registered_on))}
        q = (sa.select(F.patient_id, F.kind, F.codes, F.start, F.end, F.status)
             .where(sa.or_(sa.and_(F.kind == "encounter", F.care_setting == "acute"),
                           F.kind.in_(("condition", "observation"))))
             .order_by(F.patient_id))
        facts: dict[int, list] = {}
        for pid, kind, codes, start, end, status in con.execute(q):
            facts.setdefault(pid, []).append((kind, {c["code"] for c in codes or ()}, start, end, status))
    for pid, p in people.items():
        if not p.practice:
            continue
        birth = p.birth_date
        events, cohorts = events_and_cohorts(facts.get(pid, ()), birth, as_of)
        start = max(p.registered_on or birth, birth)
        t.add_person(p.practice, p.mdt, p.locality, birth, getattr(p.sex, "value", p.sex) or "unknown", start,
                     min(p.death_date or as_of, as_of), cohorts, events)
    return t.finish()


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
