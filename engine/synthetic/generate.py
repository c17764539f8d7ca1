"""A synthetic population for an English urban area: reproducible, streamed, realistic enough to audit.

    generate(n, seed, as_of)            -> PatientRecords, one at a time (memory stays flat)
    write_population(out, n, seed, ...) -> patients / facts / fact_codings / fact_attrs as Parquet,
                                           written by worker processes straight from rows (no pydantic)

Structure: 5 localities, 9 MDTs (neighbourhood teams), 108 GP practices with ODS-style codes (one
letter + five digits) and list sizes of 3,000-16,000; NHS numbers valid under Modulus 11, taken
from the 999 range reserved for testing (then the 4xx block past ~900,000 patients).

People: an urban age pyramid (about 7 % aged 75+), sex by age; long-term conditions by age with
practice-level variation (deprivation): diabetes (about 6.5 % of adults), hypertension, heart
failure, COPD, asthma, depression; frailty by an eFI-style deficit count for people aged 65+
(fit / mild / moderate / severe, coded by the practice for most of those it finds), some deaths.

Records: about 50 coded facts per person over the 3 years before `as_of`, from several settings
and source systems (gp-system, pathology-lims, acute-pas, community-ehr, mental-health, social-care,
desp): consultations, blood pressure, BMI, smoking status, laboratory results, prescriptions,
vaccinations, reviews, admissions, A&E, community and social-care contacts, eFI deficit codes.
People with diabetes get the annual care processes with realistic gaps: engagement varies (some
miss checks, some are invited twice without answer, some decline or are unsuitable), results are
out of target at realistic rates, an occasional HbA1c comes in DCCT % (converted) or in a wrong unit
(a data problem), and a few facts are entered in error and corrected.

Every code is sampled from the codelists the protocols use (protocols/valuesets/*.csv). The same
person comes out of `generate` and `write_population` for the same (seed, index): each person has
their own random stream, so the population does not depend on how it was split across workers.
"""
from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from engine.records.nhs_number import check_digit
from engine.synthetic import diagnoses, realcodes
from engine.synthetic.draws import CONFIRMED, EMER, ENC_ADMIT, ENC_AE, IMP, _plus, _poisson  # noqa: F401 (re-exported)

VALUESETS = Path(__file__).resolve().parents[2] / "protocols" / "valuesets"
SCT = "http://snomed.info/sct"
DMD = "https://dmd.nhs.uk"
SYN = "https://carepath.example/CodeSystem/synthetic"

LOCALITIES = {"central": ["central-1", "central-2"], "north": ["north-1", "north-2"], "south": ["south-1", "south-2"],
              "east": ["east-1", "east-2"], "west": ["west-1"]}
ODS_LETTER = {"central": "F", "north": "E", "south": "G", "east": "H", "west": "Y"}
PRACTICES_PER_MDT = 12  # 9 MDTs x 12 = 108 practices

# An English urban population (5-year bands to 90+), per cent; 75+ ~ 7 %.
AGE_BANDS = [6.5, 6.3, 6.0, 5.5, 6.8, 8.3, 8.8, 8.2, 7.3, 6.5, 6.3, 5.8, 4.8, 3.8, 3.3, 3.2, 2.3, 1.4, 0.8]

# Codes not in any shipped codelist (consultations, admissions, contacts), SNOMED CT.
ENC_GP = ("185317003", "Telephone encounter"), ("185389009", "Follow-up visit"), ("390906007", "Follow-up encounter")
ENC_COMMUNITY = "308335008"  # Patient encounter procedure (community nursing visit)
ENC_MH = "1109421000000105"  # Mental health contact (used for mental-health service contacts)
ENC_SOCIAL = "416038001"  # Social care assessment
PULSE = "78564009"       # Pulse rate
# Medicines: dm+d codes from the published lists (engine/synthetic/realcodes.py), the older synthetic code as
# a second coding. Metformin, amlodipine and tiotropium have no list in the pack: synthetic codes only (no
# protocol version in force from 2027-04-01 reads them).
METFORMIN = ("metformin", "Metformin (synthetic code)")
ANTIHYPERTENSIVES = ("amlodipine", "ramipril", "indapamide", "losartan")
HF_MEDS = ("bisoprolol", "furosemide")
COPD_INHALERS = ("tiotropium-inhaler", "ics-laba-inhaler")
ORDER = {"intent": "order"}
_PREFIX = {"gp-system": "gp", "pathology-lims": "lab", "acute-pas": "pas", "community-ehr": "com", "mental-health": "mh",
           "social-care": "sc", "desp": "desp"}
AMB = {"class": "AMB"}
SALBUTAMOL = ("salbutamol-inhaler", "Salbutamol inhaler (synthetic code)")
ANTIDEPRESSANT = ("sertraline", "Sertraline (synthetic code)")


# ---- codelists --------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def codelist(file: str, column: str | None = None, keep: tuple = ()) -> tuple[str, ...]:
    """Codes of a shipped codelist, optionally only rows whose `column` is in `keep`."""
    with (VALUESETS / file).open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    return tuple(r["code"].strip() for r in rows if column is None or (r.get(column) or "").strip() in keep)


@lru_cache(maxsize=None)
def efi_deficits() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    with (VALUESETS / "efi_deficits_snomed.csv").open(newline="", encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["deficit"].strip(), []).append(r["code"].strip())
    return {k: tuple(v) for k, v in sorted(out.items())}


