"""Ingest: FHIR R4 Bundles and carepath record batches -> registry -> re-evaluation of the
patients whose records changed (engine.app.service), returning what changed.

Bad input is refused with 422 and a JSON pointer to the offending entry before anything is
stored; the registry's ingest is one transaction, so nothing of a refused delivery is kept. The
same delivery twice adds no facts, re-evaluates nobody and so opens no tasks.

Evaluation goes through the outbox (engine/registry/pending.py): the facts and the patients' marks
are stored in one transaction; then up to INLINE_LIMIT marked patients of the delivery are
evaluated in the request, more are left to the background drain (`Drainer`, also run at service
start), and the response says who is `evaluated` and who is `pending`. A repeated delivery
evaluates whoever of it is still marked (or was never evaluated). One patient's failed evaluation
is a data problem of that patient (`data_problems`), never an error for the delivery.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, select

from api.state import AppState
from api.deps import Principal, get_state, log_access, require
from api.responses import API_ERRORS, errors
from api.schemas import DataProblemOut, DiffOut, IngestOut, PatientChangeOut, RecordsIn
from api.security import ADMIN
from engine import metrics
from engine.app.service import DrainResult, Drainer, drain
from engine.records.fhir.bundle import BundleError, import_bundle
from engine.records.model import PatientRecord
from engine.registry.ingest import IngestError, IngestSummary, content_hash_of, ingest_records
from engine.registry.tables import PatientRow

router = APIRouter(prefix="/ingest", tags=["ingest"], responses=API_ERRORS)
log = logging.getLogger("carepath.api")
RETRIES = 6
# Deliveries with more marked patients than this are evaluated in the background (the response
# lists them as pending); fewer are evaluated before the response.
INLINE_LIMIT = int(os.environ.get("CAREPATH_INLINE_EVALUATION_LIMIT", "50"))
_drainer_lock = threading.Lock()
BAD = errors(**{"422": "Invalid input: JSON pointer to the offending part; nothing stored",
                "403": "Your role may not ingest, or a record for a patient outside your scope"})


def _refuse(pointer: str, message: str, status: int = 422) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message, "errors": [{"pointer": pointer, "message": message}]})


def _check_scope(state: AppState, request: Request, who: Principal, records: list[PatientRecord], base: str) -> JSONResponse | None:
    if who.role == ADMIN:
        return None  # the integration / admin account loads any patient
    with Session(state.engines.read) as s:
        for i, rec in enumerate(records):
            p = rec.patient
            existing = s.exec(select(PatientRow).where(PatientRow.nhs_number == p.nhs_number)).first()
            ok = who.scope.allows_values(p.mdt, p.practice, p.locality) and (existing is None or who.scope.allows(existing))
            if not ok:
                log_access(state, request, who, "denied", "ingest", patients=[p.nhs_number], status=403,
                           detail={"reason": "patient outside the user's scope"})
                return _refuse(f"{base}/{i}" if base else "", f"patient {p.nhs_number} is outside your MDT / practice / locality; "
                               "nothing stored", 403)
    return None


def _store(state: AppState, records: list[PatientRecord], source: str, content_hash: str,
           unsupported: dict | None, skipped: list | None) -> IngestSummary:
    for attempt in range(RETRIES):
        try:
            with Session(state.engines.write) as s:
                return ingest_records(s, records, source=source, content_hash=content_hash, unsupported=unsupported,
                                      skipped=skipped)
        except IngestError as e:
            # A unique-key race with a concurrent delivery for the same patient: the whole delivery
            # was rolled back, so simply run it again (it then sees the other one's rows).
            if isinstance(e.__cause__, DBAPIError) and attempt < RETRIES - 1:
                time.sleep(0.02 * (attempt + 1))
                continue
            raise
        except OperationalError:
            if attempt < RETRIES - 1:
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
    raise AssertionError("unreachable")


def drainer(state: AppState) -> Drainer:
    """The service's background drain (made by the app's lifespan; made here when there was none)."""
    if state.drainer is None:
        with _drainer_lock:
            if state.drainer is None:
                state.drainer = Drainer(state.engines.write, lambda: state.library, state.now, state.engines.read)
    return state.drainer


def _evaluate(state: AppState, summary: IngestSummary) -> DrainResult:
    """Evaluate the delivery's marked patients now, or leave them to the background drain. Which of
    them are marked the ingest said (`summary.marked`: read and written in its transaction), so the
    outbox is not listed again; one evaluated meanwhile by the background drain is evaluated again
    (the same outputs; its `settle` finds no mark to clear)."""
    listed = list(summary.marked.items())
    marked = [nhs for nhs, _ in listed]
    if len(marked) > INLINE_LIMIT:
        drainer(state).kick()
        return DrainResult(pending=set(marked))
    result = drain(state.engines.write, state.library, state.now, nhs_numbers=marked, read_engine=state.engines.read,
                   listed=listed)
    if result.pending:
        drainer(state).kick()
    return result


def _run(state: AppState, request: Request, who: Principal, records: list[PatientRecord], source: str,
         content_hash: str, base: str, unsupported=None, skipped=None, warnings=(), way: str = "records") -> IngestOut | JSONResponse:
    refused = _check_scope(state, request, who, records, base)
    if refused is not None:
        metrics.count_ingest(way, refused_records=len(records))
        return refused
    try:
        summary = _store(state, records, source, content_hash, unsupported, skipped)
    except IngestError as e:
        metrics.count_ingest(way, refused_records=len(records))
        idx = next((i for i, r in enumerate(records) if r.patient.nhs_number == e.nhs_number), None)
        return _refuse(f"{base}/{idx}" if base and idx is not None else "", f"{e}; nothing stored")
    metrics.count_ingest(way, summary)
    result = _evaluate(state, summary)
    log_access(state, request, who, "write", "ingest", patients=summary.patients.keys(),
               detail={"batch": summary.batch_id, "facts_added": summary.added, "facts_updated": summary.updated,
                       "evaluated": len(result.evaluated), "pending": len(result.pending), "data_problems": len(result.problems)})

    def status(nhs: str) -> str:
        if nhs in result.evaluated:
            return "evaluated"
        if nhs in result.problems:
            return "data-problem"
        return "pending" if nhs in result.pending else "up-to-date"

    return IngestOut(
        batch_id=summary.batch_id, source=summary.source, duplicate_of_batch=summary.duplicate_of,
        patients=[PatientChangeOut(nhs_number=c.nhs_number, created=c.created, demographics_changed=c.demographics_changed,
                                   added=c.added, updated=c.updated, unchanged=c.unchanged,
                                   reevaluated=c.nhs_number in result.evaluated, evaluation=status(c.nhs_number))
                  for c in summary.patients.values()],
        facts_added=summary.added, facts_updated=summary.updated, facts_unchanged=summary.unchanged,
        unsupported=dict(unsupported or {}), skipped=list(skipped or []), warnings=[*warnings, *summary.warnings],
        changes=[DiffOut(**result.evaluated[n].as_dict()) for n in sorted(result.evaluated)],
        evaluated=sorted(result.evaluated), pending=sorted(result.pending),
        data_problems=[DataProblemOut(**result.problems[n].as_dict()) for n in sorted(result.problems)])


@router.post("/fhir", response_model=IngestOut, responses=BAD)
def ingest_fhir(request: Request, bundle: dict[str, Any] = Body(..., description="A FHIR R4 Bundle (transaction, batch, collection ...)"),
                source_system: str = Query("fhir", pattern=r"^[A-Za-z0-9._:-]{1,100}$",
                                           description="The feed the bundle comes from (part of each fact's identity)"),
                who: Principal = Depends(require("ingest")), state: AppState = Depends(get_state)):
    """Store a FHIR R4 Bundle and re-evaluate the patients whose records changed."""
    try:
        result = import_bundle(bundle, source_system=source_system)
    except BundleError as e:
        metrics.count_ingest("fhir")
        return _refuse(e.pointer, f"{e.message}; nothing stored")
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:  # the importer choked on odd input
        log.warning("bundle import failed: %r", e)
        metrics.count_ingest("fhir")
        return _refuse("", f"the bundle could not be read: {e}; nothing stored")
    if not result.records:
        metrics.count_ingest("fhir")
        return _refuse("/entry", "the bundle holds no Patient carepath can use; nothing stored")
    return _run(state, request, who, result.records, f"{source_system}:api", content_hash_of(bundle), "",
                result.unsupported, result.skipped, result.warnings, way="fhir")


@router.post("/records", response_model=IngestOut, responses=BAD)
def ingest_batch(body: RecordsIn, request: Request, who: Principal = Depends(require("ingest")),
                 state: AppState = Depends(get_state)):
    """Store a batch of carepath records (`engine.records.model.PatientRecord`) and re-evaluate."""
    seen: dict[str, int] = {}
    for i, rec in enumerate(body.records):
        if rec.patient.nhs_number in seen:
            metrics.count_ingest("records", refused_records=len(body.records))
            return _refuse(f"/records/{i}/patient/nhs_number",
                           f"NHS number {rec.patient.nhs_number} also at /records/{seen[rec.patient.nhs_number]}: "
                           "send one record per patient; nothing stored")
        seen[rec.patient.nhs_number] = i
    return _run(state, request, who, body.records, body.source, content_hash_of(body.model_dump(mode="json")), "/records")
