"""Outcome evaluation (issue 19): the synthetic hazard model, the outcome table and its standardised
rates, and a planted effect recovered by the difference-in-differences within its interval."""
import datetime as dt
from collections import Counter

import pytest

from engine.app.outcomes.did import did, savings
from engine.app.outcomes.rates import poisson_limits, series, standard
from engine.app.outcomes.report import Options, build, pilot_practices
from engine.app.outcomes.table import OutcomeTable
from tests.outcomes_reference import from_generator, from_records
from engine.synthetic.generate import generate, person, practices
from engine.synthetic.outcomes import Effect, OutcomeModel

AS_OF = dt.date(2026, 11, 1)
START = dt.date(2025, 5, 1)
PILOT = frozenset(p.ods for p in practices() if p.locality in ("central", "north"))  # 48 of 108 practices
# 40,000 people: about 14,000 emergency admissions over the 35 months, enough for the interval of a 10 %
# change to exclude no change (standard error of the log ratio about 0.04).
N = 40_000


@pytest.fixture(scope="module")
def planted():
    return from_generator(N, 1, AS_OF, OutcomeModel(effect=Effect(PILOT, START, -0.10), record=False))


def test_the_evaluation_recovers_a_planted_ten_percent_fall(planted):
    d = did(planted, "emergency_admission", "all", set(PILOT), "2025-05")
    assert (d.pilot_practices, d.rest_practices) == (48, 60)
    lo, hi = d.change_ci("bootstrap")
    assert lo < -0.10 < hi and hi < 0, (d.relative_change, lo, hi)
    lo, hi = d.change_ci("poisson")
    assert lo < -0.10 < hi and hi < 0
    assert -0.15 < d.relative_change < -0.05
    # the placebo (a pretend start half-way through the before period) finds nothing
    plo, phi = d.placebo.change_ci("bootstrap")
    assert plo < 0 < phi
    # A&E attendances had no effect planted; they fall only by the admissions that came through A&E (3 in 4
    # admissions, about a quarter of attendances): their interval is well short of -10 %
    ae = did(planted, "ae_attendance", "all", set(PILOT), "2025-05", placebo=False)
    assert ae.change_ci()[0] > -0.10 and -0.06 < ae.relative_change < 0.03
    # bed days are not independent events (a stay is many days): the Poisson interval is not given for them
    beds = did(planted, "bed_days", "all", set(PILOT), "2025-05", placebo=False)
    assert beds.ci_poisson is None and beds.ci_bootstrap is not None and any("bed days" in w for w in beds.warnings)
    s = savings(d, 2000.0)
    assert s.admissions_avoided > 0 and s.value_per_year == pytest.approx(s.per_year * 2000)
    assert s.label.startswith("Scenario")


def test_the_report_has_spc_funnel_comparison_and_scenario(planted):
    r = build(planted, Options(cohort="all", level="mdt", unit="central-1", pilot=pilot_practices(planted, "central,north"),
                               start_month="2025-05", resamples=200))
    assert len(r["series"]) == 35 and r["series"][0]["month"] == "2023-12"
    assert r["spc"]["baseline_points"] == 17  # limits from the months before the start
    assert {u["label"] for u in r["funnel"]["units"]} == {p.ods for p in practices()}
    assert r["comparison"]["pilot_practices"] == 48
    assert r["savings_scenario"]["label"].startswith("Scenario") and "not a measured saving" in r["savings_scenario"]["note"]
    with pytest.raises(ValueError):
        pilot_practices(planted, "nowhere")


def test_hazards_rise_with_frailty_conditions_and_age():
    model = OutcomeModel(record=False)
    people = [person(i, 3, AS_OF, model) for i in range(8000)]
    admissions, n = Counter(), Counter()
    for p in people:
        groups = ["frail-" + p.profile.frailty] if p.age >= 65 else []
        groups.append("diabetes" if "dm" in p.profile.conditions else "no-diabetes")
        groups.append("85+" if p.age >= 85 else "under-45" if p.age < 45 else "other")
        for g in groups:
            n[g] += 1
            admissions[g] += sum(e[0] == "emergency_admission" for e in p.profile.events)
    rate = {g: admissions[g] / n[g] for g in n}
    assert rate["frail-severe"] > rate["frail-moderate"] > rate["frail-mild"] > rate["frail-fit"]
    assert rate["diabetes"] > 1.3 * rate["no-diabetes"]
    assert rate["85+"] > 3 * rate["under-45"]


