"""Write `PatientRecord`s into the registry and read them back.

`ingest_records` is idempotent and atomic:
- a fact is keyed by (patient, source system, source id): sending it again leaves it alone when
  its content is the same (content hash) and updates it in place when it changed;
- everything happens in one transaction; any error rolls all of it back, so a failed delivery
  changes nothing and can simply be re-sent;
- in that same transaction every patient whose record changed, and every patient of the delivery
  with no stored evaluation yet, is marked for evaluation (`pending_evaluation`, see pending.py):
  facts can never be stored without the mark that gets them evaluated (issue 14).

One patient per NHS number: records for the same NHS number from different source systems meet in
one patient row, and each fact keeps its own source system and care setting. Demographics are
merged: a value a source sends replaces the stored one, a value it leaves empty erases nothing.
Facts missing from a later delivery are kept: a bundle may be a partial extract, so absence is
not deletion.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from pydantic import BaseModel, Field, computed_field
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from engine.records.fhir.bundle import ImportResult, import_bundle
from engine.records.model import TRUSTED, Fact, Patient, PatientRecord, Sex
from engine.records.stored import stored_fact
from engine.registry import pending
from engine.registry.outputs import PatientEvaluationRow
from engine.registry.tables import FactRow, IngestBatch, PatientRow, PatientSourceId, utcnow

DEMOGRAPHICS = ("birth_date", "sex", "practice", "locality", "mdt", "death_date", "registered_on", "given_name", "family_name")


class IngestError(ValueError):
    """The delivery could not be stored; nothing of it was."""

    def __init__(self, message: str, nhs_number: str | None = None):
        self.nhs_number = nhs_number
        super().__init__(message)


class PatientChange(BaseModel):
    nhs_number: str
    created: bool = False
    demographics_changed: bool = False
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    @computed_field
    @property
    def affected(self) -> bool:
        return self.created or self.demographics_changed or bool(self.added or self.updated)


class IngestSummary(BaseModel):
    batch_id: int
    source: str
    patients: dict[str, PatientChange] = Field(default_factory=dict, description="NHS number -> what changed")
    warnings: list[str] = Field(default_factory=list)
    queued: set[str] = Field(default_factory=set, description="NHS numbers marked for evaluation in this delivery's transaction")
    duplicate_of: int | None = Field(default=None, description="The earliest earlier batch with the same content hash, if any")
    marked: dict[str, int] = Field(default_factory=dict, exclude=True,
                                   description="NHS number -> patient id of this delivery's patients with an outbox mark when "
                                   "its transaction ends: `queued` and those marked before (what the outbox would list for them)")

    @computed_field
    @property
    def affected(self) -> set[str]:
        """NHS numbers whose record changed: the only patients that need re-evaluating."""
        return {n for n, c in self.patients.items() if c.affected}

    @computed_field
    @property
    def added(self) -> int:
        return sum(c.added for c in self.patients.values())

    @computed_field
    @property
    def updated(self) -> int:
        return sum(c.updated for c in self.patients.values())

    @computed_field
    @property
    def unchanged(self) -> int:
        return sum(c.unchanged for c in self.patients.values())

    def __str__(self) -> str:
        new = sum(c.created for c in self.patients.values())
        return (f"batch {self.batch_id} from {self.source}: {len(self.patients)} patient(s) ({new} new), facts "
                f"{self.added} added / {self.updated} updated / {self.unchanged} unchanged; {len(self.affected)} to re-evaluate")


@dataclass
class _StoredFact:
    """A fact of the patient, by (source system, source id): its content hash, and either its row id (stored
    before: from the patient's one read), its row (once this delivery updated it: a row is read whole only to
    update it) or its new row's values (added by this delivery: inserted in one statement after the record)."""
    content_hash: str
    fact_id: int | None = None
    row: FactRow | None = None
    new: dict | None = None

    def load(self, session: Session) -> FactRow:
        if self.row is None:
            self.row = session.get(FactRow, self.fact_id)
        return self.row


def _content(f: Fact) -> dict:
    return f.model_dump(mode="json", exclude={"id", "source_system"})


def _hash(content: dict) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fact_values(fact: Fact) -> dict:
    """The columns of a fact's row that follow from its content, with its `content_hash`: what
    `ingest_records` and the bulk loader (engine/app/registry_load.py) both store."""
    content = _content(fact)
    return dict(kind=content["kind"], start=fact.start, end=fact.end, value=fact.value, unit=fact.unit, status=fact.status,
                care_setting=content["care_setting"], exception_type=content["exception_type"], codes=content["codes"],
                value_codes=content["value_codes"], attrs=content["attrs"], content_hash=_hash(content))


def _demographics(p: Patient) -> dict:
    return {k: (v.value if isinstance(v, Sex) else v) for k, v in ((k, getattr(p, k)) for k in DEMOGRAPHICS)}


