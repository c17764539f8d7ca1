"""Hospital outcomes for the synthetic population: a documented hazard model, and a planted effect.

    generate(n, seed, as_of, outcomes=OutcomeModel())                       # outcomes from the model
    OutcomeModel(effect=Effect(pilot_practices, start, relative_change=-0.10))  # 10 % fewer emergency
                                                                                # admissions in the pilot
                                                                                # practices from `start`

Without an OutcomeModel the generator is unchanged (its older, flat A&E / admission draws stay, so every
existing test and benchmark sees the same population). With one, each person's acute care comes from
this model instead, drawn from a random stream of its own (`"{seed}:{index}:outcomes"`), deterministic by
seed and independent of how the population is split across workers.

The model (rates per person-year; all numbers are assumptions chosen to give English orders of
magnitude, not estimates — about 100 emergency admissions and 350 A&E attendances per 1,000 people a year
over all ages):

* Exposure: every day from the later of the start of the 3-year record, birth and registration with
  the practice, to the earlier of death and the as-of date. Rates change by the day (age, season,
  effect), drawn by thinning a Poisson process at the window's highest rate (Lewis & Shedler 1979).
* Emergency admissions: Poisson, rate = BASE_ADMISSION[age band] x product of CONDITION_HR over the
  person's long-term conditions x FRAILTY_HR[eFI category] x deprivation ** 0.7 x a winter season
  (1 + 0.12 cos(2 pi (month - 1) / 12), highest in January) x the effect multiplier (1 +
  relative_change in pilot practices on and after the start date). Age is the age on the day; the eFI category (deficit count / 36, Clegg et al. 2016 cut-offs) is the one at the as-of
  date, drawn from the same stream and used for the record's frailty codes too. Frailty hazard ratios
  are those Clegg et al. (Age Ageing 2016;45:353) report for hospitalisation by eFI category.
* A&E attendances: Poisson, BASE_AE[age band] x 1.15 per condition x sqrt(FRAILTY_HR) x deprivation;
  and 3 in 4 emergency admissions arrive through A&E (an A&E encounter that morning, also counted).
* Length of stay (bed days = midnights between admission and discharge, the Encounter's period):
  same-day (0 days) for 30 % under 65 and 20 % from 65; otherwise log-normal with mean
  LOS_MEAN[age band] x LOS_FRAILTY[category] (sigma 0.8), at least 1 day, at most 90.
* 30-day readmissions: after each emergency admission, another emergency admission 1-30 days after
  discharge with probability 0.07 + 0.02 per condition + READMIT_FRAILTY[category] (at most 0.30);
  a readmission can itself be followed by one. The effect is planted on first admissions only, so
  readmissions fall with them in proportion.
* Elective admissions (not an outcome here): 0.03 + 0.002 x age a year, 0-3 days.
"""
from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field

OUTCOMES = ("emergency_admission", "ae_attendance")  # the hazards an effect can be planted on

AGE_EDGES = (18, 45, 65, 75, 85)  # bands: <18, 18-44, 45-64, 65-74, 75-84, 85+
BASE_ADMISSION = (0.058, 0.052, 0.058, 0.092, 0.15, 0.25)
BASE_AE = (0.30, 0.25, 0.22, 0.25, 0.35, 0.50)
LOS_MEAN = (2.0, 3.0, 4.0, 5.5, 7.0, 9.0)
CONDITION_HR = {"dm": 1.5, "hf": 2.2, "copd": 2.0, "af": 1.3, "hyp": 1.15, "asthma": 1.2, "depression": 1.3}
FRAILTY_HR = {"fit": 1.0, "mild": 1.93, "moderate": 3.04, "severe": 4.73}
LOS_FRAILTY = {"fit": 1.0, "mild": 1.15, "moderate": 1.3, "severe": 1.5}
READMIT_FRAILTY = {"fit": 0.0, "mild": 0.02, "moderate": 0.04, "severe": 0.07}
VIA_AE = 0.75


