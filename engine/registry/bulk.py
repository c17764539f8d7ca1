"""Bulk ingest of FHIR Bulk Data output: a folder of NDJSON files (`Patient.ndjson`,
`Condition.ndjson`, `Observation.ndjson`, `MedicationRequest.ndjson` ..., one resource per line, as
a `$export` writes them) into the registry (issue 17 item 2). `carepath ingest --ndjson DIR` and
`POST /ingest/bulk` both run `BulkLoad`.

How it goes:

1. **Fingerprint** (`describe_files`): each file's name, size and SHA-256; with the source system
   they name the run. `claim` finds a run with that fingerprint or starts one (`bulk_ingest_run`,
   migration 0010): the same files again after a finished run are "already loaded" (nothing is
   read; `force` loads them again, which changes nothing unless the registry changed since), after an
   interrupted run (killed, failed, Ctrl-C) the run is resumed from its checkpoint. A run still
   being loaded by a live process is refused (`BulkBusy`).
2. **Index** (streamed, line by line): every line is parsed once to find its patient (`Patient.id`,
   or the `subject` / `patient` / `beneficiary` reference) and its byte offset is written to a
   temporary SQLite index on disk, never kept in memory. Lines that are not JSON, not a FHIR resource,
   or name no patient are refused here; resource types carepath does not import are counted as
   `unsupported`; Medication / Organization / Device lines are `supporting` (copied into the bundle
   of each patient whose resources refer to them, as the bundle importer uses them).
3. **Load**, patient by patient in patient-id order: the patient's lines are read back (by offset)
   into one collection Bundle and turned into a record by the bundle importer
   (engine/records/fhir/bundle.py `import_bundle`, the same reader as `POST /ingest/fhir`). A resource
   the importer refuses (a `BundleError` pointing at its entry) is refused with its file, line and
   reason and the patient is imported without it; a refused Patient refuses its whole group. A
   patient with no line in `Patient.ndjson` (an incremental export) is matched to the registry by
   its id from this source system, else refused. The patient's id is kept as its source id
   (`patient_source_id`), so later exports can refer to it.
4. **Store**, `chunk` patients per transaction through `ingest_records` (idempotent: a fact is keyed
   by source system and id and unchanged content is left alone; patients whose facts changed, or never
   evaluated, are marked in the evaluation outbox in that transaction). The run's checkpoint (the last
   patient id stored), its counters and the chunk's refused lines are written **in the same
   transaction**, so after a kill a resumed run starts exactly after the last stored patient.
5. **Evaluate**: `on_chunk` gets each chunk's `IngestSummary` (the CLI evaluates `summary.queued`;
   the service kicks its background drain). The selective digest (engine/app/service.py) then
   re-derives only the protocols whose inputs changed.

Memory stays flat: one chunk of patients, whatever the size of the files. Refused and skipped lines are
kept in `bulk_ingest_refusal` (file, line number, resource, reason): `run_report` gives them per file.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Field, Session, SQLModel, select

from engine.records.fhir.bundle import PATIENT_REF, READERS, SUPPORTING_TYPES, import_bundle
from engine.records.fhir.common import ID_SOURCE, NHS_NUMBER_SYSTEM, BundleError, _ref_key
from engine.registry.bulk_sources import is_manifest, is_ndjson_name, manifest_files, plain_copies
from engine.registry.dialect import is_postgresql
from engine.registry.ingest import IngestError, IngestSummary, ingest_records
from engine.registry.tables import PatientRow, PatientSourceId, _fk, _json, _when, utcnow

log = logging.getLogger("carepath.bulk")

CHUNK_PATIENTS = 100          # patients stored per transaction (and per checkpoint)
STALE_SECONDS = 300           # a run on another machine with no checkpoint for this long is taken as dead
RETRIES = 6
REPORT_LIMIT = 1000           # refused lines shown by run_report unless asked for more
SUFFIX = ".ndjson"


class BulkRunRow(SQLModel, table=True):
    __tablename__ = "bulk_ingest_run"
    __table_args__ = (sa.Index("ix_bulk_ingest_run_fingerprint", "fingerprint"),)

    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    source_system: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    files: list = _json(default_factory=list)  # [{name, size, sha256, lines, unsupported, supporting}]
    status: str = Field(sa_column=sa.Column(sa.String(20), nullable=False))  # running, done, failed
    owner: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))  # host|pid|token of the loading process
    checkpoint: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))  # last patient id stored
    patients_total: int = 0
    patients_done: int = 0
    lines_total: int = 0
    lines_loaded: int = 0
    facts_added: int = 0
    facts_updated: int = 0
    facts_unchanged: int = 0
    resumed: int = 0
    created_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(100)))
    started_at: dt.datetime = _when(default_factory=utcnow)
    updated_at: dt.datetime = _when(default_factory=utcnow)
    finished_at: dt.datetime | None = _when(nullable=True, default=None)
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))


class BulkRefusalRow(SQLModel, table=True):
    """A line that was not loaded: `refused` (invalid, or its patient refused) or `skipped` (a supported
    resource carrying nothing usable: no code, no date ...)."""

    __tablename__ = "bulk_ingest_refusal"
    __table_args__ = (sa.UniqueConstraint("run_id", "file", "line", name="uq_bulk_ingest_refusal_line"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = _fk("bulk_ingest_run.id", "fk_bulk_ingest_refusal_run")
    file: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    line: int
    outcome: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    resource: str | None = Field(default=None, sa_column=sa.Column(sa.String(255)))
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


class BulkError(Exception):
    """The files cannot be loaded as given (no NDJSON files, unreadable folder ...)."""


class BulkBusy(BulkError):
    """Another live process is loading these files (or took the run over)."""


class BulkInterrupted(BaseException):
    """Raised by a test hook (`on_line`) to stop a load part way, as a kill would: nothing is cleaned up."""


# ---- files and runs ---------------------------------------------------------------------------------------
@dataclass
class NdjsonFile:
    name: str
    path: Path
    size: int
    sha256: str


def ndjson_files(folder: Path) -> list[Path]:
    """The `*.ndjson` and `*.ndjson.gz` files of a folder, or those a `$export` manifest (a `.json` file)
    names (engine/registry/bulk_sources.py)."""
    folder = Path(folder)
    if is_manifest(folder):
        return manifest_files(folder, BulkError)
    if not folder.is_dir():
        raise BulkError(f"{folder}: not a folder (nor a $export manifest .json file)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_ndjson_name(p.name))
    if not files:
        raise BulkError(f"{folder}: no *{SUFFIX} or *{SUFFIX}.gz files (FHIR Bulk Data output: Patient.ndjson, "
                        "Condition.ndjson ...)")
    return files


def describe_files(paths: Iterable[Path], names: Iterable[str] | None = None) -> list[NdjsonFile]:
    """Name, size and SHA-256 of each file (names default to the file names)."""
    out = []
    for path, name in zip(paths, names or itertools.repeat(None)):
        path = Path(path)
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                size += len(block)
        out.append(NdjsonFile(name=name or path.name, path=path, size=size, sha256=h.hexdigest()))
    if len({f.name for f in out}) != len(out):
        raise BulkError("two files with the same name")
    return sorted(out, key=lambda f: f.name)


def fingerprint(files: list[NdjsonFile], source_system: str) -> str:
    h = hashlib.sha256(source_system.encode())
    for f in sorted(files, key=lambda f: f.name):
        h.update(f"\x00{f.name}\x00{f.size}\x00{f.sha256}".encode())
    return h.hexdigest()


_ACTIVE: set[str] = set()  # owners (host|pid|token) of the runs this process is loading now
_ACTIVE_LOCK = threading.Lock()


def _new_owner() -> str:
    return f"{socket.gethostname()[:100]}|{os.getpid()}|{uuid.uuid4().hex}"


def owner_alive(owner: str, updated_at: dt.datetime, now: dt.datetime | None = None) -> bool:
    """Is the process that owns a running run still alive? On this machine: its pid (and, in this very
    process, whether the run is still being loaded); elsewhere: a checkpoint within STALE_SECONDS."""
    host, _, rest = owner.partition("|")
    pid_text, _, _token = rest.partition("|")
    if host != socket.gethostname()[:100] or not pid_text.isdigit():
        return ((now or utcnow()) - updated_at).total_seconds() < STALE_SECONDS
    pid = int(pid_text)
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return owner in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    run_id: int
    state: str  # new, resumed, already-loaded
    owner: str
    checkpoint: str | None = None


def claim(engine: Engine, files: list[NdjsonFile], source_system: str, *, force: bool = False,
          created_by: str | None = None) -> Claim:
    """The run for these files: a new one, the interrupted one resumed, or the finished one (nothing to
    do unless `force`). BulkBusy when a live process is loading them."""
    fp = fingerprint(files, source_system)
    owner = _new_owner()
    now = utcnow()
    with Session(engine) as s:
        latest = s.exec(select(BulkRunRow).where(BulkRunRow.fingerprint == fp).order_by(BulkRunRow.id.desc())).first()
        if latest is not None and latest.status == "done" and not force:
            return Claim(latest.id, "already-loaded", latest.owner, latest.checkpoint)
        if latest is not None and latest.status != "done":
            if latest.status == "running" and owner_alive(latest.owner, latest.updated_at, now):
                raise BulkBusy(f"these files are being loaded now (run {latest.id}, last checkpoint "
                               f"{latest.updated_at:%Y-%m-%d %H:%M:%S} UTC)")
            table = BulkRunRow.__table__
            taken = s.execute(sa.update(table).where(table.c.id == latest.id, table.c.owner == latest.owner)
                              .values(owner=owner, status="running", resumed=latest.resumed + 1, updated_at=now,
                                      error=None, finished_at=None)).rowcount
            if taken != 1:
                raise BulkBusy(f"run {latest.id} was taken over by another process just now")
            s.commit()
            with _ACTIVE_LOCK:
                _ACTIVE.add(owner)
            return Claim(latest.id, "resumed", owner, latest.checkpoint)
        row = BulkRunRow(fingerprint=fp, source_system=source_system, status="running", owner=owner, created_by=created_by,
                         files=[dict(name=f.name, size=f.size, sha256=f.sha256) for f in files], started_at=now, updated_at=now)
        s.add(row)
        s.commit()
        with _ACTIVE_LOCK:
            _ACTIVE.add(owner)
        return Claim(row.id, "new", owner)


def release(claim_: Claim) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(claim_.owner)


# ---- the temporary index ----------------------------------------------------------------------------------
class _Index:
    """Where each patient's lines are (file, line, byte offset, length): a SQLite file on disk."""

    def __init__(self, work_dir: Path | None):
        self.dir = tempfile.mkdtemp(prefix="carepath-bulk-", dir=str(work_dir) if work_dir else None)
        self.db = sqlite3.connect(os.path.join(self.dir, "index.db"))
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE line (pkey TEXT NOT NULL, file INTEGER, line INTEGER, offset INTEGER, length INTEGER)")
        self.db.execute("CREATE TABLE support (key TEXT PRIMARY KEY, file INTEGER, line INTEGER, offset INTEGER, length INTEGER)")

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class _Group:
    pkey: str
    records: list = field(default_factory=list)
    refusals: list = field(default_factory=list)   # (file name, line, outcome, resource, reason)
    lines: list = field(default_factory=list)      # (file name, line, resource) of the group's own lines