# The statements of every delivery, built once (building them cost ~0.25 ms a delivery; issue 17, P2).
# The patient row, whether they are marked for evaluation already, and what is stored of their facts by
# identity (content hash and row id only; a fact row is read whole only to update it), in one statement.
_PATIENT_AND_FACT_KEYS = (
    select(PatientRow, sa.exists().where(pending.PendingEvaluationRow.patient_id == PatientRow.id),
           FactRow.id, FactRow.source_system, FactRow.source_id, FactRow.content_hash)
    .outerjoin(FactRow, FactRow.patient_id == PatientRow.id)
    .where(PatientRow.nhs_number == sa.bindparam("nhs")))
_BATCHES = IngestBatch.__table__
# The batch's counts; with them, the earliest earlier batch of the same content (a delivery sent again).
_BATCH_COUNTS = sa.update(_BATCHES).where(_BATCHES.c.id == sa.bindparam("batch")).values(
    patients=sa.bindparam("n_patients"), facts_added=sa.bindparam("n_added"), facts_updated=sa.bindparam("n_updated"),
    facts_unchanged=sa.bindparam("n_unchanged"))
_EARLIER = _BATCHES.alias("earlier")
_BATCH_COUNTS_AND_DUPLICATE = _BATCH_COUNTS.returning(
    sa.select(sa.func.min(_EARLIER.c.id)).where(_EARLIER.c.content_hash == sa.bindparam("same_content"),
                                               _EARLIER.c.id < sa.bindparam("batch")).scalar_subquery())


def _ingest(session: Session, records: Iterable[PatientRecord], source: str, content_hash: str | None,
            unsupported: dict | None, skipped: list | None) -> IngestSummary:
    batch = IngestBatch(source=source, content_hash=content_hash, unsupported=dict(unsupported or {}), skipped=list(skipped or []))
    session.add(batch)
    session.flush()
    summary = IngestSummary(batch_id=batch.id, source=source)
    now = utcnow()
    ids: dict[str, int] = {}  # NHS number -> patient row id
    marked_before: set[str] = set()  # marked for evaluation before this delivery

    for record in records:
        p = record.patient
        change = summary.patients.setdefault(p.nhs_number, PatientChange(nhs_number=p.nhs_number))
        try:
            # The patient row, whether they are marked for evaluation already, and what is stored of their
            # facts by identity (content hash and row id only; a fact row is read whole only to update it),
            # in one statement.
            got_rows = session.exec(_PATIENT_AND_FACT_KEYS, params={"nhs": p.nhs_number}).all()
            row = got_rows[0][0] if got_rows else None
            if got_rows and got_rows[0][1]:
                marked_before.add(p.nhs_number)
            existing: dict[tuple[str, str], _StoredFact] = {
                (system, sid): _StoredFact(h, fact_id=fid) for _, _, fid, system, sid, h in got_rows if fid is not None}
            incoming = _demographics(p)
            if row is None:
                row = PatientRow(nhs_number=p.nhs_number, **incoming, created_at=now, updated_at=now)
                session.add(row)
                session.flush()
                change.created = True
            else:
                for key, value in incoming.items():
                    if value is None or (key == "sex" and value == Sex.unknown.value) or getattr(row, key) == value:
                        continue
                    if key == "birth_date":
                        summary.warnings.append(f"{p.nhs_number}: birth date changed from {row.birth_date} to {value} by {source}")
                    setattr(row, key, value)
                    change.demographics_changed = True
                if change.demographics_changed:
                    row.updated_at = now

            ids[p.nhs_number] = row.id
            for system, sid in p.source_ids.items():
                link = session.exec(select(PatientSourceId).where(PatientSourceId.source_system == system,
                                                                   PatientSourceId.source_id == sid)).first()
                if link is None:
                    session.add(PatientSourceId(patient_id=row.id, source_system=system, source_id=sid))
                elif link.patient_id != row.id:
                    owner = session.get(PatientRow, link.patient_id)
                    raise IngestError(f"{system} patient id {sid!r} already belongs to NHS number {owner.nhs_number}; "
                                      f"refusing to attach it to {p.nhs_number} (resolve the identity first)", p.nhs_number)

            new_rows: list[dict] = []  # new facts: inserted in one statement, in record order, without ORM objects
            for fact in record.facts:
                values = fact_values(fact)
                key = (fact.source_system, fact.id)
                got = existing.get(key)
                if got is not None and got.content_hash == values["content_hash"]:
                    change.unchanged += 1
                    continue
                values.update(ingested_at=now, batch_id=batch.id)
                if got is None:
                    new = dict(patient_id=row.id, source_system=fact.source_system, source_id=fact.id, **values)
                    new_rows.append(new)
                    existing[key] = _StoredFact(values["content_hash"], new=new)
                    change.added += 1
                elif got.new is not None:  # new in this delivery already: the later content wins
                    got.new.update(values)
                    got.content_hash = values["content_hash"]
                    change.updated += 1
                else:
                    stored = got.load(session)
                    for k, value in values.items():
                        setattr(stored, k, value)
                    got.content_hash = values["content_hash"]
                    change.updated += 1
            session.flush()  # surface constraint violations here, naming the patient
            if new_rows:
                session.execute(sa.insert(FactRow.__table__), new_rows)
        except DBAPIError as exc:
            raise IngestError(f"{p.nhs_number}: the database refused the record: {exc.orig}", p.nhs_number) from exc

    # The batch's counts, and (one statement) the earliest earlier batch of the same content: a delivery sent again.
    counts = dict(batch=batch.id, n_patients=len(summary.patients), n_added=summary.added, n_updated=summary.updated,
                  n_unchanged=summary.unchanged)
    if content_hash is None:
        session.execute(_BATCH_COUNTS, counts)
    else:
        summary.duplicate_of = session.execute(_BATCH_COUNTS_AND_DUPLICATE, dict(counts, same_content=content_hash)).scalar_one()
    # The outbox, in this transaction: the changed patients, and anyone of this delivery never
    # evaluated (stored by a delivery whose evaluation was lost before the outbox existed).
    evaluated: set[int] = set()
    affected = summary.affected
    id_list = [pid for nhs, pid in ids.items() if nhs not in affected]  # the affected are marked whatever was stored
    for i in range(0, len(id_list), 500):
        evaluated.update(session.exec(select(PatientEvaluationRow.patient_id)
                                      .where(PatientEvaluationRow.patient_id.in_(id_list[i:i + 500])).distinct()))
    summary.queued = {nhs for nhs, pid in ids.items() if nhs in affected or pid not in evaluated}
    pending.queue(session, [ids[n] for n in summary.queued], batch_id=batch.id, now=now)
    summary.marked = {nhs: ids[nhs] for nhs in sorted(summary.queued | (marked_before & ids.keys()))}
    session.flush()
    return summary


