"""Provider opening hours and the response-time clocks (engine.opening_hours, engine.calendar), and the role
agreement fields that use them (`hours:` on a party, `refer_to` / `action` on an assign entry)."""
from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from engine.calendar import add_working_days, is_bank_holiday, is_working_day, parse_response
from engine.opening_hours import HoursError, parse_hours
from engine.language.agreements import load_agreement
from engine.language.errors import ProtocolError

D = dt.datetime
GP = parse_hours({"weekdays": "08:00-18:30", "bank_holidays": "closed"})
ROUND_THE_CLOCK = parse_hours("24/7")
FOUR_HOURS, TWO_HOURS = parse_response("4 hours"), parse_response("2 hours")

# England and Wales bank holidays as gov.uk lists them (https://www.gov.uk/bank-holidays), substitute days included.
GOV_UK = {
    2025: ["2025-01-01", "2025-04-18", "2025-04-21", "2025-05-05", "2025-05-26", "2025-08-25", "2025-12-25", "2025-12-26"],
    2026: ["2026-01-01", "2026-04-03", "2026-04-06", "2026-05-04", "2026-05-25", "2026-08-31", "2026-12-25", "2026-12-28"],
    2027: ["2027-01-01", "2027-03-26", "2027-03-29", "2027-05-03", "2027-05-31", "2027-08-30", "2027-12-27", "2027-12-28"],
    2028: ["2028-01-03", "2028-04-14", "2028-04-17", "2028-05-01", "2028-05-29", "2028-08-28", "2028-12-25", "2028-12-26"],
}


@pytest.mark.parametrize("year", sorted(GOV_UK))
def test_bank_holidays_are_the_gov_uk_list(year):
    days = [dt.date(year, 1, 1) + dt.timedelta(days=i) for i in range(366) if (dt.date(year, 1, 1) + dt.timedelta(days=i)).year == year]
    assert [d.isoformat() for d in days if is_bank_holiday(d)] == GOV_UK[year]


def test_working_days_skip_weekends_and_bank_holidays():
    assert not is_working_day(dt.date(2027, 5, 31))  # spring bank holiday
    assert add_working_days(D(2027, 5, 28, 9, 0), 1) == D(2027, 6, 1, 9, 0)  # Friday -> Tuesday
    assert add_working_days(D(2027, 3, 25, 9, 0), 1) == D(2027, 3, 30, 9, 0)  # Maundy Thursday -> Tuesday after Easter
    assert add_working_days(D(2027, 12, 24, 9, 0), 1) == D(2027, 12, 29, 9, 0)  # Christmas and Boxing Day substitutes


@pytest.mark.parametrize("raised, due", [
    (D(2026, 11, 20, 16, 0), D(2026, 11, 23, 9, 30)),   # Friday 16:00: 2.5 h Friday, 1.5 h Monday
    (D(2026, 11, 20, 16, 30), D(2026, 11, 23, 10, 0)),  # Friday 16:30: 2 h Friday, 2 h Monday
    (D(2027, 5, 28, 16, 0), D(2027, 6, 1, 9, 30)),      # Friday before a bank-holiday Monday: Tuesday
    (D(2027, 3, 25, 16, 0), D(2027, 3, 30, 9, 30)),     # Maundy Thursday: Good Friday, weekend, Easter Monday closed
    (D(2026, 12, 24, 16, 0), D(2026, 12, 29, 9, 30)),   # Christmas Eve 2026: Christmas Day, Boxing Day (Mon 28th)
    (D(2026, 11, 21, 23, 0), D(2026, 11, 23, 12, 0)),   # raised Saturday night: the clock starts Monday 08:00
    (D(2026, 11, 23, 6, 0), D(2026, 11, 23, 12, 0)),    # raised before opening
    (D(2026, 11, 23, 9, 0), D(2026, 11, 23, 13, 0)),    # inside opening hours: as the clock
    (D(2026, 11, 23, 14, 30), D(2026, 11, 23, 18, 30)), # ends exactly at closing time
])
def test_four_hours_at_a_gp_practice_count_its_opening_hours(raised, due):
    assert FOUR_HOURS.due_from(raised, GP) == due


def test_a_round_the_clock_provider_and_one_without_hours_use_the_wall_clock():
    assert TWO_HOURS.due_from(D(2026, 11, 21, 23, 0), ROUND_THE_CLOCK) == D(2026, 11, 22, 1, 0)  # Saturday 23:00 -> Sunday 01:00
    assert TWO_HOURS.due_from(D(2026, 12, 25, 10, 0), ROUND_THE_CLOCK) == D(2026, 12, 25, 12, 0)  # Christmas Day
    assert FOUR_HOURS.due_from(D(2026, 11, 20, 16, 0)) == D(2026, 11, 20, 20, 0)  # no hours given: as before
    assert ROUND_THE_CLOCK.always and not GP.always


def test_deadlines_in_closed_time_move_to_the_last_closing_time_or_the_next_opening():
    assert GP.fit(D(2026, 11, 21, 16, 0), D(2026, 11, 20, 16, 0)) == D(2026, 11, 20, 18, 30)  # Saturday -> Friday close
    assert GP.fit(D(2026, 11, 23, 19, 0), D(2026, 11, 23, 9, 0)) == D(2026, 11, 23, 18, 30)  # evening -> that day's close
    assert GP.fit(D(2026, 11, 20, 18, 30), D(2026, 11, 20, 9, 0)) == D(2026, 11, 20, 18, 30)  # closing time itself is kept
    assert GP.fit(D(2026, 11, 22, 10, 0), D(2026, 11, 21, 10, 0)) == D(2026, 11, 23, 8, 0)  # raised in the same closed spell
    assert GP.fit(D(2027, 5, 31, 12, 0), D(2027, 5, 27, 9, 0)) == D(2027, 5, 28, 18, 30)  # bank holiday -> Friday close
    assert ROUND_THE_CLOCK.fit(D(2026, 11, 22, 3, 0), D(2026, 11, 21, 3, 0)) == D(2026, 11, 22, 3, 0)


