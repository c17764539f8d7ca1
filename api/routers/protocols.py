"""Protocols: list, view, source, version history, validate, impact preview; publishing (after a second
person approves: api/routers/protocol_drafts.py)."""
from __future__ import annotations

from pathlib import Path as PPath

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from api.state import AppState
from api.deps import Principal, get_state, log_access, require
from engine.app import impact_runs
from engine.app.protocol_store import (check, example_patients, impact, pending_file, publish_file,
                                record_publication, target_dir, _peek_id, SUBMITTED)
from api.responses import API_ERRORS, errors
from api.schemas import (ErrorOut, ProblemOut, ImpactIn, ImpactOut, ImpactRunOut, ProtocolDetail, ProtocolSummary, PublishOut, SourceOut,
                         ValidationOut,
                         VersionOut, YamlIn)
from engine.language.library import version_key
from engine.language.model import Protocol
from engine.registry.access import ProtocolPublicationRow
from engine.registry.ingest import iter_records
from engine.registry.tables import PatientRow
from engine.language.errors import Location, Problem


def problem_out(p: Problem, pending: str | None = None) -> ProblemOut:
    """A protocol problem as the API returns it; a pending upload's temporary path reads `<submitted>`."""
    file = SUBMITTED if pending and p.location.file == pending else p.location.file
    q = Problem(Location(file, p.location.line, p.location.column), p.message, p.expected, p.suggestion, p.severity)
    return ProblemOut(file=file, line=q.location.line, column=q.location.column, severity=q.severity, message=q.message,
                      expected=q.expected, suggestion=q.suggestion, text=str(q))