@lru_cache(maxsize=None)
def codes() -> dict[str, tuple[str, ...]]:
    dm = set(codelist("dm_cod.csv"))
    t2 = tuple(c for c in codelist("dmtype2_cod.csv") if c in dm) or codelist("dm_cod.csv")
    t1 = tuple(c for c in codelist("dmtype1_cod.csv") if c in dm) or codelist("dm_cod.csv")
    pca = lambda cl: codelist("qof_pca_invite_codes.csv", "cluster", (cl,))  # noqa: E731
    return {
        "dm_t2": t2, "dm_t1": t1, "dm_res": codelist("dmres_cod.csv"),
        "hba1c": codelist("ifcchbam_cod.csv"), "sbp": codelist("sysbp_cod.csv"), "dbp": codelist("diabp_cod.csv"),
        # the published CHOL2_COD / CRE_COD codes that the older local lists hold too
        "chol": realcodes.real("cholesterol"), "creat": realcodes.real("creatinine"), "egfr": codelist("egfr.csv"),
        "acr": codelist("urine_acr.csv"), "bmi": codelist("bmival_cod.csv"),
        "smok_current": codelist("smoking_status.csv", "status", ("current",)),
        "smok_ex": codelist("smoking_status.csv", "status", ("ex",)),
        "smok_never": codelist("smoking_status.csv", "status", ("never",)),
        "foot_none": codelist("footexam_local.csv", "risk", ("",)),
        "foot_low": codelist("footexam_local.csv", "risk", ("low",)),
        "foot_moderate": codelist("footexam_local.csv", "risk", ("moderate",)),
        "foot_high": codelist("footexam_local.csv", "risk", ("high",)),
        "foot_active": codelist("footexam_local.csv", "risk", ("active",)),
        "retinal": codelist("retscreen_local.csv"), "education": codelist("education_local.csv"),
        "hypo_meds": codelist("hypo_meds_synthetic.csv"),
        "dm_declined": pca("DMPCADEC_COD"), "dm_unsuitable": pca("DMPCAPU_COD"), "blood_declined": pca("BLDTESTDEC_COD"),
        "dm_max": pca("DMMAX_COD"), "dm_invite": pca("DMINVITE_COD"), "hyp_invite": pca("HYPINVITE_COD"),
        "frail_mild": codelist("frailty_cod.csv", "severity", ("mild",)),
        "frail_moderate": codelist("frailty_cod.csv", "severity", ("moderate",)),
        "frail_severe": codelist("frailty_cod.csv", "severity", ("severe",)),
        "hyp": codelist("hyp_cod.csv"), "hf": codelist("hf_cod.csv"), "copd": codelist("copd_cod.csv"),
        "copd_review": codelist("copdrvw_cod.csv"), "asthma": codelist("ast_cod.csv"),
        "asthma_review": codelist("ast_review_rev_cod.csv"), "depression": codelist("depr_cod.csv"),
        "med_review": codelist("medrvw_cod.csv"), "flu": codelist("flu_cod.csv"), "flu_drug": codelist("fludrug_cod_dmd.csv"),
        "statin": codelist("stat_cod_vmp_dmd.csv"), "pneumo": codelist("pneumococcal_vaccination.csv"),
        "palliative": codelist("palcare_cod.csv"), "carehome": codelist("carehome_cod.csv"),
    }


# ---- structure ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Practice:
    ods: str
    locality: str
    mdt: str
    list_size: int
    deprivation: float  # multiplies long-term condition risk (0.75 .. 1.45)
    engagement: float   # how reliably this practice completes annual checks (0.8 .. 1.1)


@lru_cache(maxsize=None)
def practices() -> tuple[Practice, ...]:
    """108 practices in 9 MDTs in 5 localities; fixed (the same for every seed)."""
    rng = random.Random(20260401)
    out = []
    for loc, mdts in LOCALITIES.items():
        numbers = rng.sample(range(1, 99999), len(mdts) * PRACTICES_PER_MDT)
        for i, mdt in enumerate(mdts):
            for j in range(PRACTICES_PER_MDT):
                num = numbers[i * PRACTICES_PER_MDT + j]
                size = int(min(16000, max(3000, rng.lognormvariate(math.log(8000), 0.4))))
                out.append(Practice(f"{ODS_LETTER[loc]}{num:05d}", loc, mdt, size,
                                    round(rng.uniform(0.75, 1.45), 3), round(rng.uniform(0.8, 1.1), 3)))
    return tuple(out)


@lru_cache(maxsize=None)
def _practice_cdf() -> list[float]:
    total, acc, cdf = sum(p.list_size for p in practices()), 0.0, []
    for p in practices():
        acc += p.list_size / total
        cdf.append(acc)
    return cdf


_valid_prefixes: list[int] = []
_cursor = [999000000]


def nhs_number_for(index: int) -> str:
    """The index-th valid NHS number of the 999 range (reserved for testing), then of the 4xx block."""
    while len(_valid_prefixes) <= index:
        k = _cursor[0]
        _cursor[0] = 400000000 if k == 999999999 else k + 1
        nine = f"{k:09d}"
        c = check_digit(nine)
        if c is not None and len(set(nine + str(c))) > 1:
            _valid_prefixes.append(k)
    k = _valid_prefixes[index]
    return f"{k:09d}{check_digit(f'{k:09d}')}"


# ---- times: (day ordinal, minute of day) pairs; strings and datetimes only when written ------------------
_HM = [f"{h:02d}:{m:02d}:00" for h in range(24) for m in range(60)]
_DAY: dict[int, str] = {}


def _ts(t: tuple[int, int]) -> str:
    d = _DAY.get(t[0])
    if d is None:
        d = _DAY[t[0]] = dt.date.fromordinal(t[0]).isoformat()
    return f"{d} {_HM[t[1]]}"


def _dt(t: tuple[int, int]) -> dt.datetime:
    return dt.datetime.fromordinal(t[0]) + dt.timedelta(minutes=t[1])