@dataclass(frozen=True)
class Effect:
    """A known change planted in the data: hazard x (1 + relative_change) in `practices` from `start`."""
    practices: frozenset[str]
    start: dt.date
    relative_change: float = -0.10
    outcomes: tuple[str, ...] = ("emergency_admission",)

    def __post_init__(self):
        object.__setattr__(self, "practices", frozenset(self.practices))
        bad = set(self.outcomes) - set(OUTCOMES)
        if bad:
            raise ValueError(f"effect on unknown outcome(s) {sorted(bad)}; expected some of {OUTCOMES}")
        if self.relative_change <= -1:
            raise ValueError("relative_change must be above -1 (a rate cannot fall below zero)")


@dataclass(frozen=True)
class OutcomeModel:
    """Turn the hazard model on. `record=False` draws the same people's demographics, conditions, frailty
    and outcome events but not the rest of their record (fast: for evaluation tests and benchmarks); their
    record then holds the acute encounters, a diabetes diagnosis code for people with diabetes and a
    frailty code for the moderately and severely frail (so the registers can be read from codes)."""
    effect: Effect | None = None
    record: bool = True


@dataclass
class Profile:
    """What the hazard model read for one person (also what the evaluation adapter reads in outcome-only
    runs, where there are no condition codes)."""
    conditions: tuple[str, ...]
    frailty: str  # fit / mild / moderate / severe (65+), fit below 65
    events: list = field(default_factory=list)  # (outcome, start (day, minute), end (day, minute) | None)


def band(age: int) -> int:
    for i, edge in enumerate(AGE_EDGES):
        if age < edge:
            return i
    return len(AGE_EDGES)


def efi_category(deficits: int) -> str:
    efi = deficits / 36
    return "fit" if efi <= 0.12 else "mild" if efi <= 0.24 else "moderate" if efi <= 0.36 else "severe"


def prepare(p, conditions: dict[str, bool]) -> None:
    """Before the record is drawn: the person's own stream, and their eFI deficit count (65+), which the
    record's frailty codes then use (so hazard and codes agree)."""
    from engine.synthetic.draws import _poisson

    p.orng = orng = random.Random(f"{p.seed}:{p.index}:outcomes")
    p.outcome_conditions = tuple(k for k, v in conditions.items() if v)
    if p.age >= 65:
        lam = (3.2 + 0.1 * (p.age - 65) + 0.9 * len(p.outcome_conditions)) * orng.gammavariate(5, 0.2)
        p.deficits = min(30, _poisson(orng, lam))
    p.frailty_category = efi_category(p.deficits) if p.age >= 65 and p.deficits is not None else "fit"


def _age(birth: dt.date, day: int) -> int:
    d = dt.date.fromordinal(day)
    return d.year - birth.year - ((d.month, d.day) < (birth.month, birth.day))