def test_hours_forms():
    split = parse_hours({"weekdays": ["08:30-12:30", "13:30-17:00"], "saturday": "09:00-12:00"})
    assert FOUR_HOURS.due_from(D(2026, 11, 23, 11, 0), split) == D(2026, 11, 23, 16, 0)  # 1.5 h, lunch closed, 2.5 h
    assert FOUR_HOURS.due_from(D(2026, 11, 20, 16, 0), split) == D(2026, 11, 21, 12, 0)  # 1 h Friday, 3 h Saturday
    seven = parse_hours({"every_day": "08:00-20:00", "bank_holidays": "open"})
    assert seven.is_open(D(2026, 12, 25, 9, 0)) and not seven.is_open(D(2026, 12, 25, 21, 0))
    late = parse_hours({"weekdays": "18:00-24:00", "weekends": "00:00-24:00", "bank_holidays": "open"})
    assert TWO_HOURS.due_from(D(2026, 11, 20, 23, 30), late) == D(2026, 11, 21, 1, 30)  # runs through midnight


@pytest.mark.parametrize("value, message", [
    ("office hours", "expected 24/7"),
    ({"weekdays": "8-6"}, "is not a time range"),
    ({"weekdays": "18:30-08:00"}, "should end after it starts"),
    ({"weekday": "08:00-18:30"}, "unknown day 'weekday'"),
    ({"weekdays": "closed"}, "never open"),
    ({"weekdays": ["08:00-13:00", "12:00-18:00"]}, "overlap"),
])
def test_unreadable_hours_say_what_is_wrong(value, message):
    with pytest.raises(HoursError, match=message):
        parse_hours(value)


AGREEMENT = """\
agreement: hours-test
version: 1.0.0
title: Hours test
owner: test
parties:
  - {{id: practice, kind: gp, name: The practice, hours: {hours}}}
  - {{id: clinic, kind: acute, name: Renal clinic}}
assign:
  - {{activity: p/*, provider: practice, respond: {{routine: 5 working days}}}}
  - {{activity: p/{target}, provider: practice, role: gp, refer_to: {refer_to}, respond: {{routine: 5 working days}}}}
"""


def _agreement(tmp_path, hours='{weekdays: "08:00-18:30"}', target="rule:r", refer_to="clinic"):
    path = tmp_path / "a.yaml"
    path.write_text(textwrap.dedent(AGREEMENT.format(hours=hours, target=target, refer_to=refer_to)), encoding="utf-8")
    return load_agreement(path)


def test_an_agreement_reads_hours_and_referrals(tmp_path):
    ag = _agreement(tmp_path)
    assert ag.hours["practice"].is_open(D(2026, 11, 23, 9, 0)) and not ag.hours["practice"].is_open(D(2026, 12, 25, 9, 0))
    assert "clinic" not in ag.hours  # no hours: round the clock
    assert ag.assigns[1].refer_to == "clinic" and ag.party_names["clinic"] == "Renal clinic"


@pytest.mark.parametrize("kw, message", [
    ({"hours": '{weekdays: "8am-6pm"}'}, "a.yaml:6:.*is not a time range"),
    ({"refer_to": "clinc"}, "refer_to 'clinc' is not one of the parties.*did you mean 'clinic'"),
    ({"target": "annual-review"}, "refer_to / action name one task"),
])
def test_agreement_errors_point_at_the_line(tmp_path, kw, message):
    with pytest.raises(ProtocolError, match=message):
        _agreement(tmp_path, **kw)


def test_any_pathway_default_is_the_weakest_entry(tmp_path):
    from engine.language.agreements import resolve
    path = tmp_path / "any.yaml"
    path.write_text(textwrap.dedent("""\
        agreement: any-test
        version: 1.0.0
        title: Any pathway
        owner: test
        parties:
          - {id: practice, kind: gp}
          - {id: clinic, kind: acute}
        assign:
          - {activity: "*/*", provider: practice, team: practice team, respond: {routine: 10 working days}}
          - {activity: p/*, provider: clinic, respond: {routine: 5 working days}}
          - {activity: "*/*", where: {practice: A81001}, provider: clinic, respond: {routine: 5 working days}}
        """), encoding="utf-8")
    ag = load_agreement(path)
    place = {"locality": "central", "mdt": "central-1", "practice": "A81002"}
    assert resolve([ag], "ckd", "rule:kfre-above-5", place).assign.provider == "practice"  # a pathway nobody named
    assert resolve([ag], "p", "rule:x", place).assign.provider == "clinic"  # the pathway's own wildcard wins
    assert resolve([ag], "p", "rule:x", {**place, "practice": "A81001"}).assign.provider == "clinic"
    assert resolve([ag], "q", "a", {**place, "practice": "A81001"}).assign.provider == "clinic"  # where still counts
    path.write_text(path.read_text().replace('"*/*", where', '"*/rule:x", where'), encoding="utf-8")
    with pytest.raises(ProtocolError, match="any protocol .* takes only"):
        load_agreement(path)