# ---- one person ---------------------------------------------------------------------------------------
class _Person:
    """Draws one person's record as raw rows (the shape of engine/engines/duckdb/columnar.py)."""

    def __init__(self, index: int, seed: int, as_of: dt.date, outcomes=None):
        self.rng = rng = random.Random(f"{seed}:{index}")
        self.seed, self.outcomes, self.deficits, self.profile = seed, outcomes, None, None
        self.r = rng.random
        self.index, self.as_of, self.as_of_ord = index, as_of, as_of.toordinal()
        self.start_day = as_of.toordinal() - 3 * 365  # the 3-year window of recorded care
        self.facts: list[list] = []
        self.C = codes()
        band = _pick_band(rng)
        self.age = min(104, band * 5 + rng.randrange(5)) if band < len(AGE_BANDS) - 1 else 90 + int(rng.expovariate(0.25))
        birth_ord = as_of.toordinal() - self.age * 365 - rng.randrange(365)
        self.birth = dt.date.fromordinal(birth_ord)
        self.birth_ord = birth_ord
        self.age = as_of.year - self.birth.year - ((as_of.month, as_of.day) < (self.birth.month, self.birth.day))
        female_share = 0.5 if self.age < 60 else 0.53 if self.age < 80 else 0.62
        u = rng.random()
        self.sex = "unknown" if u < 0.002 else "female" if u < 0.002 + female_share * 0.998 else "male"
        self.practice = practices()[min(len(practices()) - 1, bisect.bisect_left(_practice_cdf(), rng.random()))]
        self.nhs = nhs_number_for(index)
        self.registered = dt.date.fromordinal(max(birth_ord, as_of.toordinal() - int(rng.expovariate(1 / 3650))))
        self.n = 0

    # -- helpers --
    def when(self, lo: int | None = None, hi: int | None = None, hours=(8, 18)) -> tuple[int, int]:
        """A random (day, minute) in [lo, hi] (default: the 3-year window), within the hours given."""
        lo = self.start_day if lo is None else max(lo, self.birth_ord)
        hi = self.as_of_ord if hi is None else min(hi, self.as_of_ord)
        if hi < lo:  # an empty window (e.g. onset age not reached by as_of): its last day, never after as_of
            lo = hi
        r = self.r
        return (lo + int(r() * (hi - lo + 1)), hours[0] * 60 + int(r() * (hours[1] - hours[0]) * 60))

    def add(self, kind: str, code: str, start: dt.datetime, value=None, unit=None, *, system=SCT, source="gp-system",
            setting="gp", status=None, end=None, exc=None, value_codes=None, attrs=None, extra=None) -> list:
        """A fact row; `extra`: further codings ((system, code), ...) after the first."""
        self.n += 1
        f = [f"{_PREFIX.get(source, 'x')}-{self.nhs}-{self.n}", kind, system, code, start, end, value, unit, status, source, setting,
             exc, value_codes, attrs, extra]
        self.facts.append(f)
        return f

    def add_real(self, kind: str, concept: str, start, value=None, unit=None, code: str | None = None, **kw) -> list:
        """A fact coded from a published list (realcodes.REAL), with the older coding second (realcodes.LEGACY)."""
        if code is None:
            c = realcodes.real(concept)
            code = c[int(self.r() * len(c))]
        return self.add(kind, code, start, value, unit, extra=realcodes.legacy(concept, code), **kw)

    def repeats_real(self, concept: str, per_year: float, since: int | None = None, until: int | None = None):
        """Repeat prescriptions of one product (dm+d, published list) of `concept`."""
        c = realcodes.real(concept)
        code = c[int(self.r() * len(c))]
        self.repeats(code, per_year, system=DMD, since=since, until=until, extra=realcodes.legacy(concept, code))

    def pick(self, key: str) -> str:
        c = self.C[key]
        return c[int(self.r() * len(c))]

    def lab(self, key: str, start: dt.datetime, value: float, unit: str, **kw) -> list:
        return self.add("observation", self.pick(key), start, value, unit, source="pathology-lims", status="final", **kw)

    def chance(self, p: float) -> bool:
        return self.r() < p

    # -- the person's story --
    def build(self):
        rng, age, dep = self.rng, self.age, self.practice.deprivation
        conditions = []
        adult = age >= 17
        p_dm = 0 if age < 17 else (0.012 if age < 40 else 0.05 if age < 50 else 0.09 if age < 60 else 0.14 if age < 70
                                   else 0.17 if age < 80 else 0.15)
        self.dm = self.chance(p_dm * dep)
        p_hyp = 0 if age < 18 else (0.02 if age < 40 else 0.08 if age < 50 else 0.18 if age < 60 else 0.30 if age < 70
                                    else 0.42 if age < 80 else 0.50)
        self.hyp = self.chance(min(0.9, p_hyp * dep * (1.8 if self.dm else 1.0)))
        p_hf = 0.0005 if age < 50 else 0.005 if age < 65 else 0.015 if age < 75 else 0.04 if age < 85 else 0.08
        self.hf = self.chance(p_hf * (1.6 if self.dm else 1) * dep)
        p_copd = 0 if age < 35 else 0.005 if age < 50 else 0.02 if age < 65 else 0.05 if age < 75 else 0.07
        self.copd = self.chance(p_copd * dep)
        self.asthma = self.chance(0.08 if age < 18 else 0.06)
        p_dep = 0 if age < 18 else 0.15 if age < 55 else 0.11
        self.depression = self.chance(p_dep * (0.8 + 0.3 * dep))
        # atrial fibrillation (NICE CKS: about 2.5 % of all ages in England, rising steeply with age)
        p_af = 0.001 if age < 50 else 0.01 if age < 65 else 0.05 if age < 75 else 0.10 if age < 85 else 0.16
        self.af = self.chance(p_af * (1.3 if self.hyp or self.hf else 1.0))
        self.smoker = "current" if self.chance(0.13 * dep) else "ex" if self.chance(0.25 if age > 40 else 0.08) else "never"
        conditions = [x for x in (self.dm, self.hyp, self.hf, self.copd, self.asthma, self.depression, self.af) if x]
        self.deceased = None
        p_death = 0.0005 if age < 50 else 0.004 if age < 70 else 0.02 if age < 80 else 0.06 if age < 90 else 0.15
        if self.chance(p_death * (1 + 0.3 * len(conditions))):
            earliest = max(self.as_of.toordinal() - 700, self.birth.toordinal())  # a baby dies after its birth
            self.deceased = dt.date.fromordinal(rng.randint(earliest, self.as_of.toordinal()))
        self.last_day = self.deceased.toordinal() if self.deceased else self.as_of.toordinal()
        if self.outcomes is not None:  # hospital outcomes from the hazard model (engine/synthetic/outcomes.py)
            from engine.synthetic import outcomes as hazard

            hazard.prepare(self, {"dm": self.dm, "hyp": self.hyp, "hf": self.hf, "copd": self.copd,
                                  "asthma": self.asthma, "depression": self.depression, "af": self.af})
            hazard.add_events(self, self.outcomes)
            if not self.outcomes.record:
                return

        # everyone: consultations, BP / BMI / smoking at some of them
        visits_per_year = 2.6 + 0.08 * max(age - 20, 0) + 2.0 * len(conditions)
        for _ in range(_poisson(rng, visits_per_year * 3)):
            t = self.when(hi=self.last_day)
            code = rng.choice(ENC_GP)[0]
            self.add("encounter", code, t, status="finished", attrs=AMB)
            if adult and self.chance(0.35):
                self.bp(t, target=self.hyp)
            if adult and self.chance(0.12):
                self.add("observation", self.pick("bmi"), t, round(rng.gauss(27.5, 5), 1), "kg/m2", status="final")
            if adult and self.chance(0.10):
                self.smoking(t)
            if self.chance(0.15):
                self.add("observation", PULSE, t, float(rng.randint(52, 110)), "/min", status="final")
        if age >= 65 or conditions:
            for y in range(3):
                if self.chance(0.7 if age >= 65 else 0.45):
                    d = dt.date(self.as_of.year - y, 10, 1).toordinal()
                    if d <= self.last_day:
                        t = self.when(d, d + 75)
                        self.add("procedure", self.pick("flu"), t, status="completed")
                        self.add("medication", self.pick("flu_drug"), t, system=DMD, status="completed")
            if age >= 65 and self.chance(0.05):
                self.add("procedure", self.pick("pneumo"), self.when(), status="completed")
        if self.outcomes is None:  # the older flat rates (with an OutcomeModel: the hazard model, above)
            # hospital and A&E
            for _ in range(_poisson(rng, (0.25 + 0.01 * age) * 3 * (1 + 0.5 * len(conditions)) * 0.4)):
                t = self.when(hi=self.last_day, hours=(0, 24))
                self.add("encounter", ENC_AE, t, source="acute-pas", setting="acute", status="finished",
                         end=_plus(t, 60 * rng.randint(1, 9)), attrs=EMER)
            for _ in range(_poisson(rng, (0.02 + 0.004 * age) * 3 * (1 + 0.6 * len(conditions)))):
                t = self.when(hi=self.last_day, hours=(0, 24))
                if self.chance(0.7):  # about 70 % of admissions are emergencies (published code; in the older list too)
                    self.add_real("encounter", "emergency_admission", t, source="acute-pas", setting="acute",
                                  status="finished", end=_plus(t, 1440 * rng.randint(1, 14)), attrs=IMP)
                else:
                    self.add("encounter", ENC_ADMIT, t, source="acute-pas", setting="acute", status="finished",
                             end=_plus(t, 1440 * rng.randint(1, 14)), attrs=IMP)
        # long-term conditions
        if self.dm:
            self.diabetes()
        if self.hyp:
            onset = self.condition("hyp", years=12, review=None)
            for code in rng.sample(ANTIHYPERTENSIVES, 1 + (self.r() < 0.4)):
                if code == "amlodipine":  # no published calcium-channel blocker list in the pack
                    self.repeats(code, 12, since=onset[0])
                else:
                    self.repeats_real(code, 12, since=onset[0])
            if self.chance(0.015):
                self.add_real("condition", "hyp_res", self.when(onset[0] + 1, self.last_day))
            if self.chance(0.02):
                self.add("exception", realcodes.real("hyp_max")[0], self.when(self.last_day - 300, self.last_day),
                         exc="unsuitable")
            if self.chance(0.04):  # invited twice, no answer (QOF personalised care adjustment)
                first = self.when(self.last_day - 300, self.last_day - 60)
                self.add("exception", self.pick("hyp_invite"), first, exc="invited-no-response")
                self.add("exception", self.pick("hyp_invite"), self.when(first[0] + 14, first[0] + 60),
                         exc="invited-no-response")
        if self.dm or self.hyp:
            self.cardiovascular()
        if not self.dm and (self.hyp or self.hf or self.af):
            self.kidney_bloods()
        if self.hf:
            self.heart_failure()
        if self.af:
            self.atrial_fibrillation()
        if self.copd:
            onset = self.condition("copd", years=8, review="copd_review")
            inhaler = rng.choice(COPD_INHALERS)
            if inhaler == "tiotropium-inhaler":  # no published LAMA list in the pack
                self.repeats(inhaler, 8, since=onset[0])
            else:
                self.repeats_real(inhaler, 8, since=onset[0])
            if self.chance(0.06):
                self.add_real("encounter", "copd_admission", self.when(onset[0], self.last_day), source="acute-pas",
                              setting="acute", status="finished", attrs=IMP)
            if self.chance(0.01):
                self.add_real("condition", "copd_res", self.when(onset[0] + 1, self.last_day))
        if self.asthma:
            self.asthma_care()
        if self.depression:
            self.depression_care()
        if (self.hyp or self.dm or self.hf) and age >= 40 and self.chance(0.6):
            self.repeats(self.pick("statin"), 12, system=DMD)
        if age >= 65:
            self.frailty(len(conditions))
        if age >= 75 and self.chance(0.04):
            self.add("encounter", self.pick("carehome"), self.when(), status="finished")
        if self.deceased is not None and self.chance(0.4):
            self.add("procedure", self.pick("palliative"), self.when(self.last_day - 120, self.last_day), status="completed")
        # data-quality noise: a result entered in error, then corrected
        if self.facts and self.chance(0.01):
            f = self.rng.choice(self.facts)
            if f[6] is not None:
                wrong = list(f)
                self.n += 1
                wrong[0] = f"{f[0]}-eie"
                wrong[6] = round(f[6] * 10, 1)
                wrong[8] = "entered-in-error"
                self.facts.append(wrong)

    def repeats(self, code: str, per_year: float, system: str = SYN, since: int | None = None, until: int | None = None,
                extra=None):
        """Repeat prescriptions: issues every 365/per_year days (with jitter) from `since` to the last day."""
        step = 365 / per_year
        d = max(self.start_day, since or self.start_day) + self.r() * step
        attrs = ORDER
        last = self.last_day if until is None else min(until, self.last_day)
        r, facts, prefix = self.r, self.facts, f"gp-{self.nhs}-"
        while d <= last:
            if r() < 0.92:  # some issues are not collected / not requested (rows as self.add writes them)
                self.n += 1
                facts.append([prefix + str(self.n), "medication", system, code, (int(d), 480 + int(r() * 600)), None, None,
                              None, "active", "gp-system", "gp", None, None, attrs, extra])
            d += step * (0.8 + 0.4 * r())

    # -- conditions read by the protocol versions in force from 2027-04-01 (published codes) --
    def cardiovascular(self):
        """Established CVD (CHD, stroke, TIA, PAD: QOF DM035 lists), QRISK3, statin declined, antiplatelets."""
        age = self.age
        self.cvd = age >= 45 and self.chance(0.04 + 0.004 * (age - 45))
        if self.cvd:
            kind = self.rng.choices(["chd", "stroke", "tia", "pad"], [55, 22, 12, 11])[0]
            self.add_real("condition", kind, self.when(self.start_day - 365 * 5, self.last_day), status="active",
                          attrs=CONFIRMED)
            if self.chance(0.75):
                self.repeats_real("aspirin", 12)
        elif 40 <= age < 85 and self.chance(0.55):  # QRISK3 every few years (NG238)
            self.add_real("observation", "qrisk", self.when(self.last_day - 3 * 365, self.last_day),
                          round(min(60.0, self.rng.lognormvariate(math.log(8 + 0.6 * max(age - 40, 0)), 0.5)), 1), "%",
                          status="final")
        if self.chance(0.05):  # statin declined (NG238; QOF DM034 exception)
            self.add_real("observation", "statin_declined", self.when(self.last_day - 700, self.last_day))

    def kidney_bloods(self):
        """Yearly U&E (eGFR, creatinine, potassium) for hypertension, heart failure and anticoagulation
        (NG136, NG106, NG196): done for about 3 in 4 each year."""
        rng = self.rng
        base = min(120.0, max(10.0, rng.gauss(88 - 0.55 * max(self.age - 40, 0), 16)))
        for y in range(3):
            if not self.chance(0.75):
                continue
            t = self.when(self.last_day - 365 * (y + 1), self.last_day - 365 * y)
            t = (t[0], 600)
            eg = round(max(5.0, base - 1.5 * (2 - y) + rng.gauss(0, 4)))
            self.lab("egfr", t, float(eg), "mL/min/{1.73_m2}")
            self.lab("creat", t, float(round(max(40.0, 7000 / max(eg, 5)))), "umol/L")
            if self.chance(0.8):
                self.add_real("observation", "potassium", t, round(rng.gauss(4.4, 0.4), 1), "mmol/L",
                              source="pathology-lims", status="final")
            if self.chance(0.55 if eg < 60 else 0.3):  # urine ACR (NG203: yearly in CKD; NG136 at diagnosis)
                self.lab("acr", self.when(t[0], t[0] + 30), round(rng.lognormvariate(math.log(1.5), 1.0), 1), "mg/mmol")

    def heart_failure(self):
        rng = self.rng
        onset = self.condition("hf", years=6, review="med_review")
        if self.chance(0.5):  # HFrEF: left ventricular systolic dysfunction on echo (HFLVSD_COD)
            self.add_real("condition", "hf_lvsd", self.when(onset[0], onset[0] + 60), status="active")
        for concept in HF_MEDS:
            self.repeats_real(concept, 12, since=onset[0])
        raas = rng.choices(["ramipril", "losartan", "sacubitril", None], [55, 20, 12, 13])[0]
        if raas:
            self.repeats_real(raas, 12, since=onset[0])
        if self.chance(0.4):
            self.repeats_real("spironolactone", 12, since=onset[0])
        if self.chance(0.35):
            self.repeats_real("dapagliflozin", 12, since=max(onset[0], self.last_day - 700))
        for y in range(3):
            if self.chance(0.75):
                t = self.when(self.last_day - 365 * (y + 1), self.last_day - 365 * y)
                self.add_real("observation", "potassium", t, round(rng.gauss(4.4, 0.45), 1), "mmol/L",
                              source="pathology-lims", status="final")
            if self.chance(0.6):
                self.add_real("observation", "weight", self.when(self.last_day - 365 * (y + 1), self.last_day - 365 * y),
                              round(rng.gauss(84, 16), 1), "kg", status="final")
        if self.chance(0.01):
            self.add_real("condition", "hf_res", self.when(onset[0] + 1, self.last_day))
        for _ in range(_poisson(rng, 4)):
            self.add("encounter", ENC_COMMUNITY, self.when(hi=self.last_day), source="community-ehr",
                     setting="community", status="finished")

    def atrial_fibrillation(self):
        rng = self.rng
        onset = self.condition("af", years=10, review=None, real=True)
        anticoag = rng.choices(["apixaban", "warfarin", None], [72, 12, 16])[0]
        if anticoag:
            self.repeats_real(anticoag, 12, since=onset[0])
        elif self.chance(0.3):
            self.repeats_real("aspirin", 12, since=onset[0])
        for y in range(3):
            if self.chance(0.6):
                self.add_real("observation", "haemoglobin",
                              self.when(self.last_day - 365 * (y + 1), self.last_day - 365 * y),
                              round(rng.gauss(135, 15)), "g/L", source="pathology-lims", status="final")

    def asthma_care(self):
        """QOF AST005 / AST007: inhalers in the last 12 months; a review with ACT, exacerbations and plan."""
        rng = self.rng
        onset = self.condition("asthma", years=20, review=None)
        for _ in range(_poisson(rng, 7.5)):
            self.add_real("medication", "salbutamol-inhaler", self.when(), system=DMD, status="active", attrs=ORDER)
        if self.chance(0.7):
            self.repeats_real("beclometasone-inhaler", 6)
        for y in range(3):
            if not self.chance(0.7):
                continue
            t = self.when(self.last_day - 365 * (y + 1), self.last_day - 365 * y)
            self.add("procedure", self.pick("asthma_review"), t, status="completed")
            if self.chance(0.8):
                self.add_real("observation", "act" if self.age >= 12 else "acq", t, float(rng.randint(10, 25)),
                              status="final")
            if self.chance(0.8):
                self.add_real("observation", "asthma_exacerbations", t, float(min(6, _poisson(rng, 0.5))),
                              status="final")
            if self.chance(0.7):
                self.add_real("procedure", "asthma_plan", t, status="completed")
            if 12 <= self.age <= 19 and self.chance(0.6):  # QOF AST008: smoking status of young people
                self.smoking(t)
        for _ in range(_poisson(rng, 0.3)):
            self.add_real("medication", "prednisolone", self.when(), system=DMD, status="active", attrs=ORDER)
        if self.chance(0.01):
            self.add_real("encounter", "asthma_admission", self.when(), source="acute-pas", setting="acute",
                          status="finished", attrs=IMP)
        if self.chance(0.02):
            self.add_real("condition", "asthma_res", self.when(onset[0] + 1, self.last_day))

    def depression_care(self):
        """A new episode gets a review 10-56 days after diagnosis (QOF DEP003) for most; antidepressants."""
        rng = self.rng
        onset = self.condition("depression", years=5, review=None)
        if self.chance(0.7):
            t = self.when(onset[0] + 10, onset[0] + 56)
            if t[0] <= self.last_day:
                self.add_real("procedure", "depression_review", t, status="completed")
        if self.r() < 0.6:
            self.repeats_real(rng.choice(["sertraline", "sertraline", "mirtazapine"]), 10,
                              since=max(onset[0], self.last_day - int(self.r() * 900)))
        if self.chance(0.35):
            self.add_real("referral", "iapt_referral", self.when(onset[0], onset[0] + 30), status="active")
        if self.chance(0.04):
            self.add_real("observation", "self_harm_risk", self.when(onset[0], self.last_day))
        if self.chance(0.08):
            self.add_real("condition", "depression_res", self.when(onset[0] + 180, self.last_day))
        for _ in range(_poisson(rng, 2)):
            self.add("encounter", ENC_MH, self.when(hi=self.last_day), source="mental-health",
                     setting="mental-health", status="finished")

    def bp(self, t: dt.datetime, target: bool, high: float = 0.0):
        sbp = self.rng.gauss(138 if target else 124, 15) + high
        dbp = self.rng.gauss(82 if target else 76, 9) + high / 3
        self.add("observation", self.pick("sbp"), t, float(round(sbp)), "mm[Hg]", status="final")
        self.add("observation", self.pick("dbp"), t, float(round(dbp)), self.rng.choice(["mm[Hg]", "mmHg"]), status="final")

    def smoking(self, t: dt.datetime):
        self.add("observation", self.pick({"current": "smok_current", "ex": "smok_ex", "never": "smok_never"}[self.smoker]), t)

    def condition(self, key: str, years: int, review: str | None, real: bool = False):
        onset = self.when(max(self.birth_ord + 365 * 2, self.as_of.toordinal() - 365 * years), self.last_day)
        if real:
            self.add_real("condition", key, onset, status="active", attrs=CONFIRMED)
        else:
            self.add("condition", self.pick(key), onset, status="active", attrs=CONFIRMED)
        if review:
            for y in range(3):
                if self.chance(0.7):
                    self.add("procedure", self.pick(review), self.when(self.last_day - 365 * (y + 1), self.last_day - 365 * y),
                             status="completed")
        return onset

    def diabetes(self):
        rng = self.rng
        type1 = self.age < 40 and self.chance(0.35) or self.chance(0.06)
        self.dm_type1 = type1  # read by diagnoses.py (E10 / E11)
        onset_lo = max(self.birth_ord + 365 * (5 if type1 else 25), self.as_of.toordinal() - 365 * 25)
        onset = self.when(onset_lo, self.last_day)
        self.add("condition", self.pick("dm_t1" if type1 else "dm_t2"), onset, status="active",
                 attrs=CONFIRMED)
        if onset[0] > self.as_of.toordinal() - 365 * 2 and self.chance(0.6):  # structured education (NG28, DM014)
            ref = self.when(onset[0], onset[0] + 200)
            self.add_real("referral", "education_referral", ref, status="active")
            if self.chance(0.5):
                self.add_real("procedure", "education_attended", self.when(ref[0] + 14, ref[0] + 120), status="completed")
        if self.chance(0.01):  # resolved (remission coded as resolved), sometimes re-coded later
            res = self.when(onset[0] + 200, self.last_day)
            self.add("condition", self.pick("dm_res"), res, status="active")
            if self.chance(0.3):
                self.add("condition", self.pick("dm_t2"), self.when(res[0] + 1, self.last_day), status="active")
        # engagement: ~4/5 have their checks reliably, ~1/8 patchily, ~1/14 hardly at all; HbA1c around
        # 53 mmol/mol (type 2) so that roughly 60 % meet QOF DM020 (58 or less), as in England
        engagement = rng.random() * self.practice.engagement
        p_done = 0.95 if engagement > 0.2 else 0.75 if engagement > 0.07 else 0.3
        hba1c_base = min(130.0, max(36.0, rng.gauss(62 if type1 else 53, 11)))
        sbp_high = rng.gauss(6, 8)
        egfr_base = min(120.0, max(8.0, rng.gauss(78 - 0.3 * max(self.age - 50, 0), 20)))
        acr_base = rng.lognormvariate(math.log(1.6), 1.1)
        foot_risk = rng.choices(["foot_low", "foot_moderate", "foot_high", "foot_none"], [55, 20, 8, 17])[0]
        self.hypo = type1 or self.chance(0.28)
        if self.hypo:
            hypo_code = rng.choice([c for c in self.C["hypo_meds"] if ("insulin" in c) == type1] or self.C["hypo_meds"])
            self.repeats(hypo_code, 12, since=onset[0])
        if not type1:
            self.repeats(METFORMIN[0], 12, since=onset[0])
            # SGLT2 inhibitors (NG28 / NG203): about a quarter on type 2 treatment, more with kidney disease
            if self.chance(0.55 if egfr_base < 60 or acr_base >= 3 else 0.2):
                self.repeats_real("dapagliflozin", 12, since=max(onset[0], self.last_day - 900))
        if acr_base >= 3 and not self.hyp and self.chance(0.7):  # ACE inhibitor / ARB for albuminuria (NG203)
            self.repeats_real(rng.choice(["ramipril", "lisinopril", "losartan"]), 12, since=onset[0])
        for y in range(3):  # care-process years, most recent first
            hi = self.last_day - 365 * y
            lo = max(hi - 364, onset[0])
            if lo > hi:
                break
            if engagement < 0.07 and self.chance(0.6):  # invited, no answer
                first = self.when(lo, hi - 60)
                self.add("exception", self.pick("dm_invite"), first, exc="invited-no-response")
                self.add("exception", self.pick("dm_invite"), self.when(first[0] + 14, first[0] + 60),
                         exc="invited-no-response")
            if self.chance(0.03):
                self.add("exception", self.pick("dm_declined"), self.when(lo, hi), exc="declined")
                continue
            if self.chance(0.008):
                self.add("exception", self.pick("dm_unsuitable"), self.when(lo, hi), exc="unsuitable")
            if self.chance(0.01):
                self.add("exception", self.pick("blood_declined"), self.when(lo, hi), exc="declined")
            if self.chance(0.02):
                self.add("exception", self.pick("dm_max"), self.when(lo, hi), exc="unsuitable")
            review = self.when(lo, hi)
            r_ord = review[0]
            if self.chance(p_done):  # blood tests at the review
                lab_t = (review[0], 60 * rng.randint(10, 17))
                for _ in range(1 + (hba1c_base > 58 and self.chance(0.5))):
                    v = max(30.0, round(hba1c_base + rng.gauss(0, 6) - 2 * y))
                    u = rng.random()
                    if u < 0.02:  # a laboratory reporting DCCT %
                        self.lab("hba1c", lab_t, round(v / 10.929 + 2.15, 1), "%")
                    elif u < 0.022:  # a wrong unit: a data problem, the test still counts
                        self.lab("hba1c", lab_t, round(v / 18, 1), "mmol/L")
                    else:
                        self.lab("hba1c", lab_t, float(v), "mmol/mol")
                    lab_t = (self.when(r_ord + 60, min(hi + 120, self.last_day))[0], 660)
                if self.chance(0.95):
                    self.lab("chol", (review[0], 720), round(max(2.2, rng.gauss(4.3, 1.0)), 1), "mmol/L")
                if self.chance(0.95):
                    eg = round(max(4.0, egfr_base - 2.5 * (2 - y) + rng.gauss(0, 4)))
                    self.lab("egfr", (review[0], 720), float(eg), "mL/min/{1.73_m2}")
                    cr = round(max(40.0, 7000 / max(eg, 5)))
                    self.lab("creat", (review[0], 720), float(cr), "umol/L")
            if self.chance(p_done * 0.85):
                self.lab("acr", self.when(r_ord, r_ord + 30), round(acr_base * rng.lognormvariate(0, 0.3), 1), "mg/mmol")
            if self.chance(p_done):
                self.bp(review, target=True, high=sbp_high)
            if self.chance(p_done * 0.9):
                self.add("observation", self.pick("bmi"), review, round(rng.gauss(31, 5.5), 1), "kg/m2", status="final")
            if self.chance(p_done * 0.95):
                self.smoking(review)
            if self.chance(p_done * 0.8):
                where = self.chance(0.3)
                self.add("procedure", self.pick(foot_risk), self.when(r_ord, r_ord + 60) if where else review,
                         source="community-ehr" if where else "gp-system", setting="community" if where else "gp",
                         status="completed")
            if self.chance(0.82 if engagement > 0.07 else 0.4):
                self.add("procedure", self.pick("retinal"), self.when(lo, hi), source="desp", setting="community",
                         status="completed")
        if self.chance(0.004):
            self.add("condition", self.pick("foot_active"), self.when(self.last_day - 20, self.last_day),
                     source="community-ehr", setting="community", status="active")

    def frailty(self, n_conditions: int):
        rng = self.rng
        # eFI-style deficit count, calibrated to Clegg et al. 2016 for ages 65+: about 50 % fit, 35 % mild,
        # 11 % moderate, 4 % severe (gamma-Poisson: people differ beyond age and coded conditions)
        if self.deficits is None:
            lam = (3.2 + 0.1 * (self.age - 65) + 0.9 * n_conditions) * rng.gammavariate(5, 0.2)
            deficits = min(30, _poisson(rng, lam))
        else:  # drawn by the outcome model, whose hazard depends on it
            deficits = self.deficits
        names = rng.sample(list(efi_deficits()), min(deficits, len(efi_deficits())))
        for name in names:
            self.add("condition" if rng.random() < 0.7 else "observation", rng.choice(efi_deficits()[name]),
                     self.when(self.start_day - 365 * 3, self.last_day))
        efi = deficits / 36
        cat = "fit" if efi <= 0.12 else "mild" if efi <= 0.24 else "moderate" if efi <= 0.36 else "severe"
        self.frailty_category = cat  # read by diagnoses.py
        if self.chance(0.45):  # the eFI the GP system calculates, recorded (EFI_COD)
            self.add_real("observation", "efi_score", self.when(self.last_day - 330, self.last_day), round(min(efi, 1.0), 2),
                          status="final")
        if self.chance(0.08):
            self.add_real("observation", "carer", self.when())
        elif self.chance(0.05):
            self.add_real("observation", "not_carer", self.when())
        if cat != "fit" and self.chance(0.65):
            self.add("observation", self.pick(f"frail_{cat}"), self.when(self.last_day - 700, self.last_day))
        if cat in ("moderate", "severe"):
            if self.chance(0.7):
                self.add("procedure", self.pick("med_review"), self.when(self.last_day - 364, self.last_day),
                         status="completed")
            for _ in range(_poisson(rng, 3 if cat == "severe" else 1.2)):
                self.add("encounter", ENC_SOCIAL, self.when(hi=self.last_day), source="social-care",
                         setting="social-care", status="finished")
            for _ in range(_poisson(rng, 5 if cat == "severe" else 2)):
                self.add("encounter", ENC_COMMUNITY, self.when(hi=self.last_day), source="community-ehr",
                         setting="community", status="finished")

    # -- output --
    def patient_row(self, pid: int) -> tuple:
        return (pid, self.nhs, self.birth.isoformat(), self.sex, self.practice.ods, self.practice.locality,
                self.practice.mdt, self.deceased.isoformat() if self.deceased else None, self.registered.isoformat())


