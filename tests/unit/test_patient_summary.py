"""The patient summary an MDT reads at case conference (issue 16 item 6): units as clinicians write them,
no bare codes, no Read-era markers, active and past conditions apart, current medicines, admissions and
A&E attendances (not every mental-health contact), the meeting on a working day."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from api.routers.mdt import next_meeting_day
from api.web.summary import clean_term, summarise, unit_display
from tests.unit.cached import shipped_library
from engine.records.model import Coding, Fact, Patient, PatientRecord

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 12, 7)
SCT = "http://snomed.info/sct"


@pytest.fixture(scope="module")
def library():
    return shipped_library()


def fact(fid, kind, code, when, *, end=None, value=None, unit=None, display=None, setting="gp", **attrs):
    return Fact(id=fid, kind=kind, codes=[Coding(system=SCT, code=code, display=display)], start=when, end=end,
                value=value, unit=unit, care_setting=setting, source_system="test", attrs=attrs)


def test_summary_reads_like_a_clinical_summary(library):
    d = lambda days: dt.datetime.combine(DAY, dt.time(9)) - dt.timedelta(days=days)  # noqa: E731
    rec = PatientRecord(patient=Patient(nhs_number="9434765919", birth_date=dt.date(1950, 1, 1)), facts=[
        fact("dm", "condition", "44054006", d(4000)),                                   # type 2 diabetes (in DM_COD)
        fact("old", "condition", "999999999999", d(900), end=d(800), display="[D]Dizziness"),  # resolved
        fact("sbp", "observation", "72313002", d(10), value=150, unit="mm[Hg]"),
        fact("egfr", "observation", "1011481000000105", d(10), value=42, unit="mL/min/{1.73_m2}"),
        fact("rx", "medication", "111", d(20), display="Metformin 500mg tablets"),
        fact("rx-old", "medication", "222", d(400), display="Gliclazide 80mg tablets"),  # not current
        fact("adm", "encounter", "32485007", d(60), setting="acute", **{"class": "IMP"}),
        fact("ae", "encounter", "4525004", d(30), setting="acute", **{"class": "EMER"}),
        fact("mh", "encounter", "1109421000000105", d(15), setting="mental-health", **{"class": "AMB"}),
    ])
    s = summarise(rec, library, DAY)
    assert [c.text for c in s.conditions] and all("[" not in c.text for c in s.conditions + s.past_conditions)
    assert [c.text for c in s.past_conditions] == ["Dizziness"]
    units = {r.label: r.unit for r in s.results}
    assert "mm[Hg]" not in units.values() and "mL/min/{1.73_m2}" not in units.values()
    assert units.get("eGFR") == "mL/min/1.73 m²"
    assert [m.text for m in s.medicines] == ["Metformin 500mg tablets"]
    texts = [a.text for a in s.admissions]
    assert len(texts) == 2 and not any(t.isdigit() or "1109421000000105" in t for t in texts)  # the MH contact is not an admission


def test_units_and_terms():
    assert unit_display("mm[Hg]") == "mmHg" and unit_display("kg/m2") == "kg/m²" and unit_display(None) == ""
    assert clean_term("[X]Depressive episode") == "Depressive episode" and clean_term("Type 2 diabetes [D]") == "Type 2 diabetes"


def test_meeting_defaults_to_a_working_day():
    assert next_meeting_day(dt.date(2026, 12, 6)) == dt.date(2026, 12, 7)    # Sunday -> Monday
    assert next_meeting_day(dt.date(2026, 12, 25)) == dt.date(2026, 12, 29)  # Christmas (Fri), Boxing Day (Mon 28 in lieu)
    assert next_meeting_day(dt.date(2026, 12, 8)) == dt.date(2026, 12, 8)