def ingest_records(session_or_engine: Session | Engine, records: Iterable[PatientRecord], *, source: str,
                   content_hash: str | None = None, unsupported: dict[str, int] | None = None,
                   skipped: list[str] | None = None,
                   before_commit: Callable[[Session, IngestSummary], None] | None = None) -> IngestSummary:
    """Store records in one transaction; see the module docstring for the rules.

    With an Engine a session is opened and closed here. With a Session, ingest owns its
    transaction: it commits on success and rolls back on any error (re-raised), so do not hand
    it a session holding other unfinished work. `before_commit(session, summary)` runs last in the
    transaction (the bulk loader's checkpoint, engine/registry/bulk.py).
    """
    if isinstance(session_or_engine, Engine):
        with Session(session_or_engine) as session:
            return ingest_records(session, records, source=source, content_hash=content_hash,
                                  unsupported=unsupported, skipped=skipped, before_commit=before_commit)
    session = session_or_engine
    try:
        summary = _ingest(session, records, source, content_hash, unsupported, skipped)
        if before_commit is not None:
            before_commit(session, summary)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return summary


def content_hash_of(data: dict) -> str:
    """sha256 of a JSON document in canonical form (key order and whitespace do not matter)."""
    return _hash(data)


def ingest_fhir_bundle(session_or_engine: Session | Engine, data: dict, *, source_system: str = "fhir",
                       source: str | None = None) -> tuple[ImportResult, IngestSummary]:
    """Import a FHIR Bundle and store it as one batch (BundleError before anything is written)."""
    result = import_bundle(data, source_system=source_system)
    summary = ingest_records(session_or_engine, result.records, source=source or source_system, content_hash=content_hash_of(data),
                             unsupported=result.unsupported, skipped=result.skipped)
    summary.warnings[:0] = result.warnings
    return result, summary


# --------------------------------------------------------------------------------------------
# Reading back


def _patient(row: PatientRow, links: list[PatientSourceId]) -> Patient:
    source_ids: dict[str, str] = {}
    for link in sorted(links, key=lambda x: x.id):
        source_ids.setdefault(link.source_system, link.source_id)  # the first id a system gave wins
    # TRUSTED: stored rows are read back as they are, even if a later plausibility rule would refuse them.
    return Patient.model_validate(dict(nhs_number=row.nhs_number, birth_date=row.birth_date, sex=row.sex, practice=row.practice,
                                       locality=row.locality, mdt=row.mdt, death_date=row.death_date,
                                       registered_on=row.registered_on, given_name=row.given_name,
                                       family_name=row.family_name, source_ids=source_ids), context=TRUSTED)