def _pick_band(rng: random.Random) -> int:
    return bisect.bisect_left(_band_cdf(), rng.random())


@lru_cache(maxsize=None)
def _band_cdf() -> list[float]:
    total, acc, out = sum(AGE_BANDS), 0.0, []
    for w in AGE_BANDS:
        acc += w / total
        out.append(acc)
    out[-1] = 1.0
    return out


def person(index: int, seed: int, as_of: dt.date, outcomes=None) -> _Person:
    """One person; `outcomes` (engine.synthetic.outcomes.OutcomeModel) draws their hospital care from the
    hazard model (and can plant an effect) instead of the older flat rates."""
    p = _Person(index, seed, as_of, outcomes)
    p.build()
    diagnoses.add(p)  # ICD-10 diagnoses of the emergency admissions: a stream of their own, appended last
    return p


# ---- public API -----------------------------------------------------------------------------------------
def generate(n: int, seed: int = 1, as_of: dt.date | None = None, start: int = 0, outcomes=None) -> Iterator:
    """PatientRecords for people start .. start+n-1 of the population (seed), one at a time
    (`outcomes`: an engine.synthetic.outcomes.OutcomeModel, see person())."""
    from engine.records.model import Fact, Patient, PatientRecord

    as_of = as_of or dt.date.today()
    for i in range(start, start + n):
        p = person(i, seed, as_of, outcomes)
        facts = []
        for fid, kind, system, code, st, end, value, unit, status, source, setting, exc, vcodes, attrs, extra in p.facts:
            codings = [{"system": system, "code": code}]
            if system == diagnoses.ICD10:  # a hospital diagnosis: its published term (patient pages show it)
                codings[0]["display"] = diagnoses.terms().get(code)
            if extra:
                codings += [{"system": s, "code": c} for s, c in extra]
            facts.append(Fact(id=fid, kind=kind, codes=codings, start=_dt(st),
                              end=_dt(end) if end else None, value=value,
                              unit=unit, status=status, source_system=source, care_setting=setting, exception_type=exc,
                              value_codes=vcodes or [], attrs=attrs or {}))
        yield PatientRecord(patient=Patient(nhs_number=p.nhs, birth_date=p.birth, sex=p.sex, practice=p.practice.ods,
                                            locality=p.practice.locality, mdt=p.practice.mdt, death_date=p.deceased,
                                            registered_on=p.registered), facts=facts)


