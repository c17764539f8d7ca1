"""Audit figures: measure counts per practice / MDT / locality / area, rates with a Wilson 95%
interval, and peer comparison against the area on funnel-plot limits (95% and 99.8%).

Live figures come from the stored per-patient evaluations (one per patient per protocol, kept current
by ingest and re-evaluation): SQL sums over their measures' rows (`patient_measure`,
engine/app/audit_sql.py); `aggregate` over `stored_rows` is the same computation from the stored JSON,
one patient at a time (kept as the reference the SQL is tested against). Snapshots for trends evaluate
everyone as of a reporting date (`take_snapshot`) and store only the counts.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from sqlalchemy import exists
from sqlmodel import Session, select

from engine.evaluation.evaluator import evaluate
from engine.language.library import Library
from engine.registry.access import AuditSnapshotRow
from engine.registry.ingest import iter_records
from engine.registry.measure_results import measure_value, step_counts  # one reading of a stored measure's counts
from engine.registry.outputs import PatientEvaluationRow, PatientMeasureRow
from engine.registry.tables import PatientRow

UNIT_KINDS = ("practice", "mdt", "locality", "area")
AREA = "area"
Z95, Z998 = 1.959964, 3.090232


@dataclass
class Counts:
    protocol: str
    version: str
    measure: str
    title: str
    unit_kind: str
    unit: str
    initial_population: int = 0
    denominator: int = 0
    exclusions: int = 0
    numerator: int = 0
    exceptions: int = 0
    versions: set = field(default_factory=set)
    cannot_determine: int = 0  # patients whose result needs a codelist the site has not supplied: not in the rate
    missing_codelists: set = field(default_factory=set)
    value_sum: float = 0.0  # a measure with `value:`: the counted patients' values added up (issue 19)
    value_patients: int = 0  # ... and how many counted patients had one (the others' are missing)

    def add(self, m: dict) -> None:
        """One stored measure result: a patient's booleans, or an episode measure's counts (a patient can
        count several times, CMS22). A result that cannot be determined is counted apart, never as not met."""
        if m.get("cannot_determine"):
            self.cannot_determine += 1
            self.missing_codelists.update(m["cannot_determine"])
            return
        counts = step_counts(m)
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + value)
        v = measure_value(m, counts, None)
        if v is not None:
            self.value_sum += v
            self.value_patients += 1

    @property
    def eligible(self) -> int:
        """What the rate is over: the denominator less exclusions and denominator exceptions (eCQM), the
        QOF habit of personalised care adjustments kept apart from achievement."""
        return self.denominator - self.exclusions - self.exceptions

    @property
    def rate(self) -> float | None:
        return self.numerator / self.eligible if self.eligible > 0 else None


def unit_of(p: PatientRow, kind: str) -> str | None:
    return AREA if kind == AREA else getattr(p, kind)


def wilson(num: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    if n <= 0:
        return None
    p = num / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def funnel(p0: float | None, n: int, z: float) -> tuple[float, float] | None:
    if p0 is None or n <= 0:
        return None
    half = z * math.sqrt(p0 * (1 - p0) / n)
    return round(max(0.0, p0 - half), 4), round(min(1.0, p0 + half), 4)


def aggregate(rows: list[tuple[PatientRow, PatientEvaluationRow]], unit_kind: str) -> tuple[dict, dict]:
    """(per unit counts, area counts) keyed by (protocol, measure[, unit])."""
    per_unit: dict[tuple, Counts] = {}
    area: dict[tuple, Counts] = {}
    for p, e in rows:
        res = e.result or {}
        unit = unit_of(p, unit_kind) or "(none)"
        for m in res.get("measures", []):
            k = (e.protocol, m["measure"])
            for store, key, kind, u in ((per_unit, (*k, unit), unit_kind, unit), (area, k, AREA, AREA)):
                c = store.get(key)
                if c is None:
                    c = store[key] = Counts(e.protocol, e.version, m["measure"], m.get("title", m["measure"]), kind, u)
                c.versions.add(e.version)
                c.add(m)
    return per_unit, area


def figures(c: Counts, area: Counts | None) -> dict:
    p0 = area.rate if area else None
    out = dict(protocol=c.protocol, version=", ".join(sorted(c.versions)) or c.version, measure=c.measure, title=c.title,
               unit_kind=c.unit_kind, unit=c.unit, initial_population=c.initial_population, denominator=c.denominator,
               exclusions=c.exclusions, exceptions=c.exceptions, numerator=c.numerator,
               rate=round(c.rate, 4) if c.rate is not None else None,
               ci95=wilson(c.numerator, c.eligible), area_rate=round(p0, 4) if p0 is not None else None,
               funnel95=funnel(p0, c.eligible, Z95), funnel998=funnel(p0, c.eligible, Z998), comparison="no-data",
               cannot_determine=c.cannot_determine, missing_codelists=sorted(c.missing_codelists))
    if c.value_patients:  # a measure with `value:` (only then: other measures' figures are unchanged)
        out.update(value_sum=c.value_sum, value_patients=c.value_patients)
    if c.rate is not None and out["funnel95"]:
        lo, hi = out["funnel95"]
        out["comparison"] = "above" if c.rate > hi else "below" if c.rate < lo else "within"
    return out


@dataclass(frozen=True, slots=True)
class StoredMeasures:
    """What the audit needs of a stored evaluation: its protocol, version, date and measures."""
    protocol: str
    version: str
    reference_date: dt.date
    result: dict


def stored_rows(s: Session, protocol: str | None = None, measure: str | None = None) -> list[tuple[PatientRow, StoredMeasures]]:
    """Every stored evaluation's measures with its patient. Only the `measures` part of each stored result
    is read (a JSON path the database extracts), not the whole evaluation (care plan, tasks, why-lines) as
    ORM objects: with 25,000 stored evaluations that took 14 s a call, decoding JSON and building objects
    (bench pages, 20,000-patient registry)."""
    e = PatientEvaluationRow
    q = (select(PatientRow, e.protocol, e.version, e.reference_date, e.result["measures"])
         .join(e, e.patient_id == PatientRow.id))
    if protocol:
        q = q.where(e.protocol == protocol)
    if measure:  # only the evaluations that have this measure (its rows in patient_measure say which)
        pm = PatientMeasureRow
        q = q.where(exists().where(pm.patient_id == e.patient_id, pm.protocol == e.protocol, pm.measure == measure))
    return [(p, StoredMeasures(proto, version, ref, {"measures": measures or []}))
            for p, proto, version, ref, measures in s.exec(q.order_by(PatientRow.nhs_number))]


def take_snapshot(s: Session, library: Library, as_of: dt.date, taken_by: str, now: dt.datetime,
                  problems: list | None = None) -> tuple[int, int]:
    """Evaluate everyone as of `as_of` (nothing but counts is stored) and replace that date's snapshot.
    A patient whose measure result cannot be determined (a declared codelist not supplied) is counted in
    `cannot_determine` only, as the live figures count them. A patient whose evaluation fails is left out of
    the counts and appended to `problems` (an `EvaluationFailed` naming the fact when known) instead of
    failing the whole snapshot."""
    from engine.app.service import diagnose

    protocols = [p for p in library.in_force(as_of) if p.measures]
    agreements = library.agreements_in_force(as_of)
    counts: dict[tuple, AuditSnapshotRow] = {}
    patients = 0
    for rec in iter_records(s):
        try:
            ev = evaluate(rec, protocols, agreements, as_of=as_of)
        except Exception as exc:  # noqa: BLE001 - one patient's data problem, not the area's
            failed = diagnose(rec, protocols, agreements, as_of, exc)
            failed.message = f"audit snapshot as of {as_of.isoformat()}: {failed.message}"
            if problems is not None:
                problems.append(failed)
            continue
        patients += 1
        p = rec.patient
        for pr in ev.protocols:
            for m in pr.measures:
                for kind in UNIT_KINDS:
                    unit = AREA if kind == AREA else getattr(p, kind)
                    if unit is None:
                        continue
                    key = (pr.protocol, m.measure, kind, unit)
                    row = counts.get(key)
                    if row is None:
                        row = counts[key] = AuditSnapshotRow(as_of=as_of, taken_at=now, taken_by=taken_by, protocol=pr.protocol,
                                                             version=pr.version, measure=m.measure, unit_kind=kind, unit=unit)
                    if m.cannot_determine:  # a codelist not supplied: in no population, counted apart (as Counts.add)
                        row.cannot_determine = (row.cannot_determine or 0) + 1
                        continue
                    for name, value in step_counts(m).items():
                        setattr(row, name, (getattr(row, name) or 0) + value)
    for old in s.exec(select(AuditSnapshotRow).where(AuditSnapshotRow.as_of == as_of)):
        s.delete(old)
    s.flush()
    for row in counts.values():
        s.add(row)
    return patients, len(counts)
