"""Facts read back from the registry (engine/records/stored.py): `stored_fact` gives exactly the Fact that
`Fact.model_validate(..., context=TRUSTED)` gives - the same values of the same types, the same fields set,
the same JSON - or the same error; the usual stored row takes the path without validators."""
from __future__ import annotations

import datetime as dt
import math

import pytest
from pydantic import ValidationError

from engine.records import stored
from engine.records.model import TRUSTED, Fact
from engine.registry.ingest import fact_values
from engine.synthetic.demo import demo_records
from engine.synthetic.generate import generate

FIELDS = ("kind", "codes", "start", "end", "value", "unit", "value_codes", "status", "exception_type", "care_setting",
          "attrs")


def row_of(fact: Fact) -> dict:
    """The values a fact's row hands back, as ingest stored them."""
    v = fact_values(fact)
    return dict(id=fact.id, source_system=fact.source_system, **{k: v[k] for k in FIELDS})


def validated(values: dict) -> Fact:
    return Fact.model_validate(dict(values), context=TRUSTED)


def same(a: Fact, b: Fact) -> None:
    assert a == b
    assert a.model_dump_json() == b.model_dump_json()
    assert list(a.__dict__) == list(b.__dict__)
    assert {k: type(v) for k, v in a.__dict__.items()} == {k: type(v) for k, v in b.__dict__.items()}
    assert a.model_fields_set == b.model_fields_set and a.__pydantic_extra__ == b.__pydantic_extra__
    for x, y in zip(a.codes + a.value_codes, b.codes + b.value_codes):
        assert x == y and x.model_fields_set == y.model_fields_set and type(x.system) is type(y.system)


def test_every_generated_and_demo_fact_is_built_without_validators_and_equal():
    records = [*generate(150, seed=3, as_of=dt.date(2026, 11, 20)), *demo_records(dt.date(2026, 11, 20))]
    facts = [f for r in records for f in r.facts]
    assert len(facts) > 3000 and {f.kind.value for f in facts} >= {"condition", "observation", "medication", "encounter"}
    for f in facts:
        values = row_of(f)
        assert stored._fast(**values) is not None, values  # the path without validators
        same(stored.stored_fact(**values), validated(values))


BASE = dict(id="f1", kind="observation", codes=[{"system": "http://snomed.info/sct", "code": "1000731000000107", "display": None}],
            start=dt.datetime(2026, 1, 5, 9, 30), end=None, value=52.0, unit="mmol/mol", value_codes=[], status="final",
            exception_type=None, source_system="lab", care_setting="gp", attrs={"interpretation": "H"})


@pytest.mark.parametrize("change, fast", [
    ({}, True),
    ({"codes": [{"system": "http://snomed.info/sct", "code": "1"}]}, True),  # no display key: not in the fields set
    ({"codes": [{"code": "1"}]}, True),
    ({"end": dt.datetime(2026, 2, 1)}, True),
    ({"kind": "exception", "exception_type": "declined"}, True),
    ({"value_codes": [{"system": "http://snomed.info/sct", "code": "2", "display": "x"}]}, True),
    ({"value": math.inf}, True),
    ({"codes": [{"system": "sct", "code": "1"}]}, False),  # a short system name: validation makes it canonical
    ({"codes": [{"system": None, "code": "1"}]}, False),
    ({"codes": [{"system": "http://snomed.info/sct", "code": " 1 "}]}, False),  # stripped by validation
    ({"codes": [{"system": "http://snomed.info/sct", "code": "  "}]}, False),  # refused
    ({"codes": []}, False),  # refused: at least one coding
    ({"codes": [{"system": "x", "code": "1", "other": 1}]}, False),
    ({"start": dt.date(2026, 1, 5)}, False),
    ({"start": "2026-01-05"}, False),
    ({"start": dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))}, False),
    ({"value": 52}, False),  # an int: validation makes it a float
    ({"value": math.nan}, False),  # refused
    ({"end": dt.datetime(2025, 1, 1)}, False),  # ends before it starts: refused
    ({"kind": "exception"}, False),  # no exception type: refused
    ({"kind": "nonsense"}, False),
    ({"care_setting": "mental-health"}, True),
    ({"care_setting": "ward"}, False),
    ({"exception_type": "maybe"}, False),
    ({"attrs": None}, False),
    ({"value_codes": None}, False),
])
def test_other_shapes_give_what_validation_gives(change, fast):
    values = {**BASE, **change}
    assert (stored._fast(**values) is not None) == fast
    try:
        want = validated(values)
    except ValidationError as err:
        with pytest.raises(ValidationError) as got:
            stored.stored_fact(**values)
        assert got.value.errors(include_context=False) == err.errors(include_context=False)
        return
    same(stored.stored_fact(**values), want)
