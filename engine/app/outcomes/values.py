"""Per-person outcome values: what each measure with `value:` (docs/protocol-language.md §8, "Measure values")
gives each person, with who they are (practice, MDT, locality, age, sex), for the outcome series, funnel
plots and risk-model checks built on top (issue 19).

    rows = person_values(records, library, as_of=dt.date(2026, 3, 31))          # or value_rows(...) flat
    for p in rows: p.nhs_number, p.practice, p.age, p.sex, p.values[("pilot-outcomes", "admissions-diabetes")]

`in_cohort` is the measure's denominator (and not excluded): the person counts in the rate's denominator;
`value` is their number (None when a number it needs is missing, never 0 in its place; None when not in the
cohort); `cannot_determine` lists the missing codelists when the value cannot be determined (a declared
cluster the site has not supplied). The numbers come from the evaluator, so any engine gives them
(`engine=`: python, durable, batch). For a whole population use the DuckDB run instead
(engine/engines/duckdb/run.py: table `measure_values`, one row per person counted).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from engine.evaluation.evaluator import Options, evaluate
from engine.language.model import Protocol
from engine.records.model import PatientRecord


@dataclass(frozen=True)
class OutcomeMeasure:
    protocol: str
    version: str
    measure: str
    title: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.protocol, self.measure)


@dataclass(frozen=True)
class OutcomeValue:
    in_cohort: bool  # in the measure's denominator and not excluded
    value: float | None  # None: not in the cohort, or a number it needs is missing (never 0 in its place)
    cannot_determine: tuple[str, ...] = ()  # missing codelists (declared clusters not supplied)
    why: str = ""


@dataclass
class PersonValues:
    nhs_number: str
    practice: str | None
    mdt: str | None
    locality: str | None
    age: int
    sex: str
    deceased: bool
    values: dict[tuple[str, str], OutcomeValue] = field(default_factory=dict)  # (protocol id, measure id) -> value


def _protocols(library_or_protocols, as_of: dt.date) -> list[Protocol]:
    protos = (library_or_protocols.in_force(as_of) if hasattr(library_or_protocols, "in_force")
              else list(library_or_protocols))
    return [p for p in protos if any(m.has_value for m in p.measures)]


def outcome_measures(library_or_protocols, as_of: dt.date) -> list[OutcomeMeasure]:
    """The measures with `value:` of the protocols in force on `as_of` (a Library) or of the given protocols."""
    return [OutcomeMeasure(p.id, p.version, m.id, m.title)
            for p in _protocols(library_or_protocols, as_of) for m in p.measures if m.has_value]


def _age(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def person_values(records: Iterable[PatientRecord], library_or_protocols, as_of: dt.date,
                  period_start: dt.date | None = None, engine: str = "python") -> Iterator[PersonValues]:
    """One PersonValues per record: every outcome measure's (in_cohort, value) as of `as_of` (the measurement
    period ends on `as_of` and starts the protocol's `period` earlier, or on `period_start`)."""
    protos = _protocols(library_or_protocols, as_of)
    for rec in records:
        p = rec.patient
        ev = evaluate(rec, protos, [], as_of=as_of, period_start=period_start, options=Options(engine=engine))
        out = PersonValues(p.nhs_number, p.practice, p.mdt, p.locality, _age(p.birth_date, as_of),
                           getattr(p.sex, "value", str(p.sex)), ev.deceased)
        for res in ev.protocols:
            for m in res.measures:
                if not m.has_value:
                    continue
                out.values[(res.protocol, m.measure)] = OutcomeValue(
                    in_cohort=m.denominator and not m.exclusion, value=m.value,
                    cannot_determine=tuple(m.cannot_determine), why=m.provenance.why)
        yield out


VALUE_COLUMNS = ("nhs_number", "practice", "mdt", "locality", "age", "sex", "deceased", "protocol", "measure",
                 "in_cohort", "value", "cannot_determine")


def value_rows(records: Iterable[PatientRecord], library_or_protocols, as_of: dt.date,
               period_start: dt.date | None = None, engine: str = "python") -> Iterator[dict]:
    """person_values flattened: one dict per (person, outcome measure) with VALUE_COLUMNS."""
    for pv in person_values(records, library_or_protocols, as_of, period_start, engine):
        for (protocol, measure), v in pv.values.items():
            yield {"nhs_number": pv.nhs_number, "practice": pv.practice, "mdt": pv.mdt, "locality": pv.locality,
                   "age": pv.age, "sex": pv.sex, "deceased": pv.deceased, "protocol": protocol, "measure": measure,
                   "in_cohort": v.in_cohort, "value": v.value, "cannot_determine": list(v.cannot_determine)}


def registry_person_values(session, library_or_protocols, as_of: dt.date, period_start: dt.date | None = None,
                           mdt: str | None = None, practice: str | None = None,
                           engine: str = "python") -> Iterator[PersonValues]:
    """person_values over the patients stored in the registry (optionally one MDT or practice)."""
    from engine.registry.ingest import iter_records

    yield from person_values(iter_records(session, mdt=mdt, practice=practice), library_or_protocols, as_of,
                             period_start, engine)


def rate_per_1000_per_year(total: float, people: int, period_start: dt.date, period_end: dt.date) -> float | None:
    """A crude rate: `total` events among `people` over the period (both days included), per 1,000 people per
    year (365.25 days). None when there is nobody to count (never 0 in its place). Person-time here is
    people x period length: people who joined, left or died during the period count for the whole period."""
    days = (period_end - period_start).days + 1
    if people <= 0 or days <= 0:
        return None
    return total / people * 1000 * 365.25 / days
