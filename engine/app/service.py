"""Incremental evaluation against the registry: a record arrives, that patient is re-evaluated,
stored tasks and flags are reconciled, and the diff (opened / closed / changed) is returned.

Task lifecycle (people's decisions survive re-evaluation):
- open -> accepted -> completed;  open/accepted -> declined (reason required);  reassign keeps status.
- The evaluation no longer asks for an open/accepted task -> it is `resolved` by the system, with why.
- A task someone completed or declined is not raised again while the same need continues; once an
  evaluation finds the need gone, a later recurrence (next year's check) raises a new task.
- Due times are set when a task is first raised and never move on re-evaluation (the SLA clock).

Selective re-evaluation: a protocol reads a patient's facts only through its value sets (derive.py's
`ValueSetRef` events, matched with `ValueSet.matches_fact`; every other IR node works on those
events, the demographics or the reference date). So each stored evaluation keeps a digest of what
its result rests on (`result["_inputs"]`, see `evaluation_inputs`): the protocol (id, version,
content hash, its value sets' codes), the reference date, the demographics, the role agreements in
force and every fact that matches any of the protocol's value sets (source system, id, content).
A re-evaluation that finds the same digest (and version, reference date) rebuilds that protocol's
result from the stored row instead of deriving it again; any new, changed or removed fact the
protocol could see changes the digest. A result is reused only when each of its tasks still has its
current row (open, or closed while the need continues), so reconciling it raises no new task.
Stored tasks, flags and evaluations are then those a full re-evaluation leaves
(tests/unit/test_selective_reevaluation.py). A stored result's tasks carry the `raised_at` / `due`
of their task rows (set when the task was first raised, never moved), whether the result was derived
again or reused, so every view of a task agrees (issue 17 item 5).

The evaluation outbox (issue 14): ingest marks patients in `pending_evaluation` in the transaction
that stores their facts (engine/registry/pending.py). `reevaluate` removes the mark in the
transaction that stores the outputs; `drain` evaluates whoever is marked, one patient per
transaction, and `Drainer` does it in a background thread (large deliveries, leftovers, service
start). An evaluation that fails for one patient raises `EvaluationFailed` (naming the fact that
caused it when it can be found); `evaluate_one` / `drain` record it as a data problem on that
patient (`data_problem`), clear the mark and carry on with everyone else. Nothing of a failed
evaluation is stored: the patient's earlier outputs stay as they were.

Evaluation outside the write transaction (issue 17 item 1): `evaluate_one` reads the record in a
read session (with `record_digest`, a digest of the patient row, source ids and each fact row's id
and content hash), closes it, evaluates holding no lock, then in a short write transaction locks
the patient (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's write lock), checks the digest and the
stored rows any reused result rests on, and writes. A change since the read (`StaleRead`) means read
and evaluate again, at most CONFLICT_RETRIES times; after that the patient stays marked in the
outbox for the drain. So several worker processes on PostgreSQL evaluate in parallel and only the
few writes of one patient's outputs are serialised. The reads are engine/registry/evaluation_state.py's
(on PostgreSQL two statements before evaluating and two under the lock); tasks, flags and stored
results are written with plain statements from the rows read under the lock, not the ORM's unit
of work (issue 17, P2).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable

from pydantic import ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, select

from engine import metrics
from engine.engines.derive import Context
from engine.evaluation.evaluator import Options, evaluate
from engine.evaluation.outputs import Evaluation, Flag, ProtocolResult, Task
from engine.ir import nodes as ir
from engine.language.agreements import Agreement
from engine.language.library import Library
from engine.language.model import Protocol
from engine.records.model import Fact, Patient, PatientRecord
from engine.registry import pending
from engine.registry.evaluation_claims import claim_patient
from engine.registry.evaluation_state import (INPUTS_KEY, RowState, StoredHead, StoredResult, TaskState, flag_rows,
                                              locked_state, read_state, stored_heads, task_rows)
from engine.registry.measure_results import note_stored, replace_measures
from engine.app.mdt_actions import MDT_KIND
from engine.app.task_outcomes import OutcomeError, outcome_text
from engine.registry.outputs import (CLOSED_STATUSES, OPEN_STATUSES, FlagRow, PatientEvaluationRow, TaskEventRow,
                                     TaskRow)
from engine.registry.tables import PatientRow, utcnow

SYSTEM = "carepath"
log = logging.getLogger("carepath.evaluate")
CULPRIT_SEARCH_MAX_FACTS = 300  # beyond this, a failure is recorded without looking for the fact


class TaskActionError(ValueError):
    pass


class EvaluationFailed(Exception):
    """Evaluating one patient failed: a data problem of that patient, not of the service."""

    def __init__(self, nhs_number: str, message: str, *, protocol: str | None = None, fact_source_system: str | None = None,
                 fact_source_id: str | None = None, fact_problem: str | None = None, seq: int | None = None):
        self.nhs_number, self.message, self.protocol = nhs_number, message, protocol
        self.fact_source_system, self.fact_source_id, self.fact_problem, self.seq = (fact_source_system, fact_source_id,
                                                                                     fact_problem, seq)
        super().__init__(f"{nhs_number}: {message}")

    def as_dict(self) -> dict:
        return dict(nhs_number=self.nhs_number, message=self.message, protocol=self.protocol,
                    fact_source_system=self.fact_source_system, fact_source_id=self.fact_source_id,
                    fact_problem=self.fact_problem)


def _fails(record: PatientRecord, protocols: list[Protocol], agreements: list[Agreement], as_of: dt.date) -> bool:
    try:
        evaluate(record, protocols, agreements, as_of=as_of)
    except Exception:  # noqa: BLE001 - any failure is what we are looking for
        return True
    return False


def diagnose(record: PatientRecord, protocols: list[Protocol], agreements: list[Agreement], as_of: dt.date,
             exc: BaseException) -> EvaluationFailed:
    """An EvaluationFailed for `exc`, naming the protocol and the fact that caused it when they can
    be found: first a fact (or the patient) that today's record rules refuse (stored before the
    rule existed), else the one fact without which the evaluation goes through."""
    nhs = record.patient.nhs_number
    message = f"evaluation failed: {type(exc).__name__}: {exc}"
    protocol = None
    if len(protocols) == 1:
        protocol = protocols[0].id
    elif len(protocols) > 1:
        protocol = next((p.id for p in protocols if _fails(record, [p], agreements, as_of)), None)
    try:
        Patient.model_validate(record.patient.model_dump())
    except ValidationError as err:
        e = err.errors()[0]
        return EvaluationFailed(nhs, message, protocol=protocol,
                                fact_problem=f"patient {'/'.join(map(str, e['loc']))}: {e['msg']}")
    for f in record.facts:
        try:
            Fact.model_validate(f.model_dump())
        except ValidationError as err:
            e = err.errors()[0]
            return EvaluationFailed(nhs, message, protocol=protocol, fact_source_system=f.source_system, fact_source_id=f.id,
                                    fact_problem=f"{'/'.join(map(str, e['loc']))}: {e['msg']}")
    if len(record.facts) <= CULPRIT_SEARCH_MAX_FACTS:
        target = [p for p in protocols if p.id == protocol] or protocols
        for f in record.facts:
            rest = record.model_copy(update={"facts": [x for x in record.facts if x is not f]})
            if not _fails(rest, target, agreements, as_of):
                return EvaluationFailed(nhs, message, protocol=protocol, fact_source_system=f.source_system,
                                        fact_source_id=f.id, fact_problem="the evaluation goes through without this fact")
    return EvaluationFailed(nhs, message, protocol=protocol)


# pydantic dataclasses: positional construction here, and the API answers with them as they are (schemas.DiffOut)
@pydantic_dataclass
class Change:
    """One task or flag that an evaluation opened, closed, updated, raised, cleared or changed."""
    key: str
    title: str
    detail: str = ""
    id: int | None = None


@pydantic_dataclass
class Diff:
    """What one re-evaluation of a patient changed in their worklist and flags."""
    nhs_number: str
    tasks_opened: list[Change] = field(default_factory=list)
    tasks_closed: list[Change] = field(default_factory=list)
    tasks_updated: list[Change] = field(default_factory=list)
    flags_raised: list[Change] = field(default_factory=list)
    flags_cleared: list[Change] = field(default_factory=list)
    flags_changed: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any((self.tasks_opened, self.tasks_closed, self.tasks_updated, self.flags_raised,
                        self.flags_cleared, self.flags_changed))

    def as_dict(self) -> dict:
        return asdict(self)


_protocol_digests: dict[int, tuple[Protocol, str, "_Reads"]] = {}
ANY_KIND = None


class _Reads:
    """Which facts a protocol can see: the union of its value sets, as one index. `sees(fact)` is
    exactly `any(vs.matches_fact(fact) for vs in protocol.valuesets.values())`."""

    def __init__(self, proto: Protocol):
        self.codes: dict[tuple[str, str], set | None] = {}  # (system, code) -> kinds allowed (None: any)
        self.bare: dict[str, set | None] = {}  # code alone (value sets with any_system) -> kinds
        self.any_code: set | None | bool = False  # kinds for which every fact is seen (None: every kind)
        for vs in proto.valuesets.values():
            kinds = set(vs.kinds) if vs.kinds else ANY_KIND
            if vs.any_code:
                self.any_code = self._merge(self.any_code if self.any_code is not False else set(), kinds)
                continue
            for key in vs.codes:
                self.codes[key] = self._merge(self.codes.get(key, set()), kinds)
                if vs.any_system and key[0] == "":
                    self.bare[key[1]] = self._merge(self.bare.get(key[1], set()), kinds)

    @staticmethod
    def _merge(have: set | None, kinds: set | None) -> set | None:
        return None if have is None or kinds is None else have | kinds

    def sees(self, fact) -> bool:
        kind = fact.kind.value
        if self.any_code is not False and fact.codes and (self.any_code is None or kind in self.any_code):
            return True
        for c in fact.codes:
            for kinds in (self.codes.get((c.system, c.code), False), self.bare.get(c.code, False)):
                if kinds is not False and (kinds is None or kind in kinds):
                    return True
        return False


def _protocol_digest(proto: Protocol) -> tuple[str, _Reads]:
    """The protocol's content and its value sets' codes (a codelist file can change under one YAML)."""
    got = _protocol_digests.get(id(proto))
    if got is not None and got[0] is proto:
        return got[1], got[2]
    h = hashlib.sha256(f"{proto.id}@{proto.version}#{proto.content_hash}".encode())
    for name in sorted(proto.valuesets):
        vs = proto.valuesets[name]
        h.update(repr((name, sorted(vs.codes), sorted(vs.kinds), vs.any_code, vs.any_system, vs.unit, vs.analyte,
                       sorted((k, sorted(v.items())) for k, v in vs.properties.items()))).encode())
    digest, reads = h.hexdigest(), _Reads(proto)
    _protocol_digests[id(proto)] = (proto, digest, reads)
    return digest, reads


class _ReadsIndex:
    """Which of a list of protocols see each fact, by one lookup per coding: `seen_by(fact)` is exactly
    `{i for i, r in enumerate(reads) if r.sees(fact)}` (one dictionary lookup per coding instead of one
    `sees` per protocol: a record's facts times the protocols in force, on every evaluation)."""

    def __init__(self, reads: list[_Reads]):
        self.codes: dict[tuple[str, str], list[tuple[int, set | None]]] = {}
        self.bare: dict[str, list[tuple[int, set | None]]] = {}
        self.any_code: list[tuple[int, set | None]] = []
        for i, r in enumerate(reads):
            if r.any_code is not False:
                self.any_code.append((i, r.any_code))
            for key, kinds in r.codes.items():
                self.codes.setdefault(key, []).append((i, kinds))
            for code, kinds in r.bare.items():
                self.bare.setdefault(code, []).append((i, kinds))

    def seen_by(self, fact) -> set[int]:
        kind = fact.kind.value
        out: set[int] = set()
        if fact.codes:
            out.update(i for i, kinds in self.any_code if kinds is None or kind in kinds)
        for c in fact.codes:
            for i, kinds in (*self.codes.get((c.system, c.code), ()), *self.bare.get(c.code, ())):
                if kinds is None or kind in kinds:
                    out.add(i)
        return out


_reads_indexes: dict[tuple[int, ...], tuple[tuple[Protocol, ...], _ReadsIndex]] = {}


def _reads_index(protocols: list[Protocol], reads: list[_Reads]) -> _ReadsIndex:
    key = tuple(id(p) for p in protocols)
    got = _reads_indexes.get(key)
    if got is not None and all(a is b for a, b in zip(got[0], protocols)):
        return got[1]
    if len(_reads_indexes) > 64:  # libraries reloaded many times: keep only the recent ones
        _reads_indexes.clear()
    index = _ReadsIndex(reads)
    _reads_indexes[key] = (tuple(protocols), index)
    return index


def evaluation_inputs(record: PatientRecord, protocols: list[Protocol], agreements: list[Agreement],
                      as_of: dt.date) -> dict[str, str]:
    """Per protocol id: a digest of everything its result for this patient can depend on (module doc)."""
    common = json.dumps([as_of.isoformat(), record.patient.model_dump(mode="json"),
                         [(a.id, a.version, a.content_hash) for a in agreements]], sort_keys=True)
    digests = [_protocol_digest(proto) for proto in protocols]
    index = _reads_index(protocols, [reads for _digest, reads in digests])
    seen: list[list[bytes]] = [[] for _ in protocols]  # per protocol, the contents of the facts it sees, in record order
    for f in record.facts:
        who = index.seen_by(f)
        if who:
            content = f.model_dump_json().encode()
            for j in who:
                seen[j].append(content)
    out = {}
    for proto, (digest, _reads), contents in zip(protocols, digests, seen):
        h = hashlib.sha256(common.encode())
        h.update(digest.encode())
        for content in contents:
            h.update(content)
            h.update(b"\x00")
        out[proto.id] = h.hexdigest()
    return out


def _reusable(row: StoredResult | None, proto: Protocol, as_of: dt.date, digest: str,
              current: dict[str, TaskState]) -> ProtocolResult | None:
    """The stored result of `proto` when nothing it reads changed and reconciling it raises no new task."""
    if row is None or not isinstance(row.result, dict):
        return None
    if not StoredHead(row.id, row.version, row.reference_date, row.result.get(INPUTS_KEY)).stands_for(proto.version, as_of, digest):
        return None
    result = ProtocolResult.model_validate({k: v for k, v in row.result.items() if k != INPUTS_KEY})
    if result.protocol != proto.id or result.version != proto.version:
        return None
    return result if _tasks_stand(result, current) else None


def _tasks_stand(result: ProtocolResult, current: dict[str, RowState] | dict[str, TaskState]) -> bool:
    """Each of the result's tasks still has its current row (open, or closed while the need continues)."""
    for t in result.tasks:
        task_row = current.get(t.key)
        if task_row is None or (task_row.status in CLOSED_STATUSES and not task_row.condition_active):
            return False  # it would be raised anew, with this evaluation's time: evaluate it
    return True


CONFLICT_RETRIES = 5  # a patient whose record keeps changing under its evaluation stays marked for the drain


class StaleRead(Exception):
    """The patient's record (or the stored outputs a reused result rests on) changed between the read
    and the write of an evaluation: nothing was written; evaluate again from a fresh read."""


@dataclass
class _Snapshot:
    """What one evaluation read: the record, its digest and the outbox mark it answers."""
    patient_id: int
    nhs_number: str
    record: PatientRecord
    digest: str
    seq: int | None
    stored: dict[str, StoredResult]
    current: dict[str, TaskState]


@dataclass
class _Computed:
    evaluation: Evaluation
    inputs: dict[str, str]
    reused: dict[str, Protocol]  # protocol id -> protocol, for results taken from the stored row


def _read(session: Session, nhs_number: str) -> _Snapshot:
    got = read_state(session, nhs_number)
    if got is None:
        raise KeyError(f"no patient with NHS number {nhs_number}")
    return _Snapshot(got.patient.id, nhs_number, got.record(), got.digest, got.seq, got.stored, got.tasks)


def _compute(snap: _Snapshot, library: Library, as_of: dt.date, now: dt.datetime, selective: bool) -> _Computed:
    """Evaluate what was read, holding no database lock (no session at all)."""
    record = snap.record
    protocols, agreements = library.in_force(as_of), library.agreements_in_force(as_of)
    try:
        inputs = evaluation_inputs(record, protocols, agreements, as_of)
        reused: dict[str, ProtocolResult] = {}
        if selective:
            for proto in protocols:
                got = _reusable(snap.stored.get(proto.id), proto, as_of, inputs[proto.id], snap.current)
                if got is not None:
                    reused[proto.id] = got
        metrics.PROTOCOL_RESULTS.labels("reused").inc(len(reused))
        metrics.PROTOCOL_RESULTS.labels("derived").inc(len(protocols) - len(reused))
        fresh = evaluate(record, [p for p in protocols if p.id not in reused], agreements, as_of=as_of,
                         options=Options(raised_at=now))
        by_id = {pr.protocol: pr for pr in fresh.protocols}
        ctx = Context.as_of(as_of, protocols[0].period if protocols else ir.Duration(12, "months"))
        evaluation = Evaluation(nhs_number=record.patient.nhs_number, reference_date=as_of, period_start=ctx.period_start,
                                period_end=ctx.period_end, deceased=fresh.deceased,
                                protocols=[reused.get(p.id) or by_id[p.id] for p in protocols])
    except SQLAlchemyError:
        raise
    except Exception as exc:  # noqa: BLE001 - this patient's data problem, never anyone else's failure
        failed = diagnose(record, protocols, agreements, as_of, exc)
        failed.seq = snap.seq
        raise failed from exc
    return _Computed(evaluation, inputs, {p.id: p for p in protocols if p.id in reused})


def _write(session: Session, snap: _Snapshot, done: _Computed, as_of: dt.date, now: dt.datetime) -> Diff:
    """Store an evaluation's outputs if what it read is still what is stored (optimistic check under
    the patient's lock); StaleRead otherwise, with nothing written. The caller commits."""
    locked = locked_state(session, snap.patient_id, leave_out_flags=done.reused)  # a reused result's flags stand (store_evaluation)
    if locked is None:
        raise KeyError(f"no patient with NHS number {snap.nhs_number}")
    if locked.digest != snap.digest:
        raise StaleRead(f"{snap.nhs_number}: the record changed while it was being evaluated")
    # A reused result must still stand on the rows stored now: the same inputs digest (read by JSON path,
    # not the whole stored results) and each of its tasks' rows. The stored results are never read
    # whole here: the reused ones keep theirs, the others are overwritten (their measures, read by
    # JSON path, tell whether the audit's rows change).
    heads, current = locked.heads, locked.tasks
    results = {pr.protocol: pr for pr in done.evaluation.protocols}
    for pid, proto in done.reused.items():
        head = heads.get(pid)
        if head is None or not head.stands_for(proto.version, as_of, done.inputs[pid]) or not _tasks_stand(results[pid], current):
            raise StaleRead(f"{snap.nhs_number}: the stored {pid} result changed while it was being evaluated")
    diff = store_evaluation(session, snap.patient_id, snap.nhs_number, done.evaluation, now, inputs=done.inputs,
                            current=current, flags=locked.flags, stored=heads,
                            reused={pid: heads[pid].id for pid in done.reused}, confirm_reused=False)
    pending.settle(session, snap.patient_id, snap.seq, now, also=confirm_reused((heads[pid].id for pid in done.reused), now))
    return diff


def reevaluate(session: Session, nhs_number: str, library: Library, *, as_of: dt.date | None = None,
               now: dt.datetime | None = None, selective: bool = True,
               read_session: Session | None = None) -> tuple[Diff, Evaluation]:
    """Re-evaluate one patient and reconcile stored outputs. The caller commits.

    Read (from `read_session`, default `session`), evaluate with no lock held, then lock the patient,
    check the record did not change since the read and write the outputs; on a change, read again
    (at most CONFLICT_RETRIES times, then StaleRead: nothing written, the outbox mark stays).
    With `selective`, a protocol whose inputs did not change keeps its stored result (module doc)."""
    now = now or utcnow()
    as_of = as_of or now.date()
    for attempt in range(CONFLICT_RETRIES):
        if attempt and read_session is not None:
            read_session.expire_all()  # read the rows again, not the identity map's copies of the first read
        snap = _read(read_session or session, nhs_number)
        done = _compute(snap, library, as_of, now, selective)
        try:
            return _write(session, snap, done, as_of, now), done.evaluation
        except StaleRead:
            metrics.EVALUATION_CONFLICTS.inc()
            session.rollback()
            if attempt == CONFLICT_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def store_evaluation(session: Session, patient_id: int, nhs_number: str, evaluation: Evaluation, now: dt.datetime, *,
                     inputs: dict[str, str] | None = None, current: dict[str, RowState] | None = None,
                     flags: dict[str, RowState] | None = None, stored: dict[str, StoredHead] | None = None,
                     reused: dict[str, int] | None = None, confirm_reused: bool = True) -> Diff:
    """Reconcile a patient's stored tasks and flags with an evaluation and keep it as the latest; the
    caller commits. `reevaluate` evaluates and calls this; the benchmark registry builder
    (engine/app/registry_load.py) calls it with evaluations made in worker processes.
    `inputs` (from `evaluation_inputs`) are kept with the results so a later re-evaluation can
    reuse a result whose inputs did not change; `current` / `flags` (the latest task rows, the flag
    rows: `evaluation_state.task_rows` / `flag_rows`) and `stored` (the stored evaluations' heads,
    `evaluation_state.stored_heads`) were already read in this transaction; `reused`
    (protocol -> stored row id) names results taken unchanged from their stored rows: those rows keep
    their result and only get the evaluation time (one UPDATE; not here with `confirm_reused=False`:
    the caller writes `confirm_reused(ids)` itself, `_write` in the outbox's settling statement),
    `stored` need not hold them.
    The flags of reused results are not reconciled (nor need `flags` hold their rows): flag rows are
    written only here, each protocol's in the same call as its stored result, so the rows of a
    protocol whose stored result is reused are already what reconciling that result would leave
    (the same inputs digest: the same flags). Their tasks are reconciled like the others': a person
    may have reopened one since (a task no longer indicated must be resolved again, an open one's
    title and why-line follow the result), which reconciling catches.
    Everything is written with plain statements, not the ORM's unit of work; ORM objects of this
    patient's outputs already in the session are expired (read again on their next use)."""
    session.flush()  # what the session holds unwritten first (the ORM's autoflush before a query)
    diff = Diff(nhs_number)
    rows = _reconcile_tasks(session, patient_id, evaluation.tasks, diff, now, current)
    for t in evaluation.tasks:  # the stored result names the task row's SLA clock, never the evaluation's
        row = rows.get(t.key)
        if row is not None:
            t.raised_at, t.due = row.raised_at, row.due
    _reconcile_flags(session, patient_id, evaluation.flags, diff, now, flags, leave_out=set(reused or ()))
    _store_evaluation(session, patient_id, evaluation, now, stored, inputs, reused, confirm_reused)
    _expire_loaded(session, ((TaskRow, (r.id for r in rows.values() if r is not None)),
                             (TaskRow, (r.id for r in (current or {}).values())),
                             (FlagRow, (r.id for r in (flags or {}).values())),
                             (PatientEvaluationRow, (h.id for h in (stored or {}).values()))))
    return diff


def _expire_loaded(session: Session, rows) -> None:
    """Expire the ORM objects the session already holds of rows just written with plain statements
    ((model, ids) pairs): their next use reads them again."""
    held = session.identity_map
    if not len(held):
        return
    for model, ids in rows:
        for id_ in ids:
            obj = held.get(identity_key(model, id_))
            if obj is not None:
                session.expire(obj)


def reevaluate_many(engine: Engine, nhs_numbers, library: Library, *, as_of: dt.date | None = None,
                    now: dt.datetime | None = None) -> list[Diff]:
    """Re-evaluate the patients an ingest touched, each in its own transaction. A patient whose
    evaluation fails gets a data problem (see `evaluate_one`) and is left out of the diffs."""
    diffs = []
    for nhs in sorted(nhs_numbers):
        outcome, got = evaluate_one(engine, nhs, library, now=now, as_of=as_of)
        if outcome == EVALUATED:
            diffs.append(got)
        elif outcome == PENDING:
            raise RuntimeError(f"{nhs}: the database stayed busy; the patient is still pending evaluation")
    return diffs


# ---- the evaluation outbox ---------------------------------------------------------------------------
EVALUATED, PROBLEM, PENDING, GONE = "evaluated", "data-problem", "pending", "gone"


def record_failure(engine_or_session: Engine | Session, failed: EvaluationFailed, now: dt.datetime | None = None) -> None:
    """Keep a failed evaluation as a data problem on the patient and clear their outbox mark (the
    one the evaluation saw), in one transaction of its own (or the session given, not committed)."""
    now = now or utcnow()
    if isinstance(engine_or_session, Engine):
        with Session(engine_or_session) as s:
            record_failure(s, failed, now)
            s.commit()
        return
    s = engine_or_session
    prow = s.exec(select(PatientRow).where(PatientRow.nhs_number == failed.nhs_number)).first()
    if prow is None:
        return
    pending.record_problem(s, prow.id, message=failed.message, protocol=failed.protocol,
                           fact_source_system=failed.fact_source_system, fact_source_id=failed.fact_source_id,
                           fact_problem=failed.fact_problem, now=now)
    pending.clear(s, prow.id, failed.seq)


def evaluate_one(engine: Engine, nhs_number: str, library: Library, *, now: dt.datetime | None = None,
                 as_of: dt.date | None = None, retries: int = 6, read_engine: Engine | None = None) -> tuple[str, Diff | EvaluationFailed | None]:
    """Re-evaluate one patient in a transaction of its own: (EVALUATED, diff), (PROBLEM, failure,
    recorded on the patient), (GONE, None) for an unknown NHS number, or (PENDING, None) when the
    database stayed busy (the outbox mark stays, a later drain takes it)."""
    started = time.perf_counter()
    outcome, got = _evaluate_one(engine, nhs_number, library, now=now, as_of=as_of, retries=retries,
                                 read_engine=read_engine)
    if outcome != GONE:
        metrics.EVALUATIONS.labels(outcome).inc()
        metrics.EVALUATION_LATENCY.observe(time.perf_counter() - started)
    return outcome, got


def _evaluate_one(engine: Engine, nhs_number: str, library: Library, *, now: dt.datetime | None,
                  as_of: dt.date | None, retries: int, read_engine: Engine | None = None
                  ) -> tuple[str, Diff | EvaluationFailed | None]:
    """Three steps, no write lock while evaluating: read the record (a read session, closed before
    evaluating), evaluate, then write the outputs in a short transaction of the write engine after
    checking the record did not change (`_write`); a change means read and evaluate again, at most
    CONFLICT_RETRIES times, after which the patient stays marked (PENDING) for the drain."""
    now = now or utcnow()
    as_of = as_of or now.date()
    conflicts = 0
    attempt = 0
    while attempt < retries:
        try:
            with Session(read_engine or engine) as rs:
                snap = _read(rs, nhs_number)
            done = _compute(snap, library, as_of, now, True)
            with Session(engine) as session:
                diff = _write(session, snap, done, as_of, now)
                session.commit()
            return EVALUATED, diff
        except StaleRead:
            metrics.EVALUATION_CONFLICTS.inc()
            conflicts += 1
            if conflicts >= CONFLICT_RETRIES:
                log.warning("evaluation of %s: the record kept changing (%d tries); it stays pending", nhs_number, conflicts)
                return PENDING, None
            continue  # not counted against `retries`: those are for a busy database
        except EvaluationFailed as failed:
            log.warning("evaluation of %s failed, recorded as a data problem: %s (fact %s %s)", nhs_number, failed.message,
                        failed.fact_source_system, failed.fact_source_id)
            try:
                record_failure(engine, failed, now)
            except OperationalError:
                if attempt == retries - 1:
                    return PENDING, None
                time.sleep(0.05 * (attempt + 1))
                attempt += 1
                continue
            return PROBLEM, failed
        except KeyError:
            return GONE, None
        except OperationalError:
            if attempt == retries - 1:
                return PENDING, None
            time.sleep(0.05 * (attempt + 1))
        except SQLAlchemyError:
            log.exception("evaluation of %s hit a database error; it stays pending", nhs_number)
            return PENDING, None
        attempt += 1
    return PENDING, None


@dataclass
class DrainResult:
    evaluated: dict[str, Diff] = field(default_factory=dict)
    problems: dict[str, EvaluationFailed] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # still marked (busy database, or the drain was stopped)
    skipped: set[str] = field(default_factory=set)  # another drain was evaluating them, or already had


def pending_patients(engine: Engine, nhs_numbers=None) -> list[str]:
    """NHS numbers marked for evaluation, oldest mark first (optionally only among `nhs_numbers`)."""
    return [nhs for nhs, _ in pending_ids(engine, nhs_numbers)]


def pending_ids(engine: Engine, nhs_numbers=None) -> list[tuple[str, int]]:
    """(NHS number, patient id) of the patients marked for evaluation, oldest mark first (optionally only
    among `nhs_numbers`): what `drain(..., listed=)` takes so it need not list them again."""
    q = (select(PatientRow.nhs_number, PatientRow.id)
         .join(pending.PendingEvaluationRow, pending.PendingEvaluationRow.patient_id == PatientRow.id)
         .order_by(pending.PendingEvaluationRow.queued_at, PatientRow.id))
    with Session(engine) as s:
        if nhs_numbers is None:
            return [tuple(r) for r in s.exec(q)]
        wanted, out = sorted(set(nhs_numbers)), []
        for i in range(0, len(wanted), 500):
            out += [tuple(r) for r in s.exec(q.where(PatientRow.nhs_number.in_(wanted[i:i + 500])))]
        return out


def _still_marked(engine: Engine, patient_id: int) -> bool:
    with Session(engine) as s:
        return pending.pending_seq(s, patient_id) is not None


def drain(engine: Engine, library: Library | Callable[[], Library], clock: Callable[[], dt.datetime] = utcnow, *,
          nhs_numbers=None, stop: threading.Event | None = None, read_engine: Engine | None = None,
          listed: list[tuple[str, int]] | None = None) -> DrainResult:
    """Evaluate every patient marked for evaluation (or those among `nhs_numbers`), one transaction
    each, as of the clock's date; failures become data problems. Stops early when `stop` is set.

    A drain of the whole outbox claims each patient first (engine/registry/evaluation_claims.py) and
    skips one that another drain is evaluating now or that is no longer marked (evaluated since this
    drain listed the outbox): several workers draining at their start share the backlog instead of
    each evaluating all of it. A drain of given patients (a delivery's, in its request) evaluates
    them as before; `listed` is that list of (NHS number, patient id) when the caller knows it already
    (from the outbox, `pending_ids`, or from the ingest that marked them, `IngestSummary.marked`),
    so the outbox is not listed for them."""
    result = DrainResult()
    whole_outbox = nhs_numbers is None and listed is None
    for nhs, patient_id in (listed if listed is not None else pending_ids(engine, nhs_numbers)):
        if stop is not None and stop.is_set():
            result.pending.add(nhs)
            continue
        now = clock()
        lib = library() if callable(library) else library
        if whole_outbox:
            with claim_patient(engine, patient_id) as mine:
                if not mine or not _still_marked(read_engine or engine, patient_id):
                    result.skipped.add(nhs)
                    continue
                outcome, got = evaluate_one(engine, nhs, lib, now=now, as_of=now.date(), read_engine=read_engine)
        else:
            outcome, got = evaluate_one(engine, nhs, lib, now=now, as_of=now.date(), read_engine=read_engine)
        if outcome == EVALUATED:
            result.evaluated[nhs] = got
        elif outcome == PROBLEM:
            result.problems[nhs] = got
        elif outcome == PENDING:
            result.pending.add(nhs)
    return result


class Drainer:
    """Drains the outbox in a background thread: `kick()` after a large delivery or at service
    start; a kick while a pass runs makes it go round again. `stop()` ends it between patients
    (whoever is left stays marked for the next start)."""

    def __init__(self, engine: Engine, library: Callable[[], Library], clock: Callable[[], dt.datetime] = utcnow,
                 read_engine: Engine | None = None):
        self.engine, self.library, self.clock, self.read_engine = engine, library, clock, read_engine
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._again = False
        self._thread: threading.Thread | None = None
        self.passes = 0

    def kick(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._again = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="carepath-evaluation-drain", daemon=True)
                self._thread.start()

    @property
    def busy(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if not self._again:
                    self._thread = None
                    return
                self._again = False
            try:
                result = drain(self.engine, self.library, self.clock, stop=self._stop, read_engine=self.read_engine)
                self.passes += 1
                if result.pending and not self._stop.is_set():  # a busy database: try again shortly
                    time.sleep(0.5)
                    with self._lock:
                        self._again = True
            except Exception:  # noqa: BLE001 - keep the thread's failure in the log, try again on the next kick
                log.exception("background evaluation drain failed; patients stay pending")
                time.sleep(0.5)

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait until no pass is running (tests, shutdown). True when idle."""
        end = time.monotonic() + timeout
        while self.busy and time.monotonic() < end:
            time.sleep(0.02)
        return not self.busy

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout)


def _event(session: Session, task: TaskRow, action: str, actor: str, before: str | None, note: str | None = None,
           at: dt.datetime | None = None) -> None:
    session.add(TaskEventRow(task_id=task.id, action=action, actor=actor, from_status=before, to_status=task.status,
                             note=note, at=at or utcnow()))


def _system_event(events: list[dict], task: RowState, action: str, before: str | None, note: str | None,
                  at: dt.datetime) -> None:
    events.append(dict(task_id=task.id, action=action, actor=SYSTEM, from_status=before, to_status=task.status, note=note, at=at))


def _write_changes(session: Session, table: sa.Table, rows) -> None:
    """One UPDATE per set of changed columns (executemany) for the rows whose values changed."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        if row.changed:
            groups.setdefault(tuple(sorted(row.changed)), []).append(dict(row.changed, row_id=row.id))
            row.changed.clear()
    for _cols, params in groups.items():
        session.execute(sa.update(table).where(table.c.id == sa.bindparam("row_id")), params)


def _reconcile_tasks(session: Session, patient_id: int, tasks: list[Task], diff: Diff, now: dt.datetime,
                     current: dict[str, RowState] | None = None) -> dict[str, RowState]:
    """Open, keep, resolve task rows for this evaluation's tasks; returns key -> the row that stands for
    each task now (new, still open, or closed by a person while the need continues). Plain statements:
    an INSERT per new task (its id names its event), one UPDATE per set of changed columns, one INSERT
    of the events."""
    current = task_rows(session, patient_id) if current is None else current
    table = TaskRow.__table__
    wanted = {t.key: t for t in tasks}
    standing: dict[str, RowState] = {}
    events: list[dict] = []
    for key, t in wanted.items():
        row = current.get(key)
        standing[key] = row
        if row is None or (row.status in CLOSED_STATUSES and not row.condition_active):
            values = dict(key=key, patient_id=patient_id, protocol=t.provenance.protocol, version=t.provenance.version,
                          source=t.provenance.source, kind=t.kind, title=t.title, priority=t.priority, status="open",
                          raised_at=t.raised_at, due=t.due, provider=t.assigned.provider, team=t.assigned.team,
                          role=t.assigned.role, response=t.assigned.response, agreement=t.assigned.agreement,
                          why=t.provenance.why, evidence=[e.model_dump(mode="json") for e in t.provenance.evidence],
                          condition_active=True, closed_at=None, closed_reason=None, updated_at=now, outcome=None,
                          closed_by=None)
            values["id"] = session.execute(sa.insert(table).returning(table.c.id), values).scalar_one()
            new = RowState(values)
            standing[key] = new
            _system_event(events, new, "raised", None, t.provenance.why, now)
            diff.tasks_opened.append(Change(key, t.title, t.provenance.why, new.id))
        elif row.status in OPEN_STATUSES:
            changed = (row.title, row.priority, row.why, row.version) != (t.title, t.priority, t.provenance.why, t.provenance.version)
            row.condition_active = True
            if changed:
                row.title, row.priority, row.why, row.version = t.title, t.priority, t.provenance.why, t.provenance.version
                row.evidence = [e.model_dump(mode="json") for e in t.provenance.evidence]
                row.updated_at = now
                _system_event(events, row, "updated", row.status, t.provenance.why, now)
                diff.tasks_updated.append(Change(key, t.title, t.provenance.why, row.id))
        else:
            row.condition_active = True  # closed by a person while the need continues: leave it closed
    for key, row in current.items():
        if key in wanted or row.kind == MDT_KIND:  # an MDT's decision is not the protocol's to resolve
            continue
        if row.status in OPEN_STATUSES:
            before = row.status
            row.status, row.closed_at, row.condition_active, row.updated_at = "resolved", now, False, now
            row.closed_reason = "no longer indicated by the protocol on re-evaluation"
            _system_event(events, row, "resolved", before, row.closed_reason, now)
            diff.tasks_closed.append(Change(key, row.title, row.closed_reason, row.id))
        else:
            row.condition_active = False
    _write_changes(session, table, current.values())
    if events:
        session.execute(sa.insert(TaskEventRow.__table__), events)
    return standing


def _reconcile_flags(session: Session, patient_id: int, flags: list[Flag], diff: Diff, now: dt.datetime,
                     rows: dict[str, RowState] | None = None, leave_out: set[str] = frozenset()) -> None:
    """Raise, change, clear flag rows for this evaluation's flags, but for those of the protocols in
    `leave_out` (results reused: their rows are left as they are, see `store_evaluation`)."""
    rows = flag_rows(session, patient_id, leave_out) if rows is None else rows
    if leave_out:
        flags = [f for f in flags if f.provenance.protocol not in leave_out]
        rows = {k: r for k, r in rows.items() if r.protocol not in leave_out}
    wanted = {f.key: f for f in flags}
    new: list[dict] = []
    for key, f in wanted.items():
        row = rows.get(key)
        evidence = [e.model_dump(mode="json") for e in f.provenance.evidence]
        if row is None:
            new.append(dict(key=key, patient_id=patient_id, protocol=f.provenance.protocol, version=f.provenance.version,
                            source=f.provenance.source, kind=f.kind, code=f.code, level=f.level, text=f.text,
                            why=f.provenance.why, evidence=evidence, active=True, raised_at=now, cleared_at=None))
            diff.flags_raised.append(Change(key, f.text, f.level))
            continue
        if not row.active:
            row.active, row.raised_at, row.cleared_at = True, now, None
            diff.flags_raised.append(Change(key, f.text, f.level, row.id))
        elif row.level != f.level:
            diff.flags_changed.append(Change(key, f.text, f"{row.level} -> {f.level}", row.id))
        row.level, row.text, row.why, row.evidence, row.version = f.level, f.text, f.provenance.why, evidence, f.provenance.version
    for key, row in rows.items():
        if key not in wanted and row.active:
            row.active, row.cleared_at = False, now
            diff.flags_cleared.append(Change(key, row.text, row.level, row.id))
    _write_changes(session, FlagRow.__table__, rows.values())
    if new:
        session.execute(sa.insert(FlagRow.__table__), new)


def confirm_reused(row_ids: Iterable[int], now: dt.datetime) -> sa.Update | None:
    """The UPDATE of reused results (stored rows taken unchanged): only the time they were last confirmed
    moves (version, date and result are the row's); None when there are none."""
    ids = sorted(row_ids)
    if not ids:
        return None
    table = PatientEvaluationRow.__table__
    return sa.update(table).where(table.c.id.in_(ids)).values(evaluated_at=now)


def _store_evaluation(session: Session, patient_id: int, evaluation: Evaluation, now: dt.datetime,
                      heads: dict[str, StoredHead] | None = None, inputs: dict[str, str] | None = None,
                      reused: dict[str, int] | None = None, confirm: bool = True) -> None:
    """Write the evaluation rows with plain statements (no ORM unit of work): one UPDATE moves the
    evaluation time of the reused results, one (executemany) rewrites the rows of the results
    derived again, one inserts the new ones; `patient_measure` is rewritten only for a result whose
    version or measures changed."""
    heads = stored_heads(session, patient_id) if heads is None else heads
    reused = reused or {}
    table = PatientEvaluationRow.__table__
    if reused and confirm:
        session.execute(confirm_reused(reused.values(), now))
    updates, inserts = [], []
    for pr in evaluation.protocols:
        if pr.protocol in reused:
            continue
        data = pr.model_dump(mode="json")
        if inputs and pr.protocol in inputs:
            data[INPUTS_KEY] = inputs[pr.protocol]
        head = heads.get(pr.protocol)
        values = dict(version=pr.version, reference_date=evaluation.reference_date, on_register=pr.on_register, result=data,
                      evaluated_at=now, tier_level=pr.tier.level if pr.tier is not None else None)  # the worklist reads the tier as a column
        if head is None:
            inserts.append(dict(patient_id=patient_id, protocol=pr.protocol, **values))
        else:
            updates.append(dict(row_id=head.id, **values))
        note_stored(session)  # the audit's cached figures are counted again after this commits (engine.app.audit_cache)
        before = (head.version, head.measures) if head is not None and head.is_object else None
        if before != (pr.version, data.get("measures")):  # the audit's rows (patient_measure) follow the measures
            replace_measures(session, patient_id, pr.protocol, pr.version, data.get("measures"))
    if updates:
        session.execute(sa.update(table).where(table.c.id == sa.bindparam("row_id")), updates)
    if inserts:
        session.execute(sa.insert(table), inserts)


# ---- task lifecycle actions ------------------------------------------------------------------------
TRANSITIONS = {
    "accept": ({"open"}, "accepted"),
    "complete": ({"open", "accepted"}, "completed"),
    "decline": ({"open", "accepted"}, "declined"),
    "reopen": ({"completed", "declined"}, "open"),
}


def task_action(session: Session, task_id: int, action: str, actor: str, *, reason: str | None = None,
                provider: str | None = None, team: str | None = None, role: str | None = None,
                now: dt.datetime | None = None, outcome: str | None = None) -> TaskRow:
    """Accept / complete (with a coded outcome, engine.app.task_outcomes) / decline (with reason) / reopen /
    reassign a task, keeping its history. Who may complete is the caller's check (`completion_refusal`)."""
    now = now or utcnow()
    row = session.get(TaskRow, task_id)
    if row is None:
        raise KeyError(f"no task {task_id}")
    before = row.status
    if action == "reassign":
        if not (provider or team or role):
            raise TaskActionError("reassign needs a provider, team or role")
        if row.status not in OPEN_STATUSES:
            raise TaskActionError(f"cannot reassign a {row.status} task")
        old = " / ".join(x for x in (row.provider, row.team, row.role) if x)
        row.provider, row.team, row.role = provider or row.provider, team or row.team, role or row.role
        note = f"from {old} to {' / '.join(x for x in (row.provider, row.team, row.role) if x)}" + (f": {reason}" if reason else "")
        _event(session, row, "reassigned", actor, before, note, now)
    else:
        if action not in TRANSITIONS:
            raise TaskActionError(f"unknown action {action!r} (accept, complete, decline, reopen, reassign)")
        allowed, target = TRANSITIONS[action]
        if row.status not in allowed:
            raise TaskActionError(f"cannot {action} a task that is {row.status}")
        if action == "decline" and not (reason and reason.strip()):
            raise TaskActionError("declining a task needs a reason")
        if action == "complete":
            try:
                reason = outcome_text(outcome, reason)
            except OutcomeError as e:
                raise TaskActionError(str(e)) from None
        row.status = target
        if target in CLOSED_STATUSES:
            row.closed_at, row.closed_reason, row.closed_by = now, reason or f"{target} by {actor}", actor
            row.outcome = outcome if action == "complete" else None
        else:
            row.closed_at, row.closed_reason, row.closed_by, row.outcome = None, None, None, None
        _event(session, row, {"accept": "accepted", "complete": "completed", "decline": "declined",
                              "reopen": "reopened"}[action], actor, before, reason, now)
    row.updated_at = now
    session.add(row)
    return row


def task_history(session: Session, task_id: int) -> list[TaskEventRow]:
    return list(session.exec(select(TaskEventRow).where(TaskEventRow.task_id == task_id).order_by(TaskEventRow.id)).all())