def test_stays_and_readmissions_come_from_the_model():
    people = [person(i, 4, AS_OF, OutcomeModel(record=False)) for i in range(3000)]
    stays, readmitted = [], 0
    for p in people:
        adm = sorted((s, e) for o, s, e in p.profile.events if o == "emergency_admission")
        for (s, e), (s2, _e2) in zip(adm, adm[1:]):
            if e is not None and 0 < s2[0] - e[0] <= 30:
                readmitted += 1
        stays += [e[0] - s[0] for s, e in adm if e is not None]
        assert all(p.start_day <= s[0] <= p.last_day for s, _ in adm)
    assert min(stays) == 0 and max(stays) > 14 and 2 < sum(stays) / len(stays) < 8
    assert readmitted > 0.04 * len(stays)


def test_deterministic_and_the_same_with_or_without_the_record():
    a = person(17, 5, AS_OF, OutcomeModel())
    b = person(17, 5, AS_OF, OutcomeModel(record=False))
    c = person(17, 5, AS_OF, OutcomeModel())
    assert a.profile.events == b.profile.events == c.profile.events
    assert a.facts == c.facts and len(a.facts) > len(b.facts)
    assert person(17, 5, AS_OF).profile is None  # the default generator is untouched (no hazard model)


def test_the_effect_touches_only_pilot_practices_after_the_start():
    cut = START.toordinal()
    plain, eff = OutcomeModel(record=False), OutcomeModel(effect=Effect(PILOT, START, -0.5), record=False)
    seen = Counter()
    for i in range(600):
        a, b = person(i, 6, AS_OF, plain), person(i, 6, AS_OF, eff)
        if a.practice.ods not in PILOT:
            assert a.profile.events == b.profile.events
            seen["rest"] += 1
        else:
            before = lambda p: [e for e in p.profile.events if e[0] == "emergency_admission" and e[1][0] < cut]  # noqa: E731
            assert before(a) == before(b)
            seen["pilot"] += 1
    assert seen["rest"] and seen["pilot"]
    with pytest.raises(ValueError):
        Effect(PILOT, START, -1.5)
    with pytest.raises(ValueError):
        Effect(PILOT, START, -0.1, outcomes=("deaths",))


def test_records_adapter_reads_the_same_events_as_the_model():
    model = OutcomeModel()
    records = list(generate(60, seed=8, as_of=AS_OF, outcomes=model))
    from_recs = from_records(records, AS_OF)
    from_gen = from_generator(60, 8, AS_OF, model)
    for outcome in ("emergency_admission", "ae_attendance", "bed_days", "readmission_30d"):
        assert [p.events for p in series(from_recs, outcome, "all")] == [p.events for p in series(from_gen, outcome, "all")]
    assert [round(p.person_years, 9) for p in series(from_recs, "ae_attendance", "all")] == \
        [round(p.person_years, 9) for p in series(from_gen, "ae_attendance", "all")]