_ENTRY = re.compile(r"^/entry/(\d+)(?:/|$)")
_SKIPPED = re.compile(r"^/entry/(\d+)/resource \S+: (.*)$", re.S)


def _resource_name(res: Any) -> str | None:
    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
        return None
    rid = res.get("id")
    return f"{res['resourceType']}/{rid}"[:255] if isinstance(rid, str) and rid else res["resourceType"][:255]


def _references(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str):
            key = _ref_key(ref)
            if key and key.split("/", 1)[0] in SUPPORTING_TYPES:
                out.add(key)
        for v in node.values():
            if isinstance(v, (dict, list)):
                _references(v, out)
    elif isinstance(node, list):
        for v in node:
            _references(v, out)


# ---- the load -------------------------------------------------------------------------------------------
@dataclass
class BulkLoad:
    """One load of NDJSON files into the registry (module docstring). `run()` claims the run (or takes
    the claim given), indexes, loads and returns `run_report`."""

    engine: Engine
    files: list[NdjsonFile]
    source_system: str = "fhir"
    force: bool = False
    created_by: str | None = None
    chunk: int = CHUNK_PATIENTS
    work_dir: Path | None = None
    progress: Callable[[str, int, int], None] | None = None     # (phase "reading" / "loading", done, total)
    on_chunk: Callable[[IngestSummary], None] | None = None     # after each stored chunk (evaluate it)
    on_line: Callable[[int], None] | None = None                # test hook: lines read so far in the load pass
    claimed: Claim | None = None

    def run(self) -> dict:
        c = self.claimed or claim(self.engine, self.files, self.source_system, force=self.force, created_by=self.created_by)
        self.claimed = c
        if c.state == "already-loaded":
            return run_report(self.engine, c.run_id) | {"state": c.state}
        from engine import metrics

        index = _Index(self.work_dir)
        try:
            self.files = plain_copies(self.files, Path(index.dir), BulkError)  # *.ndjson.gz read from a plain copy
            self._index(index)
            self._load(index, c)
            self._finish(c, "done")
            metrics.INGEST_DELIVERIES.labels("bulk", "accepted").inc()
        except BulkBusy:
            raise
        except Exception as e:  # noqa: BLE001 - the run stays resumable; say why it stopped
            log.exception("bulk load %s failed", c.run_id)
            self._finish(c, "failed", f"{type(e).__name__}: {e}")
            raise
        finally:
            index.close()
            release(c)
        return run_report(self.engine, c.run_id) | {"state": c.state}

    # -- 2. index
    def _index(self, index: _Index) -> None:
        total_bytes = sum(f.size for f in self.files) or 1
        done_bytes = 0
        early: list[tuple] = []
        file_stats = []
        lines_total = 0
        for fi, f in enumerate(self.files):
            stats = dict(name=f.name, size=f.size, sha256=f.sha256, lines=0, unsupported=0, supporting=0)
            batch: list[tuple] = []
            with open(f.path, "rb") as fh:
                offset = 0
                for lineno, raw in enumerate(fh, start=1):
                    start, offset = offset, offset + len(raw)
                    text = raw.strip()
                    if not text:
                        continue
                    stats["lines"] += 1
                    refused = self._index_line(index, batch, fi, f.name, lineno, start, len(raw), text, stats)
                    if refused is not None:
                        early.append(refused)
                    if len(batch) >= 5000:
                        index.db.executemany("INSERT INTO line VALUES (?, ?, ?, ?, ?)", batch)
                        batch.clear()
                    if lineno % 2000 == 0 and self.progress:
                        self.progress("reading", done_bytes + offset, total_bytes)
                if batch:
                    index.db.executemany("INSERT INTO line VALUES (?, ?, ?, ?, ?)", batch)
            done_bytes += f.size
            lines_total += stats["lines"]
            file_stats.append(stats)
            if self.progress:
                self.progress("reading", done_bytes, total_bytes)
        index.db.execute("CREATE INDEX ix_line ON line (pkey, file, line)")
        index.db.commit()
        self.patients_total = index.db.execute("SELECT COUNT(DISTINCT pkey) FROM line").fetchone()[0]
        with Session(self.engine) as s:
            self._refusals(s, early)
            table = BulkRunRow.__table__
            s.execute(sa.update(table).where(table.c.id == self.claimed.run_id)
                      .values(files=file_stats, lines_total=lines_total, patients_total=self.patients_total,
                              updated_at=utcnow()))
            s.commit()
        if self.claimed.state == "new":  # a resumed run read these lines before
            from engine import metrics
            for outcome in ("unsupported", "supporting"):
                metrics.BULK_LINES.labels(outcome).inc(sum(x[outcome] for x in file_stats))
            metrics.BULK_LINES.labels("refused").inc(len(early))

    def _index_line(self, index: _Index, batch: list, fi: int, name: str, lineno: int, offset: int, length: int,
                    text: bytes, stats: dict) -> tuple | None:
        def refuse(reason: str, resource: str | None = None) -> tuple:
            return (name, lineno, "refused", resource, reason)

        try:
            res = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            return refuse(f"not valid JSON: {e}")
        resource = _resource_name(res)
        if resource is None:
            return refuse("not a FHIR resource (a JSON object with a resourceType)")
        rtype, rid = res["resourceType"], res.get("id")
        if rtype == "Patient":
            if not isinstance(rid, str) or not rid:
                return refuse("Patient without an id: no other line could refer to it", resource)
            batch.append((rid, fi, lineno, offset, length))
        elif rtype in SUPPORTING_TYPES:
            stats["supporting"] += 1
            if isinstance(rid, str) and rid:
                index.db.execute("INSERT OR IGNORE INTO support VALUES (?, ?, ?, ?, ?)", (f"{rtype}/{rid}", fi, lineno, offset, length))
        elif rtype not in READERS:
            stats["unsupported"] += 1
        else:
            ref = res.get(PATIENT_REF.get(rtype, "subject"))
            target = ref.get("reference") if isinstance(ref, dict) else None
            key = _ref_key(target) if isinstance(target, str) else None
            if not key or not key.startswith("Patient/"):
                field_name = PATIENT_REF.get(rtype, "subject")
                return refuse(f"no {field_name} reference to a Patient: the line belongs to nobody", resource)
            batch.append((key[len("Patient/"):], fi, lineno, offset, length))
        return None

    # -- 3./4. load and store
    def _load(self, index: _Index, c: Claim) -> None:
        handles = [open(f.path, "rb") for f in self.files]
        try:
            rows = index.db.execute("SELECT pkey, file, line, offset, length FROM line WHERE pkey > ? ORDER BY pkey, file, line",
                                    (c.checkpoint or "",))
            done = index.db.execute("SELECT COUNT(DISTINCT pkey) FROM line WHERE pkey <= ?", (c.checkpoint or "",)).fetchone()[0]
            chunk: list[_Group] = []
            lines_read = 0
            for pkey, group_rows in itertools.groupby(rows, key=lambda r: r[0]):
                group_rows = list(group_rows)
                lines_read += len(group_rows)
                if self.on_line is not None:
                    self.on_line(lines_read)
                chunk.append(self._group(index, handles, pkey, group_rows))
                if len(chunk) >= self.chunk:
                    self._store(chunk)
                    done += len(chunk)
                    chunk = []
                    if self.progress:
                        self.progress("loading", done, self.patients_total)
            if chunk:
                self._store(chunk)
                done += len(chunk)
            if self.progress:
                self.progress("loading", done, self.patients_total)
        finally:
            for h in handles:
                h.close()

    def _read(self, handles, fi: int, offset: int, length: int) -> dict:
        fh = handles[fi]
        fh.seek(offset)
        return json.loads(fh.read(length))

    def _group(self, index: _Index, handles, pkey: str, rows: list) -> _Group:
        g = _Group(pkey)
        patients, others = [], []
        for _, fi, lineno, offset, length in rows:
            res = self._read(handles, fi, offset, length)
            where = (self.files[fi].name, lineno, _resource_name(res))
            g.lines.append(where)
            (patients if res.get("resourceType") == "Patient" else others).append((res, where))
        if not patients:
            known = self._registered_patient(pkey)
            if known is None:
                g.refusals += [(n, ln, "refused", r, f"Patient/{pkey} is in no Patient line of these files and not in the "
                                                     f"registry from source {self.source_system!r}") for n, ln, r in g.lines]
                return g
            patients = [(known, None)]
        for res, _ in patients:
            ids = res.get("identifier")
            if ids is None:
                ids = res["identifier"] = []
            if isinstance(ids, list) and not any(isinstance(i, dict) and i.get("system") == ID_SOURCE + self.source_system
                                                 for i in ids):
                ids.append({"system": ID_SOURCE + self.source_system, "value": pkey})
        refs: set[str] = set()
        for res, _ in patients + others:
            _references(res, refs)
        support = []
        for key in sorted(refs):
            hit = index.db.execute("SELECT file, line, offset, length FROM support WHERE key = ?", (key,)).fetchone()
            if hit is not None:
                support.append((self._read(handles, hit[0], hit[2], hit[3]), (self.files[hit[0]].name, hit[1], key)))
        entries = patients + others + support
        first_support = len(patients) + len(others)
        active = list(range(len(entries)))
        while active:
            bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": entries[i][0]} for i in active]}
            try:
                result = import_bundle(bundle, source_system=self.source_system)
            except BundleError as e:
                m = _ENTRY.match(e.pointer or "")
                i = active[int(m.group(1))] if m and int(m.group(1)) < len(active) else None
                inner = re.sub(r"^/entry/\d+/resource", "", e.pointer or "") if m else ""
                reason = e.message + (f" (at {inner})" if inner else "")
                if i is None or i < len(patients):
                    self._refuse_group(g, entries, active, first_support, e.message if i is None else reason, i)
                    return g
                where = entries[i][1]
                g.refusals.append((where[0], where[1], "refused", where[2], reason))
                active.remove(i)
                continue
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:  # the importer choked
                self._refuse_group(g, entries, active, first_support, f"could not be read: {e}", None)
                return g
            for text in result.skipped:
                m = _SKIPPED.match(text)
                if m and int(m.group(1)) < len(active):
                    where = entries[active[int(m.group(1))]][1]
                    if where is not None:
                        g.refusals.append((where[0], where[1], "skipped", where[2], m.group(2)))
            g.records = list(result.records)
            if not g.records:
                self._refuse_group(g, entries, active, first_support, "no patient record could be made of it", None)
            return g
        return g

    def _refuse_group(self, g: _Group, entries, active, first_support: int, reason: str, culprit: int | None) -> None:
        g.records = []
        culprit_where = entries[culprit][1] if culprit is not None else None
        for i in active:
            where = entries[i][1]
            if where is None or i >= first_support:
                continue
            if i == culprit:
                g.refusals.append((where[0], where[1], "refused", where[2], reason))
            elif culprit_where is not None:
                g.refusals.append((where[0], where[1], "refused", where[2],
                                   f"its Patient ({culprit_where[0]} line {culprit_where[1]}) was refused"))
            else:
                g.refusals.append((where[0], where[1], "refused", where[2], f"the patient's record was refused: {reason}"))

    def _registered_patient(self, pkey: str) -> dict | None:
        """A Patient resource for a patient this source sent before (an incremental export's resources
        for a patient whose demographics did not change), with the demographics as stored."""
        with Session(self.engine) as s:
            row = s.exec(select(PatientRow).join(PatientSourceId, PatientSourceId.patient_id == PatientRow.id)
                         .where(PatientSourceId.source_system == self.source_system, PatientSourceId.source_id == pkey)).first()
        if row is None:
            return None
        return {"resourceType": "Patient", "id": pkey, "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": row.nhs_number}],
                "gender": row.sex, "birthDate": row.birth_date.isoformat()}

    def _store(self, chunk: list[_Group]) -> None:
        from engine import metrics

        c = self.claimed
        refused_nhs: dict[str, str] = {}
        retried: set[str] = set()
        for attempt in range(RETRIES + len(chunk)):
            groups = [g for g in chunk if g.records and not any(r.patient.nhs_number in refused_nhs for r in g.records)]
            records = [r for g in groups for r in g.records]
            refusals = [x for g in chunk for x in g.refusals]
            for g in chunk:
                reason = next((refused_nhs[r.patient.nhs_number] for r in g.records if r.patient.nhs_number in refused_nhs), None)
                if reason is not None:
                    done_lines = {(x[0], x[1]) for x in g.refusals}
                    refusals += [(n, ln, "refused", res, reason) for n, ln, res in g.lines if (n, ln) not in done_lines]
            loaded = 0
            for g in groups:
                own = {(n, ln) for n, ln, _ in g.lines}
                loaded += len(own) - len({(x[0], x[1]) for x in g.refusals if (x[0], x[1]) in own})
            last = chunk[-1].pkey

            def checkpoint(s: Session, summary: IngestSummary | None) -> None:
                table = BulkRunRow.__table__
                values = dict(checkpoint=last, patients_done=table.c.patients_done + len(chunk),
                              lines_loaded=table.c.lines_loaded + loaded, updated_at=utcnow())
                if summary is not None:
                    values.update(facts_added=table.c.facts_added + summary.added,
                                  facts_updated=table.c.facts_updated + summary.updated,
                                  facts_unchanged=table.c.facts_unchanged + summary.unchanged)
                n = s.execute(sa.update(table).where(table.c.id == c.run_id, table.c.owner == c.owner).values(**values)).rowcount
                if n != 1:
                    raise BulkBusy(f"run {c.run_id} was taken over by another process; stopping")
                self._refusals(s, refusals)

            try:
                with Session(self.engine) as s:
                    if records:
                        summary = ingest_records(s, records, source=f"{self.source_system}:bulk:{c.run_id}"[:200],
                                                 before_commit=checkpoint)
                    else:
                        summary = None
                        checkpoint(s, None)
                        s.commit()
            except IngestError as e:
                if e.nhs_number is None:
                    raise
                if isinstance(e.__cause__, DBAPIError) and e.nhs_number not in retried:
                    retried.add(e.nhs_number)  # perhaps a race with a concurrent delivery: once more
                    time.sleep(0.05)
                    continue
                refused_nhs[e.nhs_number] = str(e)
                continue
            except OperationalError:
                if attempt >= RETRIES - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
                continue
            metrics.BULK_LINES.labels("loaded").inc(loaded)
            for outcome in ("refused", "skipped"):
                metrics.BULK_LINES.labels(outcome).inc(sum(1 for x in refusals if x[2] == outcome))
            if summary is not None:
                metrics.INGEST_RECORDS.labels("bulk", "accepted").inc(len(summary.patients))
                for change in ("added", "updated", "unchanged"):
                    metrics.INGEST_FACTS.labels(change).inc(getattr(summary, change))
            metrics.INGEST_RECORDS.labels("bulk", "refused").inc(sum(1 for g in chunk if g not in groups))
            if summary is not None and self.on_chunk is not None:
                self.on_chunk(summary)
            return
        raise BulkError("a chunk could not be stored after several attempts")

    def _refusals(self, s: Session, refusals: list[tuple]) -> None:
        if not refusals:
            return
        table = BulkRefusalRow.__table__
        insert = pg_insert if is_postgresql(s) else sqlite_insert
        seen: dict[tuple, dict] = {}
        for n, ln, o, r, reason in refusals:
            seen.setdefault((n, ln), dict(run_id=self.claimed.run_id, file=n[:255], line=ln, outcome=o, resource=r,
                                          reason=str(reason)[:4000]))
        rows = list(seen.values())
        for i in range(0, len(rows), 500):
            s.execute(insert(table).values(rows[i:i + 500]).on_conflict_do_nothing(index_elements=["run_id", "file", "line"]))

    def _finish(self, c: Claim, status: str, error: str | None = None) -> None:
        try:
            with Session(self.engine) as s:
                table = BulkRunRow.__table__
                now = utcnow()
                s.execute(sa.update(table).where(table.c.id == c.run_id, table.c.owner == c.owner)
                          .values(status=status, error=error, updated_at=now, finished_at=now if status == "done" else None))
                s.commit()
        except DBAPIError:
            log.exception("bulk load %s: could not record its end (%s)", c.run_id, status)


