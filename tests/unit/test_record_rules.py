"""The record model's plausibility rules (engine/records/model.py), shared by every way in: dates in
a plausible range (1900 .. now + tolerance), no control or bidi-override characters, lengths the
registry holds, and type confusion refused as a validation error (never an AttributeError)."""
from __future__ import annotations

import copy
import datetime as dt

import pytest
from pydantic import ValidationError

from engine.synthetic.demo import demo_records
from engine.synthetic.generate import generate
from engine.records.fhir.bundle import import_bundle
from engine.records.fhir.common import BundleError
from engine.records.fhir.export import export_patient_bundle
from engine.records.model import (FUTURE_TOLERANCE, TRUSTED, Coding, Fact, Patient, PatientRecord, real_now)

TODAY = real_now().date()


def fact(**kw) -> dict:
    return {"id": "f1", "kind": "observation", "codes": [{"system": "sct", "code": "1"}], "start": "2026-01-01", **kw}


def refused(model, data: dict, field: tuple) -> str:
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    err = exc.value.errors()[0]
    assert tuple(err["loc"][:len(field)]) == field, err
    return err["msg"]


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00",
                                   "9999-12-31", "1899-12-31", (TODAY + FUTURE_TOLERANCE + dt.timedelta(days=2)).isoformat()])
def test_fact_dates_outside_the_plausible_range_are_refused(start):
    refused(Fact, fact(start=start), ("start",))


def test_the_tolerance_keeps_what_the_decks_and_case_files_hold():
    # eCQM decks (period 2026): facts "after the measurement period" up to 2027-02-19, a death on 2027-01-01
    for start in ["2027-02-19T14:30:00+00:00", "2027-01-31T08:00:00+00:00", "1923-05-01"]:
        Fact.model_validate(fact(start=start))
    Fact.model_validate(fact(start="2027-01-31T08:00:00+00:00", end="2027-05-01T12:00:00+00:00"))
    Patient(nhs_number="9434765919", birth_date="1923-01-01", death_date="2027-01-01")
    Patient(nhs_number="9434765919", birth_date=TODAY + dt.timedelta(days=1))  # time zones
    refused(Patient, {"nhs_number": "9434765919", "birth_date": (TODAY + dt.timedelta(days=3)).isoformat()}, ("birth_date",))
    refused(Patient, {"nhs_number": "9434765919", "birth_date": "1960-01-01", "death_date": "1959-12-31"}, ("death_date",))


@pytest.mark.parametrize("system", [[None, None], {"x": 1}, 12, True])
def test_a_code_system_that_is_not_a_string_is_a_validation_error(system):
    assert "must be a string" in refused(Coding, {"system": system, "code": "1"}, ("system",))


@pytest.mark.parametrize("name", ["Nia\x00", "Nia\u202e", "Nia\u2067", "N\tia", "Nia\x85", "N" * 201])
def test_names_with_control_characters_or_too_long_are_refused(name):
    refused(Patient, {"nhs_number": "9434765919", "birth_date": "1960-01-01", "given_name": name}, ("given_name",))


def test_free_text_may_hold_tabs_and_new_lines_but_not_other_controls():
    Coding(system="sct", code="1", display="a\tb\nc")
    refused(Coding, {"system": "sct", "code": "1", "display": "a\x00"}, ("display",))
    refused(Coding, {"system": "sct", "code": "1\n2"}, ("code",))
    refused(Fact, fact(attrs={"deep": [{"x": "\u202e"}]}), ("attrs",))
    refused(Fact, fact(value=float("inf")), ("value",))


def test_records_read_back_from_the_registry_are_trusted():
    bad = {"id": "f\x00", "kind": "observation", "codes": [{"system": "sct", "code": "1"}], "start": "0001-01-01T00:00:00"}
    assert Fact.model_validate(bad, context=TRUSTED).start.year == 1
    assert Patient.model_validate({"nhs_number": "9434765919", "birth_date": "9999-12-31"}, context=TRUSTED).birth_date.year == 9999


def test_the_generator_and_the_demo_make_valid_records():
    for as_of in (TODAY, dt.date(2026, 11, 23)):
        for r in [*generate(400, seed=1, as_of=as_of), *demo_records(as_of)]:
            PatientRecord.model_validate(r.model_dump())  # every rule, from scratch


def _bundle() -> dict:
    r = demo_records(dt.date(2026, 11, 23))[0]
    return export_patient_bundle(r)


def _entry(b: dict, rtype: str) -> int:
    return next(i for i, e in enumerate(b["entry"]) if e["resource"]["resourceType"] == rtype)


@pytest.mark.parametrize("rtype,element,value", [
    ("Patient", "birthDate", "9999-12-31"),
    ("Patient", "birthDate", "0001-01-01"),
    ("Patient", "deceasedDateTime", "1900-01-01T00:00:00+00:00"),
    ("Patient", "name", [{"family": "x" * 300}]),
    ("Patient", "name", [{"given": ["Am\u202eina"]}]),
    ("Observation", "effectiveDateTime", "0001-01-01T00:00:00+00:00"),
    ("Observation", "effectiveDateTime", "9999-12-31T00:00:00+00:00"),
])
def test_the_fhir_reader_refuses_with_a_pointer(rtype, element, value):
    b = _bundle()
    i = _entry(b, rtype)
    b["entry"][i]["resource"][element] = value
    with pytest.raises(BundleError) as exc:
        import_bundle(b)
    assert exc.value.pointer.startswith(f"/entry/{i}/resource/{element}"), exc.value


def test_the_fhir_reader_refuses_a_coding_with_control_characters():
    b = _bundle()
    i = _entry(b, "Observation")
    bad = copy.deepcopy(b)
    bad["entry"][i]["resource"]["code"]["coding"][0]["code"] = "1\x002"
    with pytest.raises(BundleError) as exc:
        import_bundle(bad)
    assert exc.value.pointer.startswith(f"/entry/{i}/resource")
    import_bundle(b)  # and the unchanged bundle goes in


def test_the_generator_never_dates_a_fact_after_as_of():
    """People of seed 2 too young, by as_of, for a condition's earliest onset age were given it years
    ahead (up to 2034 for as_of 2026-11-20), which the record rules now refuse."""
    as_of = dt.date(2026, 11, 20)
    for i in (169, 560, 624, 636, 1110, 1440, 2336):
        rec = next(generate(1, seed=2, as_of=as_of, start=i))
        assert max(f.start for f in rec.facts).date() <= as_of
