"""The direct adapter of the outcome table (issue 19): records / registry / the synthetic hazard model ->
events and cohorts, counted without the protocol language. It is NOT what carepath reports — the outcomes
page and `carepath outcomes report` count with the pilot-outcomes protocol's `value:` measures
(engine/app/outcomes/protocol_route.py). It stays here, under tests/, as the tests' independent reference:
a second count written without the protocol compiler, against which the protocol route is checked up to the
documented definition differences (docs/outcomes.md), and the fast hazard-model population the statistics
tests (planted effect, standardisation) run on.
"""
from __future__ import annotations

import csv
import datetime as dt
from functools import lru_cache
from typing import Iterable

from engine.app.outcomes.table import VALUESETS, OutcomeTable, age_on

ED_ATTENDANCE = "4525004"  # Emergency department patient visit (protocols/valuesets/clinical_local.csv, ed-attendance)


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