router = APIRouter(prefix="/protocols", tags=["protocols"], responses=API_ERRORS)
PID = Path(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION = Query(None, pattern=r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")
NOT_FOUND = errors(**{"404": "No such protocol or version"})
# 422: the validator's problems (ValidationOut, nothing stored or published), or a request body that
# is not valid at all (ErrorOut, from request validation).
INVALID_PROTOCOL = {422: {"model": ValidationOut | ErrorOut,
                          "description": "Invalid protocol: the validator's problems, nothing published (or an invalid request)"}}


def _versions(state: AppState, pid: str) -> list[Protocol]:
    found = sorted((p for p in state.library.protocols if p.id == pid), key=lambda p: version_key(p.version))
    if not found:
        raise HTTPException(status_code=404, detail=f"no protocol {pid!r}")
    return found


def _in_force_key(state: AppState, pid: str) -> str | None:
    p = next((p for p in state.library.in_force(state.now().date()) if p.id == pid), None)
    return p.key if p else None


def _rel(state: AppState, path: str) -> str:
    try:
        return str(PPath(path).resolve().relative_to(state.protocols_dir.resolve()))
    except ValueError:
        return path


@router.get("", response_model=list[ProtocolSummary])
def list_protocols(who: Principal = Depends(require("protocol:read")), state: AppState = Depends(get_state)):
    lib = state.library
    today = state.now().date()
    in_force = {p.id: p.version for p in lib.in_force(today)}
    out = []
    for pid in sorted({p.id for p in lib.protocols}):
        vs = sorted((p for p in lib.protocols if p.id == pid), key=lambda p: version_key(p.version))
        cur = next((p for p in vs if p.version == in_force.get(pid)), vs[-1])
        out.append(ProtocolSummary(id=pid, title=cur.title, in_force_version=in_force.get(pid), latest_version=vs[-1].version,
                                   versions=[p.version for p in vs], status=cur.status, owner=cur.owner))
    return out


def _detail(state: AppState, p: Protocol) -> ProtocolDetail:
    def dur(d):
        return str(d) if d is not None else None

    rules = []
    for r in p.rules:
        rules.append({"id": r.id, "title": r.title, "because": r.because, "evidence": r.evidence,
                      "task": {"title": r.task.title, "role": r.task.role, "priority": r.task.priority,
                               "within": dur(r.task.within)} if r.task else None,
                      "flag": {"code": r.flag.code, "level": r.flag.level, "text": r.flag.text} if r.flag else None,
                      "escalation": {"to": r.escalation.to, "title": r.escalation.title,
                                     "priority": r.escalation.priority} if r.escalation else None})
    return ProtocolDetail(
        id=p.id, version=p.version, title=p.title, status=p.status, effective=p.effective, owner=p.owner,
        evidence=list(p.evidence), description=p.description, file=_rel(state, p.source), content_hash=p.content_hash,
        in_force=_in_force_key(state, p.id) == p.key, valuesets=sorted(p.valuesets), definitions=sorted(p.definitions),
        activities=[{"id": a.id, "title": a.title, "every": dur(a.every), "role": a.role, "priority": a.priority,
                     "because": a.because, "patient_text": a.patient_text} for a in p.activities],
        goals=[{"id": g.id, "title": g.title, "because": g.because, "patient_text": g.patient_text} for g in p.goals],
        rules=rules, measures=[{"id": m.id, "title": m.title, "evidence": m.evidence} for m in p.measures])


@router.get("/{protocol_id}", response_model=ProtocolDetail, responses=NOT_FOUND)
def get_protocol(protocol_id: str = PID, version: str | None = VERSION, who: Principal = Depends(require("protocol:read")),
                 state: AppState = Depends(get_state)):
    """One version (default: the one in force today, else the latest)."""
    vs = _versions(state, protocol_id)
    if version:
        p = next((p for p in vs if p.version == version), None)
        if p is None:
            raise HTTPException(status_code=404, detail=f"{protocol_id} has no version {version}")
    else:
        key = _in_force_key(state, protocol_id)
        p = next((p for p in vs if p.key == key), vs[-1])
    return _detail(state, p)


@router.get("/{protocol_id}/source", response_model=SourceOut, responses=NOT_FOUND)
def get_source(protocol_id: str = PID, version: str | None = VERSION, who: Principal = Depends(require("protocol:read")),
               state: AppState = Depends(get_state)):
    """The YAML a clinical lead wrote (default: latest version)."""
    vs = _versions(state, protocol_id)
    p = next((p for p in vs if p.version == version), None) if version else vs[-1]
    if p is None:
        raise HTTPException(status_code=404, detail=f"{protocol_id} has no version {version}")
    return SourceOut(id=p.id, version=p.version, file=_rel(state, p.source), yaml=PPath(p.source).read_text(encoding="utf-8"))


@router.get("/{protocol_id}/versions", response_model=list[VersionOut], responses=NOT_FOUND)
def versions(protocol_id: str = PID, who: Principal = Depends(require("protocol:read")), state: AppState = Depends(get_state)):
    """Version history: every version on file, which is in force, who published it and when."""
    vs = _versions(state, protocol_id)
    with Session(state.engines.read) as s:
        pubs = {r.version: r for r in s.exec(select(ProtocolPublicationRow).where(ProtocolPublicationRow.protocol == protocol_id))}
    key = _in_force_key(state, protocol_id)
    return [VersionOut(version=p.version, status=p.status, effective=p.effective, file=_rel(state, p.source),
                       content_hash=p.content_hash, in_force=p.key == key,
                       published_by=pubs[p.version].published_by if p.version in pubs else None,
                       published_at=pubs[p.version].published_at if p.version in pubs else None,
                       note=pubs[p.version].note if p.version in pubs else None,
                       approved_by=pubs[p.version].approved_by if p.version in pubs else None) for p in reversed(vs)]


def _validation(proto, problems, pending) -> ValidationOut:
    errors = [p for p in problems if p.severity == "error"]
    return ValidationOut(valid=proto is not None and not errors, protocol=proto.id if proto else None,
                         version=proto.version if proto else None, title=proto.title if proto else None,
                         status=proto.status if proto else None,
                         problems=[problem_out(p, str(pending)) for p in problems])


@router.post("/validate", response_model=ValidationOut)
def validate(body: YamlIn, who: Principal = Depends(require("protocol:validate")), state: AppState = Depends(get_state)):
    """Check a protocol text as publishing would, without publishing: problems with line:column."""
    lib = state.library
    with pending_file(target_dir(lib, state.protocols_dir, _peek_id(body.yaml)), body.yaml) as pending:
        proto, problems = check(lib, pending)
        return _validation(proto, problems, pending)


SYNC_IMPACT_LIMIT = 2000  # patients: above this, POST /protocols/impact asks for a run instead


def _impact_draft(state: AppState, body: ImpactIn):
    """The submitted text checked as publishing would: (draft, None) or (None, the 422 response)."""
    lib = state.library
    with pending_file(target_dir(lib, state.protocols_dir, _peek_id(body.yaml)), body.yaml) as pending:
        proto, problems = check(lib, pending)
        v = _validation(proto, problems, pending)
    if not v.valid:
        return None, JSONResponse(status_code=422, content=v.model_dump(mode="json"))
    return proto, None


@router.post("/impact", response_model=ImpactOut,
             responses={**INVALID_PROTOCOL, **errors(**{"409": "The registry is too large to preview while you wait: "
                                                              "use POST /protocols/impact/runs"})})
def impact_preview(body: ImpactIn, request: Request, who: Principal = Depends(require("protocol:impact")),
                   state: AppState = Depends(get_state)):
    """What publishing this text would change, evaluated over the registry population as of a date,
    against the version in force then: patients entering / leaving the register, tasks, clinical flags
    and compliance flags added / removed (by role, provider and practice), care-plan and tier changes,
    measures, example patients and why. The same numbers as `carepath impact`. Nothing is stored.
    Synchronous, for small registries (up to SYNC_IMPACT_LIMIT patients); otherwise start a run."""
    lib = state.library
    as_of = body.as_of or state.now().date()
    proto, refused = _impact_draft(state, body)
    if refused is not None:
        return refused
    with Session(state.engines.read) as s:
        n = s.exec(select(func.count()).select_from(PatientRow)).one()
        if n > SYNC_IMPACT_LIMIT:
            raise HTTPException(status_code=409, detail=f"{n} patients: too many to preview while you wait; "
                                                        "start a run with POST /protocols/impact/runs")
        result = impact(lib, proto, iter_records(s), as_of)
    log_access(state, request, who, "read", "protocol-impact", patients=example_patients(result),
               detail={"protocol": proto.key, "patients": result["patients"]})
    return ImpactOut(**result)


def run_out(row) -> ImpactRunOut:
    return ImpactRunOut(id=row.id, status=row.status, protocol=row.protocol, from_version=row.from_version,
                        to_version=row.to_version, as_of=row.as_of, done=row.done, total=row.total,
                        created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
                        finished_at=row.finished_at, error=row.error,
                        result=ImpactOut(**row.result) if row.status == "done" and row.result else None,
                        url=f"/protocols/impact/runs/{row.id}")


@router.post("/impact/runs", response_model=ImpactRunOut, status_code=202, responses=INVALID_PROTOCOL)
def start_impact_run(body: ImpactIn, request: Request, response: Response,
                     who: Principal = Depends(require("protocol:impact")), state: AppState = Depends(get_state)):
    """Start the impact preview of this text in the background (any registry size): 202 at once with
    the run; follow it with GET /protocols/impact/runs/{id} (progress, then the result)."""
    as_of = body.as_of or state.now().date()
    proto, refused = _impact_draft(state, body)
    if refused is not None:
        return refused
    row = impact_runs.runner(state).start(who, state.library, proto, as_of, "text")
    log_access(state, request, who, "read", "protocol-impact-run", detail={"run": row.id, "protocol": proto.key,
                                                                           "started": True})
    response.headers["Location"] = f"/protocols/impact/runs/{row.id}"
    return run_out(row)


@router.get("/impact/runs/{run_id}", response_model=ImpactRunOut, responses=errors(**{"404": "No such run of yours"}))
def get_impact_run(request: Request, run_id: int = Path(..., ge=1, le=2**31 - 1),
                   who: Principal = Depends(require("protocol:impact")), state: AppState = Depends(get_state)):
    """A run: status (queued, running, done, failed, or interrupted by a restart: start it again), patients
    done of total, and when done the result (as POST /protocols/impact). Only its starter sees it;
    showing a result (its example patients) is logged like the preview itself."""
    row = impact_runs.get(state, who, run_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no impact run {run_id} of yours")
    if row.status == "done":
        log_access(state, request, who, "read", "protocol-impact", patients=example_patients(row.result or {}),
                   detail={"protocol": f"{row.protocol}@{row.to_version}", "patients": row.done, "run": row.id})
    return run_out(row)


def publish_text(request: Request, state: AppState, yaml: str, note: str | None, *, author: str,
                 approver: Principal) -> PublishOut | JSONResponse:
    """Publish a version whose second person has approved it: checked whole, then made visible in one
    step, or refused whole (422 with the validator's problems, 409 when published meanwhile). The author
    is recorded as published_by, the approver as approved_by (the row, published.lock, the access log)."""
    with state.publish_lock:
        lib = state.protocols.reload()
        with pending_file(target_dir(lib, state.protocols_dir, _peek_id(yaml)), yaml) as pending:
            proto, problems = check(lib, pending)
            v = _validation(proto, problems, pending)
            if not v.valid:
                log_access(state, request, approver, "write", "protocol", status=422,
                           detail={"refused": v.protocol, "version": v.version,
                                   "errors": sum(p.severity == "error" for p in v.problems)})
                return JSONResponse(status_code=422, content=v.model_dump(mode="json"))
            now = state.now()
            with Session(state.engines.write) as s:
                row = ProtocolPublicationRow(protocol=proto.id, version=proto.version, path="", content_hash=proto.content_hash,
                                             published_by=author, published_at=now, note=note, approved_by=approver.username)
                s.add(row)
                try:
                    s.flush()
                    target = publish_file(pending, proto)
                except (IntegrityError, FileExistsError):
                    s.rollback()
                    raise HTTPException(status_code=409, detail=f"{proto.id} {proto.version} was published meanwhile") from None
                undo_record = None
                try:
                    row.path = _rel(state, str(target))
                    s.add(row)
                    log_access(state, request, approver, "write", "protocol", session=s,
                               detail={"published": proto.key, "file": row.path, "author": author,
                                       "approved_by": approver.username})
                    undo_record = record_publication(target, proto, now.date(), author=author,
                                                     approved_by=approver.username)
                    s.commit()
                except Exception:
                    if undo_record is not None:
                        undo_record()
                    target.unlink(missing_ok=True)
                    raise
                published_file = row.path
        state.protocols.reload()
    key = _in_force_key(state, proto.id)
    return PublishOut(protocol=proto.id, version=proto.version, file=published_file, status=proto.status,
                      in_force=key == proto.key, published_by=author, published_at=now, approved_by=approver.username,
                      warnings=[p for p in v.problems if p.severity == "warning"])
