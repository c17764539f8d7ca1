"""`POST /ingest/bulk` and `GET /ingest/bulk/{run_id}`: FHIR Bulk Data NDJSON files through the API
(engine/registry/bulk.py does the work, as for `carepath ingest --ndjson`).

The files come as `multipart/form-data` (field `files`, one part per file, named as a `$export` names
them: `Patient.ndjson`, `Condition.ndjson` ...; Starlette spools parts to disk, so memory stays flat),
up to CAREPATH_MAX_BULK_BYTES (default 1 GiB) per request. They are copied to a folder of the run
(under CAREPATH_BULK_DIR, default the system's temporary folder), the run is claimed in the request
(409 while a live process loads the same files; the same files after a finished run: 200 and that
run, nothing loaded unless `force=true`), and loaded in a worker thread of the service, one run at
a time; the answer is 202 with the run. `GET /ingest/bulk/{id}` shows its progress, then per file
the refused and skipped lines (line number, resource, reason). Each stored chunk kicks the
background evaluation drain (only patients whose facts changed are marked) and is written to the
access log with its patients. A run interrupted by a restart shows `interrupted`: sending the same
files again resumes it after its last stored patient. Admin only (`ingest:bulk`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from api.state import AppState
from api.deps import Principal, get_state, log_access, require
from api.responses import API_ERRORS, errors
from api.schemas import Instant
from engine.registry.bulk import BulkBusy, BulkError, BulkInterrupted, BulkLoad, claim, describe_files, release, run_report
from engine.registry.bulk_sources import manifest_targets

log = logging.getLogger("carepath.api")
router = APIRouter(prefix="/ingest", tags=["ingest"], responses=API_ERRORS)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.ndjson(\.gz)?$")  # gzipped: engine/registry/bulk_sources.py
MAX_FILES = 200


class RefusalOut(BaseModel):
    line: int
    outcome: str = Field(description="refused (not loaded: invalid, or its patient refused) or skipped "
                                     "(a supported resource with nothing usable)")
    resource: str | None = Field(None, description="Type/id of the line's resource, when it has one")
    reason: str


class BulkFileOut(BaseModel):
    name: str
    size: int
    lines: int
    refused: int
    skipped: int
    unsupported: int = Field(description="lines of resource types carepath does not import")
    supporting: int = Field(description="Medication / Organization / Device lines, used through references")
    refusals: list[RefusalOut]


class BulkRunOut(BaseModel):
    id: int
    state: str | None = Field(None, description="in the answer to POST: new, resumed or already-loaded")
    status: str = Field(description="running, done, failed, or interrupted (its process is gone: send the files again "
                                    "to resume)")
    source_system: str
    created_by: str | None = None
    patients_total: int
    patients_done: int
    lines_total: int
    lines_loaded: int
    lines_refused: int
    lines_skipped: int
    lines_unsupported: int
    lines_supporting: int
    facts_added: int
    facts_updated: int
    facts_unchanged: int
    resumed: int
    started_at: Instant
    updated_at: Instant
    finished_at: Instant | None = None
    error: str | None = None
    files: list[BulkFileOut]
    refusals_shown: int
    refusals_total: int
    url: str


def _out(report: dict, state: str | None = None) -> BulkRunOut:
    fields = {k: v for k, v in report.items() if k in BulkRunOut.model_fields}
    return BulkRunOut(**(fields | {"state": state or report.get("state"), "url": f"/ingest/bulk/{report['id']}"}))


class BulkRunner:
    """The service's bulk loads: one worker thread at a time; `stop()` at shutdown interrupts the
    running load between patients (it stays resumable)."""

    def __init__(self, state: AppState):
        self.state = state
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, load: BulkLoad, folder: Path | None, who: Principal) -> None:
        """Load in a worker thread; `folder` (the uploaded copies) is removed at the end."""
        def on_line(_n: int) -> None:
            if self._stop.is_set():
                raise BulkInterrupted()

        def on_chunk(summary) -> None:
            from api.routers.ingest import drainer

            log_access(self.state, None, who, "write", "ingest-bulk", patients=summary.patients.keys(),
                       detail={"run": load.claimed.run_id, "batch": summary.batch_id, "facts_added": summary.added,
                               "facts_updated": summary.updated, "queued": len(summary.queued)})
            if summary.queued:
                drainer(self.state).kick()

        load.on_line, load.on_chunk = on_line, on_chunk

        def work() -> None:
            try:
                with self._lock:
                    if self._stop.is_set():
                        return
                    load.run()
            except BulkInterrupted:
                log.info("bulk run %s interrupted by the shutdown; send the files again to resume", load.claimed.run_id)
            except Exception:  # noqa: BLE001 - recorded on the run (status failed, error)
                log.exception("bulk run %s failed", load.claimed.run_id)
            finally:
                release(load.claimed)
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)

        t = threading.Thread(target=work, name=f"carepath-bulk-{load.claimed.run_id}", daemon=True)
        self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(timeout)


def runner(state: AppState) -> BulkRunner:
    got = getattr(state, "bulk_runner", None)
    if got is None:
        got = state.bulk_runner = BulkRunner(state)
    return got


def _refuse(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def _claim_and_start(request: Request, response: Response, state: AppState, who: Principal, described: list,
                     source_system: str, force: bool, folder: Path | None, base: str | None, **detail) -> BulkRunOut:
    """Claim the run of these files (409 while a live process loads them; a finished run: 200 and that run)
    and start loading it in the background (202). Raises BulkError for files that cannot be loaded."""
    try:
        c = claim(state.engines.write, described, source_system, force=force, created_by=who.username)
    except BulkBusy as e:
        raise HTTPException(status_code=409, detail=str(e)) from None
    log_access(state, request, who, "write", "ingest-bulk",
               detail={"run": c.run_id, "state": c.state, "files": [f.name for f in described], **detail})
    if c.state == "already-loaded":
        response.status_code = 200
        return _out(run_report(state.engines.read, c.run_id), c.state)
    load = BulkLoad(state.engines.write, described, source_system=source_system, created_by=who.username, claimed=c,
                    work_dir=Path(base) if base else None)
    try:
        runner(state).start(load, folder, who)
    except BaseException:
        release(c)
        raise
    response.headers["Location"] = f"/ingest/bulk/{c.run_id}"
    return _out(run_report(state.engines.read, c.run_id), c.state)


@router.post("/bulk", response_model=BulkRunOut, status_code=202, responses={
    200: {"model": BulkRunOut, "description": "These files were loaded by a finished run: that run (nothing loaded again "
                                              "unless force=true)"},
    **errors(409, 422, **{"409": "A live process is loading these files now",
                          "422": "No files, a file not named *.ndjson / *.ndjson.gz, or two files with one name"})})
def bulk_ingest(request: Request, response: Response,
                files: list[UploadFile] = File(..., description="NDJSON files as a FHIR Bulk Data $export writes them "
                                                                "(Patient.ndjson, Condition.ndjson ...)"),
                source_system: str = Query("fhir", pattern=r"^[A-Za-z0-9._:-]{1,100}$",
                                           description="The feed the files come from (part of each fact's identity)"),
                force: bool = Query(False, description="Load files again that a finished run loaded"),
                who: Principal = Depends(require("ingest:bulk")), state: AppState = Depends(get_state)):
    """Load FHIR Bulk Data NDJSON files in the background: 202 with the run; follow it with
    GET /ingest/bulk/{id}. Bad lines are refused and reported (file, line, reason) while the rest
    loads; the same files again are already loaded (200), or resumed if their run was interrupted."""
    if not files or len(files) > MAX_FILES:
        raise _refuse(f"send 1 to {MAX_FILES} NDJSON files (field `files`)")
    names = [Path(f.filename or "").name for f in files]
    for n in names:
        if not NAME.match(n):
            raise _refuse(f"file name {n[:100]!r}: expected a name like Patient.ndjson (letters, digits, . _ -; ending .ndjson or .ndjson.gz)")
    if len(set(names)) != len(names):
        raise _refuse("two files with the same name")
    base = os.environ.get("CAREPATH_BULK_DIR") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="carepath-bulk-upload-", dir=base))
    started = False
    try:
        paths = []
        for name, upload in zip(names, files):
            path = folder / name
            with open(path, "wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)
            paths.append(path)
        out = _claim_and_start(request, response, state, who, describe_files(paths), source_system, force, folder, base)
        started = out.state != "already-loaded"
        return out
    except BulkError as e:
        raise _refuse(str(e)) from None
    finally:
        if not started:
            shutil.rmtree(folder, ignore_errors=True)


MANIFEST_TYPES = ("application/json", "application/fhir+json")


@router.post("/bulk/manifest", response_model=BulkRunOut, status_code=202, responses={
    200: {"model": BulkRunOut, "description": "The manifest's files were loaded by a finished run: that run (nothing "
                                              "loaded again unless force=true)"},
    **errors(409, 415, 422, **{
        "409": "A live process is loading these files now, or this service reads no $export files "
               "(CAREPATH_BULK_IMPORT_DIR is not set)",
        "415": "Not a JSON body",
        "422": "Not a $export manifest, or an output the service may not read (a web URL, a file outside "
               "CAREPATH_BULK_IMPORT_DIR, no such file, not *.ndjson / *.ndjson.gz, two files with one name)"})},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["output"], "description": "A FHIR Bulk Data $export completion manifest",
        "properties": {"transactionTime": {"type": "string"}, "request": {"type": "string"},
                       "requiresAccessToken": {"type": "boolean"},
                       "output": {"type": "array", "items": {"type": "object", "required": ["type", "url"], "properties": {
                           "type": {"type": "string"}, "url": {"type": "string"}}}},
                       "error": {"type": "array", "items": {"type": "object"}}}}}}}})
async def bulk_ingest_manifest(request: Request, response: Response,
                               source_system: str = Query("fhir", pattern=r"^[A-Za-z0-9._:-]{1,100}$",
                                                          description="The feed the files come from (part of each "
                                                                      "fact's identity)"),
                               force: bool = Query(False, description="Load files again that a finished run loaded"),
                               who: Principal = Depends(require("ingest:bulk")),
                               state: AppState = Depends(get_state)):
    """Load the NDJSON files a FHIR Bulk Data `$export` manifest names (`output: [{type, url}]`) in the
    background, as POST /ingest/bulk does with uploaded files: 202 with the run, GET /ingest/bulk/{id} for
    its progress and refused lines. The service fetches nothing: each `url` must be a `file://` URL (or a
    path relative to that folder) of a file inside CAREPATH_BULK_IMPORT_DIR; anything else is refused."""
    root = os.environ.get("CAREPATH_BULK_IMPORT_DIR") or None
    if root is None:
        raise HTTPException(status_code=409, detail="this service reads no $export files: set CAREPATH_BULK_IMPORT_DIR "
                                                    "to the folder the exports are written to, or send the files to "
                                                    "POST /ingest/bulk")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in MANIFEST_TYPES:
        raise HTTPException(status_code=415, detail="send the $export manifest as application/json")
    body = await request.body()  # the login was checked and the size capped before this (api/limits.py)
    try:
        data = json.loads(body)
    except ValueError as e:
        raise _refuse(f"not a JSON $export manifest ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("output"), list) and len(data["output"]) > MAX_FILES:
        raise _refuse(f"a manifest may name at most {MAX_FILES} files")
    base = os.environ.get("CAREPATH_BULK_DIR") or None

    def work() -> BulkRunOut:
        try:
            paths = manifest_targets(data, "manifest", Path(root), BulkError, within=Path(root))
            if base:
                Path(base).mkdir(parents=True, exist_ok=True)
            return _claim_and_start(request, response, state, who, describe_files(paths), source_system, force, None,
                                    base, manifest=True)
        except BulkError as e:
            raise _refuse(str(e)) from None

    return await run_in_threadpool(work)


@router.get("/bulk/{run_id}", response_model=BulkRunOut, responses=errors(404, **{"404": "No such bulk run"}))
def bulk_run(request: Request, run_id: int = PathParam(..., ge=1, le=2**31 - 1),
             limit: int = Query(1000, ge=0, le=10000, description="refused / skipped lines shown, in file and line order"),
             offset: int = Query(0, ge=0, le=2**31 - 1),
             who: Principal = Depends(require("ingest:bulk")), state: AppState = Depends(get_state)) -> Any:
    """A bulk run: status, patients done of total, line counts, and per file the refused and skipped
    lines (line number, resource, reason)."""
    try:
        report = run_report(state.engines.read, run_id, limit=limit, offset=offset)
    except KeyError:
        raise HTTPException(status_code=404, detail=f"no bulk run {run_id}") from None
    log_access(state, request, who, "read", "ingest-bulk", detail={"run": run_id})
    return _out(report)