def _dtm(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def test_rates_and_direct_standardisation_by_hand():
    t = OutcomeTable(AS_OF)
    assert t.months[0] == dt.date(2023, 12, 1) and t.months[-1] == dt.date(2026, 10, 1) and len(t.months) == 35
    # practice A: a woman of 30, admitted 3-5 January 2024 and again on 20 January (a readmission, 3 nights)
    t.add_person("A", "m1", "l1", dt.date(1994, 6, 1), "female", dt.date(2000, 1, 1), AS_OF, [],
                 [("emergency_admission", _dtm("2024-01-03T10:00"), _dtm("2024-01-05T11:00")),
                  ("emergency_admission", _dtm("2024-01-20T10:00"), _dtm("2024-01-23T11:00")),
                  ("ae_attendance", _dtm("2024-01-20T06:00"), _dtm("2024-01-20T10:00"))])
    # practice B: a man of 80 (75-84 throughout), admitted once in January 2024; registered from 16 January
    t.add_person("B", "m2", "l1", dt.date(1946, 3, 1), "male", dt.date(2024, 1, 16), AS_OF, ["older-frail"],
                 [("emergency_admission", _dtm("2024-01-17T10:00"), None),
                  ("ae_attendance", _dtm("2024-01-10T10:00"), _dtm("2024-01-10T14:00"))])  # before registering: not counted
    t.finish()
    jan = 1
    py_a, py_b = 31 / 365.25, 16 / 365.25
    area = series(t, "emergency_admission", "all")
    assert area[jan].events == 3 and area[jan].person_years == pytest.approx(py_a + py_b)
    assert area[jan].crude == pytest.approx(1000 * 3 / (py_a + py_b))
    # the standard: the area's person-years by band and sex over all months (A: 35 months, B: from 16 Jan 2024)
    w = standard(t, "all")
    total_a = (dt.date(2026, 11, 1) - dt.date(2023, 12, 1)).days / 365.25
    total_b = (dt.date(2026, 11, 1) - dt.date(2024, 1, 16)).days / 365.25
    assert w[(1, "female")] == pytest.approx(total_a / (total_a + total_b))
    assert area[jan].standardised == pytest.approx(1000 * (w[(1, "female")] * 2 / py_a + w[(4, "male")] * 1 / py_b))
    # December 2023: only A is registered, so her stratum alone carries the standardised rate
    assert area[0].standardised == 0 and area[0].person_years == pytest.approx(31 / 365.25)
    a_only = series(t, "emergency_admission", "all", {"A"})
    assert a_only[jan].standardised == pytest.approx(1000 * 2 / py_a)
    assert series(t, "readmission_30d", "all")[jan].events == 1
    # bed days: 2 + 3 nights for A; B is still in on the as-of date (1 Nov 2026): counted to then
    assert series(t, "bed_days", "all", {"A"})[jan].events == 5
    assert series(t, "bed_days", "all", {"B"})[jan].events == (AS_OF - dt.date(2024, 1, 17)).days
    assert series(t, "ae_attendance", "all")[jan].events == 1
    # cohorts: B alone is in the older-frail cohort
    assert series(t, "emergency_admission", "older-frail")[jan].events == 1
    assert t.practices("mdt", "m1") == {"A"} and t.practices("locality", "l1") == {"A", "B"}


def test_funnel_limits():
    lo, hi = poisson_limits(100, 1.959964)
    assert lo == pytest.approx((10 - 0.979982) ** 2 / 100) and hi == pytest.approx((10 + 0.979982) ** 2 / 100)
    assert poisson_limits(0, 1.96) is None


def test_the_protocol_measures_adapter_counts_what_the_records_hold():
    """from_measure_values (o1's per-person values of pilot-outcomes' `value:` measures, one period a month)
    against a direct count from the same records: people aged 75 or over at the month's start, their
    emergency admissions starting in the month."""
    from engine.app.outcomes.table import age_on, from_measure_values
    from tests.outcomes_reference import _codes
    from tests.unit.cached import shipped_library

    proto = shipped_library().find("pilot-outcomes")
    # the people aged 70 or over chosen on the generator's raw person, then only they built as records
    old = [i for i in range(400) if age_on(person(i, 9, AS_OF, OutcomeModel()).birth, AS_OF) >= 70][:30]
    records = [next(generate(1, seed=9, as_of=AS_OF, start=i, outcomes=OutcomeModel())) for i in old]
    assert len(records) == 30 and all(age_on(r.patient.birth_date, AS_OF) >= 70 for r in records)
    t = from_measure_values(records, proto, AS_OF, months=1)
    assert [m.strftime("%Y-%m") for m in t.months] == ["2026-10"]
    first, last = dt.date(2026, 10, 1), dt.date(2026, 10, 31)
    emergency = _codes("emergency_admission.csv")  # the list pilot-outcomes reads
    people = [r for r in records if age_on(r.patient.birth_date, first) >= 75
              and (r.patient.death_date is None or r.patient.death_date >= first)]
    admissions = sum(1 for r in people for f in r.facts if f.kind == "encounter" and first <= f.start.date() <= last
                     and {c.code for c in f.codes} & emergency)
    got = series(t, "emergency_admission", "75-plus")[0]
    assert got.person_years == pytest.approx(len(people) * 31 / 365.25)
    assert got.events == admissions
    assert "75-plus" in t.cohorts() and "diabetes" in t.cohorts()


def test_overdispersion_by_hand():
    from engine.app.outcomes.rates import FunnelUnit, overdispersion

    # twenty units each expecting 100 (sqrt 10): z-scores -2 .. 2 twice over, the largest made an outlier (5)
    z = sorted([-2, -1.5, -1, -0.5, 0, 0, 0.5, 1, 1.5, 2] * 2)
    z[-1] = 5
    units = [FunnelUnit(str(i), 100 + 10 * v, 100.0, 1000.0, (100 + 10 * v) / 100, None, None, "within")
             for i, v in enumerate(z)]
    # winsorised at the 10th and 90th centiles (the 2nd and 19th of twenty: -2 and 2), so the outlier counts
    # as 2: phi = (4+4 + 2.25+2.25 + 1+1 + 0.25+0.25 + 0 x 4 + 0.25+0.25 + 1+1 + 2.25+2.25 + 4+4) / 20 = 1.5
    phi, outside = overdispersion(units)
    assert phi == pytest.approx(1.5)
    # 95 % limits widened by sqrt(1.5): |z| > 1.96 x 1.2247 = 2.40 -> only the outlier
    assert outside == 1
    assert overdispersion(units[:5]) == (None, 0)  # too few units to estimate it