@lru_cache(maxsize=None)
def _attr_templates(null=None) -> dict[int, list[tuple]]:
    """attr rows (less pid, seq) of the constant attrs dicts most facts share."""
    from engine.engines.duckdb.columnar import attr_rows

    return {id(a): [tuple(null if v is None else v for v in r[2:]) for r in attr_rows(0, 0, a)]
            for a in (ORDER, AMB, EMER, IMP, CONFIRMED)}


def person_rows(pid: int, p: _Person, null=None):
    """(patient row, fact rows, coding rows, attr rows) exactly as columnar.record_rows gives for the
    same person's PatientRecord (tests/unit/test_population.py checks it); `null` stands for a missing
    value (columnar.NULL when the rows go straight to CSV)."""
    from engine.engines.duckdb.columnar import attr_rows

    facts, codings, attrs = [], [], []
    cache = _attr_templates(null)
    for seq, (fid, kind, system, code, st, end, value, unit, status, source, setting, exc, vcodes, fattrs,
              extra) in enumerate(p.facts):
        facts.append((pid, seq, fid, kind, system, code, _ts(st), null if end is None else _ts(end),
                      null if value is None else value, null if unit is None else unit,
                      null if status is None else status, source, setting, null if exc is None else exc))
        if extra:
            for i, (s, c) in enumerate(extra, start=1):
                codings.append((pid, seq, "code", i, s, c))
        if vcodes:
            for i, c in enumerate(vcodes):
                codings.append((pid, seq, "value_code", i, c["system"], c["code"]))
        if fattrs:
            tmpl = cache.get(id(fattrs))
            if tmpl is not None:
                attrs.extend((pid, seq) + t for t in tmpl)
            else:
                attrs.extend(tuple(null if v is None else v for v in r) for r in attr_rows(pid, seq, fattrs))
    prow = p.patient_row(pid)
    return (tuple(null if v is None else v for v in prow) if null is not None else prow), facts, codings, attrs


