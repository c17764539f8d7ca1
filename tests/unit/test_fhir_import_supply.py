"""MedicationRequest without an end date: the days' supply gives its end (eCQM medicationRequestPeriod)."""
from __future__ import annotations

import datetime as dt

import pytest

from engine.records.fhir.bundle import import_bundle
from fhirbuild import bundle, patient, resource


def _rx(**dispense):
    return resource("MedicationRequest", "rx", status="active", intent="order", medicationCodeableConcept="rxnorm|312836",
                    authoredOn="2026-12-30T00:00:00Z", **({"dispenseRequest": dispense} if dispense else {}))


def _fact(res):
    (rec,) = import_bundle(bundle(patient(), res)).records
    return rec.facts[0]


@pytest.mark.parametrize("supply,repeats,last_day", [
    ({"value": 90, "system": "http://unitsofmeasure.org", "code": "d"}, None, dt.date(2027, 3, 29)),
    ({"value": 90, "system": "http://unitsofmeasure.org", "code": "days"}, None, dt.date(2027, 3, 29)),  # as in the CMS165 kit
    ({"value": 30, "unit": "days"}, 2, dt.date(2027, 3, 29)),              # 30 days x (1 + 2 repeats)
    ({"value": 1, "code": "wk"}, None, dt.date(2027, 1, 5)),
    ({"value": 1, "code": "d"}, None, dt.date(2026, 12, 30)),               # one day: starts and ends that day
])
def test_supply_gives_the_end(supply, repeats, last_day):
    dispense = {"expectedSupplyDuration": supply, **({"numberOfRepeatsAllowed": repeats} if repeats is not None else {})}
    f = _fact(_rx(**dispense))
    assert f.start == dt.datetime(2026, 12, 30) and f.end_day == last_day


def test_an_explicit_end_wins_and_no_supply_means_no_end():
    f = _fact(_rx(validityPeriod={"start": "2026-12-30", "end": "2027-01-30"},
                  expectedSupplyDuration={"value": 90, "code": "d"}))
    assert f.end_day == dt.date(2027, 1, 30)
    assert _fact(_rx()).end is None


def test_a_supply_in_months_is_not_guessed():
    res = import_bundle(bundle(patient(), _rx(expectedSupplyDuration={"value": 3, "code": "mo"})))
    assert res.records[0].facts[0].end is None
    assert any("expectedSupplyDuration" in w and "'mo'" in w for w in res.warnings)