def _fact(row) -> Fact:
    """A fact from its stored row (a FactRow, or a plain row of the fact table): what validating it (TRUSTED)
    gives, without running the validators when that changes nothing (engine/records/stored.py)."""
    if isinstance(row, sa.Row):  # (by key: a Row's attributes cost ~1 us each)
        m = row._mapping
        return stored_fact(id=m["source_id"], kind=m["kind"], codes=m["codes"], start=m["start"], end=m["end"],
                           value=m["value"], unit=m["unit"], value_codes=m["value_codes"], status=m["status"],
                           exception_type=m["exception_type"], source_system=m["source_system"],
                           care_setting=m["care_setting"], attrs=m["attrs"])
    return stored_fact(id=row.source_id, kind=row.kind, codes=row.codes, start=row.start, end=row.end, value=row.value,
                       unit=row.unit, value_codes=row.value_codes, status=row.status,
                       exception_type=row.exception_type, source_system=row.source_system,
                       care_setting=row.care_setting, attrs=row.attrs)


def load_record(session: Session, nhs_number: str) -> PatientRecord | None:
    got = load_record_versioned(session, nhs_number)
    return None if got is None else got[1]


def _record_digest(row: PatientRow, links: Iterable[PatientSourceId], facts: Iterable[tuple]) -> str:
    """What a patient's stored record is made of, as one digest: the demographics, the source ids and each
    fact row's identity and content hash, `(id, source_system, source_id, content_hash)` in id order. Any
    ingest that changes what `load_record` would return changes it (issue 17: evaluation outside the write
    transaction checks it before storing outputs)."""
    h = hashlib.sha256(json.dumps([row.id, row.nhs_number, {k: str(getattr(row, k)) for k in DEMOGRAPHICS},
                                   sorted((x.id, x.source_system, x.source_id) for x in links)]).encode())
    for f in facts:
        h.update(("\x00".join(map(str, f))).encode())
        h.update(b"\x01")
    return h.hexdigest()


def load_record_versioned(session: Session, nhs_number: str) -> tuple[PatientRow, PatientRecord, str] | None:
    """The patient row, the record and the record's digest (`record_digest`), from the same rows."""
    row = session.exec(select(PatientRow).where(PatientRow.nhs_number == nhs_number)).first()
    if row is None:
        return None
    links = list(session.exec(select(PatientSourceId).where(PatientSourceId.patient_id == row.id)))
    # Plain rows, not ORM objects: the record is read once and never changed through them (one
    # ORM object per fact cost more than building the facts).
    table = FactRow.__table__
    facts = list(session.execute(select(table).where(table.c.patient_id == row.id).order_by(table.c.id)))
    digest = _record_digest(row, links, ((f.id, f.source_system, f.source_id, f.content_hash) for f in facts))
    return row, PatientRecord(patient=_patient(row, links), facts=[_fact(f) for f in facts]), digest


def record_digest(session: Session, patient_id: int, row: PatientRow | None = None) -> str | None:
    """The digest of the patient's stored record now (None: no such patient), reading only ids and
    content hashes: cheap enough to check just before an evaluation's outputs are written. `row`: the
    patient row just read afresh in this transaction (e.g. locked with it), else it is read here."""
    row = row if row is not None else session.get(PatientRow, patient_id, populate_existing=True)
    if row is None:
        return None
    links = list(session.exec(select(PatientSourceId).where(PatientSourceId.patient_id == patient_id)))
    facts = session.exec(select(FactRow.id, FactRow.source_system, FactRow.source_id, FactRow.content_hash)
                         .where(FactRow.patient_id == patient_id).order_by(FactRow.id))
    return _record_digest(row, links, facts)


def iter_records(session: Session, *, mdt: str | None = None, practice: str | None = None,
                 chunk: int = 500) -> Iterator[PatientRecord]:
    """Records in NHS-number order, optionally for one MDT and/or practice, `chunk` patients per query."""
    query = select(PatientRow).order_by(PatientRow.nhs_number)
    if mdt is not None:
        query = query.where(PatientRow.mdt == mdt)
    if practice is not None:
        query = query.where(PatientRow.practice == practice.strip().upper())
    last = ""
    while True:
        rows = list(session.exec(query.where(PatientRow.nhs_number > last).limit(chunk)))
        if not rows:
            return
        ids = [r.id for r in rows]
        facts: dict[int, list[Fact]] = {i: [] for i in ids}
        for f in session.exec(select(FactRow).where(FactRow.patient_id.in_(ids)).order_by(FactRow.id)):
            facts[f.patient_id].append(_fact(f))
        links: dict[int, list[PatientSourceId]] = {i: [] for i in ids}
        for link in session.exec(select(PatientSourceId).where(PatientSourceId.patient_id.in_(ids))):
            links[link.patient_id].append(link)
        for r in rows:
            yield PatientRecord(patient=_patient(r, links[r.id]), facts=facts[r.id])
        last = rows[-1].nhs_number