def _write_shard(args) -> dict:
    """Write people lo..hi-1 as CSV shard files; with a Parquet folder, turn them into
    `<table>/part-<shard>.parquet` right away (in this worker, so conversion runs in parallel too)."""
    folder, shard, lo, hi, seed, as_of = args[:6]
    parquet = args[6] if len(args) > 6 else None
    outcomes = args[7] if len(args) > 7 else None
    from engine.engines.duckdb.columnar import NULL, TABLES, CsvTables, read_csv_sql

    out = CsvTables(Path(folder), suffix=f"-{shard:04d}")
    n_facts = 0
    for i in range(lo, hi):
        prow, facts, codings, attrs = person_rows(i, person(i, seed, as_of, outcomes), null=NULL)
        out.write_encoded("patients", [prow])
        out.write_encoded("facts", facts)
        if codings:
            out.write_encoded("fact_codings", codings)
        if attrs:
            out.write_encoded("fact_attrs", attrs)
        n_facts += len(facts)
    out.close()
    paths = {t: str(p) for t, p in out.paths.items()}
    if parquet:
        import duckdb

        con = duckdb.connect()
        con.execute("SET threads = 1")
        con.execute("SET enable_progress_bar = false")
        for t in TABLES:
            target = Path(parquet) / t / f"part-{shard:04d}.parquet"
            con.execute(f"COPY (SELECT * FROM {read_csv_sql(t, [paths[t]])}) TO '{target}' "
                        f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 250000)")
            os.unlink(paths[t])
            paths[t] = str(target)
        con.close()
    return {"shard": shard, "patients": hi - lo, "facts": n_facts, "paths": paths}