def add_events(p, model: OutcomeModel) -> Profile:
    """Draw the person's A&E attendances, emergency (and elective) admissions with their stays, and
    30-day readmissions, and add them to the record as acute encounters."""
    from engine.synthetic import draws as g
    from engine.synthetic import realcodes

    orng, poisson = p.orng, g._poisson
    conds, frail = p.outcome_conditions, p.frailty_category
    prof = Profile(conditions=conds, frailty=frail)
    lo = max(p.start_day, p.birth_ord, p.registered.toordinal())
    hi = p.last_day
    eff = model.effect
    in_pilot = eff is not None and p.practice.ods in eff.practices
    cond_hr = 1.0
    for c in conds:
        cond_hr *= CONDITION_HR.get(c, 1.0)
    dep = p.practice.deprivation
    adm_person = cond_hr * FRAILTY_HR[frail] * dep ** 0.7
    ae_person = 1.15 ** len(conds) * math.sqrt(FRAILTY_HR[frail]) * dep
    emergency_codes = realcodes.real("emergency_admission")

    def admit(start: tuple[int, int], age_band: int, depth: int = 0):
        if orng.random() < VIA_AE:  # arrived through A&E a few hours before
            arrive = g._plus(start, -60 * (1 + int(orng.random() * 5)))
            p.add("encounter", g.ENC_AE, arrive, source="acute-pas", setting="acute", status="finished", end=start,
                  attrs=g.EMER)
            prof.events.append(("ae_attendance", arrive, start))
        same_day = orng.random() < (0.3 if age_band < 3 else 0.2)
        if same_day:
            end = (start[0], min(1439, start[1] + 60 * (2 + int(orng.random() * 8))))
        else:
            mean = LOS_MEAN[age_band] * LOS_FRAILTY[frail]
            sigma = 0.8
            los = min(90, max(1, round(orng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma))))
            end = (start[0] + los, 600 + int(orng.random() * 480))
        code = emergency_codes[int(orng.random() * len(emergency_codes))]
        still_in = end[0] > p.as_of_ord  # not yet discharged on the as-of date: an open period
        p.add("encounter", code, start, source="acute-pas", setting="acute",
              status="in-progress" if still_in else "finished", end=None if still_in else end,
              attrs=g.IMP, extra=realcodes.legacy("emergency_admission", code))
        prof.events.append(("emergency_admission", start, end))
        p_readmit = min(0.30, 0.07 + 0.02 * len(conds) + READMIT_FRAILTY[frail])
        if depth < 3 and orng.random() < p_readmit:
            day = end[0] + 1 + int(orng.random() * 30)
            if day <= hi:
                admit((day, int(orng.random() * 1440)), age_band, depth + 1)

    if hi < lo:
        p.profile = prof
        return prof
    years = (hi - lo + 1) / 365.25
    birth = p.birth
    cut_ord = eff.start.toordinal() if in_pilot else None
    rc = 1 + eff.relative_change if in_pilot else 1.0
    top_band = band(_age(birth, hi))  # rates rise with age: the highest band in the window bounds them

    def rate(day: int, base: tuple, person_hr: float, outcome: str) -> float:
        date = dt.date.fromordinal(day)
        r = base[band(_age(birth, day))] * person_hr * (1 + 0.12 * math.cos(2 * math.pi * (date.month - 1) / 12))
        if outcome == "emergency_admission":
            r = min(3.0, r)
        if cut_ord is not None and day >= cut_ord and outcome in eff.outcomes:
            r *= rc
        return r

    # Each hazard by thinning (Lewis & Shedler 1979): candidates from a Poisson process at the highest
    # rate the window reaches, each kept with probability rate(day) / highest.
    for outcome, base, person_hr in (("emergency_admission", BASE_ADMISSION, adm_person),
                                     ("ae_attendance", BASE_AE, ae_person)):
        top = base[top_band] * person_hr * 1.12
        if outcome == "emergency_admission":
            top = min(3.0, base[top_band] * person_hr) * 1.12
        top *= max(1.0, rc) if outcome in (eff.outcomes if eff else ()) else 1.0
        days = sorted(lo + int(orng.random() * (hi - lo + 1)) for _ in range(poisson(orng, top * years)))
        for day in days:
            if orng.random() * top >= rate(day, base, person_hr, outcome):
                continue
            t = (day, int(orng.random() * 1440))
            if outcome == "emergency_admission":
                admit(t, band(_age(birth, day)))
            else:
                end = g._plus(t, 60 * (1 + int(orng.random() * 8)))
                p.add("encounter", g.ENC_AE, t, source="acute-pas", setting="acute", status="finished", end=end,
                      attrs=g.EMER)
                prof.events.append(("ae_attendance", t, end))
    for _ in range(poisson(orng, (0.03 + 0.002 * p.age) * years)):
        t = (lo + int(orng.random() * (hi - lo + 1)), 480 + int(orng.random() * 240))
        p.add("encounter", g.ENC_ADMIT, t, source="acute-pas", setting="acute", status="finished",
              end=g._plus(t, 120 + 1440 * int(orng.random() * 4)), attrs=g.IMP)
    if not model.record:  # the registers the evaluation reads, without the rest of the record
        if "dm" in conds:
            codes = p.C["dm_t1" if p.age < 30 else "dm_t2"]
            p.add("condition", codes[int(orng.random() * len(codes))], (p.start_day - int(orng.random() * 3650), 600),
                  status="active", attrs=g.CONFIRMED)
        if frail in ("moderate", "severe"):
            codes = p.C[f"frail_{frail}"]
            p.add("observation", codes[int(orng.random() * len(codes))], (p.last_day - int(orng.random() * 700), 600))
    p.profile = prof
    return prof