def load_ndjson(engine: Engine, folder_or_files: Path | list[Path], **kw) -> dict:
    """Load a folder of NDJSON files (or the files given); keyword arguments as `BulkLoad`."""
    paths = ndjson_files(folder_or_files) if isinstance(folder_or_files, (str, Path)) else list(folder_or_files)
    return BulkLoad(engine, describe_files(paths), **kw).run()


# ---- the report -----------------------------------------------------------------------------------------------
def run_report(engine: Engine, run_id: int, *, limit: int | None = REPORT_LIMIT, offset: int = 0) -> dict:
    """A run as a dict: status (`interrupted` when it is marked running but its process is gone),
    counts, per file its lines and the refused / skipped ones (file, line, resource, reason)."""
    with Session(engine) as s:
        row = s.get(BulkRunRow, run_id)
        if row is None:
            raise KeyError(run_id)
        counts = dict(s.execute(sa.select(BulkRefusalRow.outcome, sa.func.count()).where(BulkRefusalRow.run_id == run_id)
                                .group_by(BulkRefusalRow.outcome)).all())
        per_file = {}
        for name, outcome, n in s.execute(sa.select(BulkRefusalRow.file, BulkRefusalRow.outcome, sa.func.count())
                                          .where(BulkRefusalRow.run_id == run_id)
                                          .group_by(BulkRefusalRow.file, BulkRefusalRow.outcome)).all():
            per_file.setdefault(name, {})[outcome] = n
        q = (select(BulkRefusalRow).where(BulkRefusalRow.run_id == run_id)
             .order_by(BulkRefusalRow.file, BulkRefusalRow.line).offset(offset))
        if limit is not None:
            q = q.limit(limit)
        shown = list(s.exec(q))
    status = row.status
    if status == "running" and not owner_alive(row.owner, row.updated_at):
        # The loader writes its final status before it lets go of the run: read the row again, or a run
        # that finished while this report was being read would be called interrupted.
        with Session(engine) as s:
            row = s.get(BulkRunRow, run_id)
        status = "interrupted" if row.status == "running" else row.status
    files = []
    for f in row.files or []:
        got = per_file.get(f["name"], {})
        files.append(dict(name=f["name"], size=f.get("size", 0), lines=f.get("lines", 0), unsupported=f.get("unsupported", 0),
                          supporting=f.get("supporting", 0), refused=got.get("refused", 0), skipped=got.get("skipped", 0),
                          refusals=[dict(line=r.line, outcome=r.outcome, resource=r.resource, reason=r.reason)
                                    for r in shown if r.file == f["name"]]))
    return dict(id=row.id, status=status, source_system=row.source_system, created_by=row.created_by,
                patients_total=row.patients_total, patients_done=row.patients_done, lines_total=row.lines_total,
                lines_loaded=row.lines_loaded, lines_refused=counts.get("refused", 0), lines_skipped=counts.get("skipped", 0),
                lines_unsupported=sum(f["unsupported"] for f in files), lines_supporting=sum(f["supporting"] for f in files),
                facts_added=row.facts_added, facts_updated=row.facts_updated, facts_unchanged=row.facts_unchanged,
                resumed=row.resumed, checkpoint=row.checkpoint, started_at=row.started_at, updated_at=row.updated_at,
                finished_at=row.finished_at, error=row.error, files=files,
                refusals_shown=len(shown), refusals_total=sum(counts.values()))