def write_population(out: Path | str, n: int, seed: int = 1, as_of: dt.date | None = None, workers: int | None = None,
                     fmt: str = "parquet", shard_size: int = 25000, log=None, outcomes=None) -> dict:
    """Write the population's four tables under `out`: `<table>/part-<shard>.parquet` (zstd), or a
    `population.duckdb` file with fmt='duckdb'.

    Worker processes write CSV shards straight from rows and turn each into Parquet themselves.
    Memory stays flat: one person at a time per worker."""
    from multiprocessing import get_context

    import duckdb

    from engine.engines.duckdb.columnar import TABLES, load_csv_shards

    as_of = as_of or dt.date.today()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "_csv"
    for old in [tmp] + [out / t for t in TABLES]:
        shutil.rmtree(old, ignore_errors=True)
    for t in TABLES:
        (out / f"{t}.parquet").unlink(missing_ok=True)
        if fmt != "duckdb":
            (out / t).mkdir()
    tmp.mkdir()
    workers = workers or os.cpu_count() or 1
    parquet = str(out) if fmt != "duckdb" else None
    jobs = [(str(tmp), k, lo, min(n, lo + shard_size), seed, as_of, parquet, outcomes)
            for k, lo in enumerate(range(0, max(n, 1), shard_size))]
    t0 = time.perf_counter()
    if workers > 1 and len(jobs) > 1:
        with get_context("fork").Pool(workers) as pool:
            done = []
            for r in pool.imap_unordered(_write_shard, jobs):
                done.append(r)
                if log:
                    log(f"shard {r['shard']}: {r['patients']} patients, {r['facts']} facts")
    else:
        done = [_write_shard(j) for j in jobs]
    t_gen = time.perf_counter() - t0
    if fmt == "duckdb":
        shards = {t: [Path(r["paths"][t]) for r in sorted(done, key=lambda r: r["shard"])] for t in TABLES}
        con = duckdb.connect(str(out / "population.duckdb"))
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET threads = {max(1, workers)}")
        load_csv_shards(con, shards)
        con.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"patients": n, "facts": sum(r["facts"] for r in done), "seed": seed, "as_of": as_of.isoformat(),
            "generate_seconds": round(t_gen, 2), "total_seconds": round(time.perf_counter() - t0, 2),
            "out": str(out), "format": fmt}


def write_parquet(out: Path | str, n: int, seed: int = 1, as_of: dt.date | None = None,
                  workers: int | None = None) -> dict:
    """The population as Parquet tables under `out` (write_population with fmt='parquet')."""
    return write_population(out, n, seed=seed, as_of=as_of, workers=workers, fmt="parquet")
