"""A small, hand-written demo population for the diabetes pathway.

Dates are relative to the reference date so the demo always shows a realistic mix: a patient
with overdue checks and a high HbA1c, a frail older patient, a well-controlled patient, one who
declined care, a newly diagnosed patient and one with an active foot problem.
"""
from __future__ import annotations

import datetime as dt

from dateutil.relativedelta import relativedelta

from engine.records.model import Fact, Patient, PatientRecord

SCT = "http://snomed.info/sct"
SYN = "https://carepath.example/CodeSystem/synthetic"
T2DM = "44054006"
HBA1C = "999791000000106"
SYS_BP = "72313002"
DIA_BP = "1091811000000102"
EGFR = "1011481000000105"
ACR = "1023491000000104"
CHOL = "1005671000000105"
FOOT = "401191002"
FOOT_ACTIVE = "371087003"
BMI = "60621009"
SMOKING_NEVER = "266919005"
RETINAL = "390735004"  # retscreen_local.csv: no published RETSCREN_COD copy (t2dm 1.2.0 declares the cluster)
EMERGENCY_ADMISSION = "183452005"  # Emergency hospital admission: emergency_admission.csv (and the older clinical_local.csv)
MOD_FRAIL = "925831000000107"
DECLINED = "716031000000106"


def _fact(fid: str, kind: str, code: str, when: dt.date, value=None, unit=None, setting="gp", system=SCT,
          source="gp-system", **extra) -> Fact:
    return Fact(id=fid, kind=kind, codes=[{"system": system, "code": code}], start=when, value=value, unit=unit,
                care_setting=setting, source_system=source, **extra)


def demo_records(as_of: dt.date) -> list[PatientRecord]:
    ago = lambda **kw: as_of - relativedelta(**kw)  # noqa: E731

    def annual_checks(prefix: str, when: dt.date, hba1c: float, sbp: float, dbp: float, egfr: float = 75) -> list[Fact]:
        return [
            _fact(f"{prefix}-hba1c", "observation", HBA1C, when, hba1c, "mmol/mol", source="pathology-lims"),
            _fact(f"{prefix}-sbp", "observation", SYS_BP, when, sbp, "mm[Hg]"),
            _fact(f"{prefix}-dbp", "observation", DIA_BP, when, dbp, "mm[Hg]"),
            _fact(f"{prefix}-egfr", "observation", EGFR, when, egfr, "mL/min/{1.73_m2}", source="pathology-lims"),
            _fact(f"{prefix}-acr", "observation", ACR, when, 2.1, "mg/mmol", source="pathology-lims"),
            _fact(f"{prefix}-chol", "observation", CHOL, when, 4.6, "mmol/L", source="pathology-lims"),
            _fact(f"{prefix}-bmi", "observation", BMI, when, 29.4, "kg/m2"),
            _fact(f"{prefix}-smok", "observation", SMOKING_NEVER, when),
            _fact(f"{prefix}-foot", "procedure", FOOT, when, setting="community", source="community-ehr"),
        ]

    people = [
        # 1. Overdue checks and a high HbA1c: tasks for the practice, GP review, DSN review.
        (Patient(nhs_number="9434765919", birth_date=dt.date(1958, 3, 2), sex="female", practice="A81001",
                 locality="central", mdt="central-1", given_name="Amina", family_name="Begum"),
         [_fact("p1-dx", "condition", T2DM, ago(years=11)),
          *annual_checks("p1-2024", ago(months=20), 61, 142, 86),
          _fact("p1-hba1c-2", "observation", HBA1C, ago(months=3), 78, "mmol/mol", source="pathology-lims"),
          _fact("p1-ret", "procedure", RETINAL, ago(months=13), source="desp")]),
        # 2. Frail, 84, HbA1c 70: DM021 met, BP above the 80+ target, kidney function falling.
        (Patient(nhs_number="4010232137", birth_date=dt.date(1942, 7, 19), sex="male", practice="A81002",
                 locality="central", mdt="central-1", given_name="George", family_name="Hill"),
         [_fact("p2-dx", "condition", T2DM, ago(years=20)),
          _fact("p2-frail", "observation", MOD_FRAIL, ago(months=8)),
          *annual_checks("p2-2026", ago(months=4), 70, 156, 78, egfr=27),
          _fact("p2-ret", "procedure", RETINAL, ago(months=5), source="desp"),
          _fact("p2-adm", "encounter", EMERGENCY_ADMISSION, ago(months=2), setting="acute", source="acute-pas")]),
        # 3. Well controlled, everything done: all met, goals achieved.
        (Patient(nhs_number="9876543210", birth_date=dt.date(1970, 1, 30), sex="female", practice="A81001",
                 locality="central", mdt="central-1", given_name="Sarah", family_name="Jones"),
         [_fact("p3-dx", "condition", T2DM, ago(years=6)),
          *annual_checks("p3-2026", ago(months=2), 46, 128, 78),
          _fact("p3-ret", "procedure", RETINAL, ago(months=3), source="desp")]),
        # 4. Declined diabetes care this year: checks excepted, not counted against the practice.
        (Patient(nhs_number="9990000018", birth_date=dt.date(1965, 11, 5), sex="male", practice="A81003",
                 locality="central", mdt="central-2", given_name="Tom", family_name="Reed"),
         [_fact("p4-dx", "condition", T2DM, ago(years=4)),
          _fact("p4-dec", "observation", DECLINED, ago(months=2))]),
        # 5. Newly diagnosed 3 months ago: first checks due, not yet overdue.
        (Patient(nhs_number="9990000026", birth_date=dt.date(1980, 4, 12), sex="female", practice="A81002",
                 locality="central", mdt="central-1", given_name="Priya", family_name="Shah"),
         [_fact("p5-dx", "condition", T2DM, ago(months=3)),
          _fact("p5-hba1c", "observation", HBA1C, ago(months=3), 59, "mmol/mol", source="pathology-lims")]),
        # 6. Active foot ulcer seen by community nursing last week: urgent referral and MDT escalation.
        (Patient(nhs_number="9990000034", birth_date=dt.date(1950, 9, 23), sex="male", practice="A81003",
                 locality="central", mdt="central-2", given_name="Frank", family_name="Osei"),
         [_fact("p6-dx", "condition", T2DM, ago(years=15)),
          *annual_checks("p6-2026", ago(months=6), 66, 138, 82),
          _fact("p6-ulcer", "condition", FOOT_ACTIVE, ago(days=6), setting="community", source="community-ehr")]),
    ]
    return [PatientRecord(patient=p, facts=f) for p, f in people]


def reporting_dates(as_of: dt.date) -> list[dt.date]:
    """Reporting dates for the demo's audit trend: the last three quarter ends and the day itself."""
    def quarter_end_before(d: dt.date) -> dt.date:
        return dt.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1) - dt.timedelta(days=1)

    q0 = quarter_end_before(as_of)
    q1 = quarter_end_before(q0)
    return [quarter_end_before(q1), q1, q0, as_of]


HISTORY = dt.timedelta(days=21)  # the demo registry was first evaluated three weeks before its reference date


def demo_now(as_of: dt.date, real_now: dt.datetime | None = None) -> dt.datetime:
    """The clock the demo raises tasks by: the real time (UTC) when seeding as of today — never a time
    later than the clock a user then sees, or tasks look raised in the future — else midday of the day."""
    real_now = real_now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return real_now if as_of == real_now.date() else dt.datetime.combine(as_of, dt.time(12))

