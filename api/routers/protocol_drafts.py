"""Two-person publish (engine/app/approvals.py): the author submits a protocol version for approval; a
second clinical lead, not the author, approves it, which publishes it. Refusals say why and are logged.

Its own router, included before `api.routers.protocols`, so `/protocols/drafts` is not read as a protocol id.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session

from api.deps import Principal, get_state, log_access, require
from api.responses import API_ERRORS, errors
from api.routers.protocols import INVALID_PROTOCOL, _validation, publish_text
from api.schemas import DraftOut, PublishOut, YamlIn
from api.state import AppState
from engine.app import approvals
from engine.app.protocol_store import _peek_id, check, pending_file, target_dir
from engine.registry.access import ProtocolDraftRow

router = APIRouter(prefix="/protocols/drafts", tags=["protocols"], responses=API_ERRORS)
DRAFT_ID = Path(..., ge=1, le=2**31 - 1)


def draft_out(d: ProtocolDraftRow, warnings=()) -> DraftOut:
    return DraftOut(id=d.id, protocol=d.protocol, version=d.version, status=d.status, submitted_by=d.submitted_by,
                    submitted_at=d.submitted_at, note=d.note, decided_by=d.decided_by, decided_at=d.decided_at,
                    warnings=list(warnings))


@router.post("", response_model=DraftOut, status_code=201,
             responses={**INVALID_PROTOCOL, **errors(**{"409": "That version is already awaiting approval"})})
def submit_draft(body: YamlIn, request: Request, who: Principal = Depends(require("protocol:publish")),
                 state: AppState = Depends(get_state)):
    """Submit a new protocol version for approval: checked as publishing would (422 with the problems);
    nothing is published until a second clinical lead approves it."""
    lib = state.protocols.reload()
    with pending_file(target_dir(lib, state.protocols_dir, _peek_id(body.yaml)), body.yaml) as pending:
        proto, problems = check(lib, pending)
        v = _validation(proto, problems, pending)
    if not v.valid:
        log_access(state, request, who, "write", "protocol-draft", status=422,
                   detail={"refused": v.protocol, "version": v.version})
        return JSONResponse(status_code=422, content=v.model_dump(mode="json"))
    with Session(state.engines.write) as s:
        try:
            row = approvals.submit(s, protocol=proto.id, version=proto.version, content_hash=proto.content_hash,
                                   yaml=body.yaml, note=body.note, author=who.username, now=state.now())
        except approvals.ApprovalError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None
        log_access(state, request, who, "write", "protocol-draft", session=s,
                   detail={"submitted": proto.key, "draft": row.id})
        s.commit()
        s.refresh(row)
        return draft_out(row, [p for p in v.problems if p.severity == "warning"])


@router.get("", response_model=list[DraftOut])
def list_drafts(who: Principal = Depends(require("protocol:publish")), state: AppState = Depends(get_state)):
    """Versions awaiting a second clinical lead's approval, oldest first."""
    with Session(state.engines.read) as s:
        return [draft_out(d) for d in approvals.awaiting(s)]


@router.post("/{draft_id}/approve", response_model=PublishOut, status_code=201,
             responses={**INVALID_PROTOCOL, **errors(**{"403": "The author cannot approve their own version",
                                                         "404": "No such draft",
                                                         "409": "Not awaiting approval, or published meanwhile"})})
def approve_draft(request: Request, draft_id: int = DRAFT_ID, who: Principal = Depends(require("protocol:publish")),
                  state: AppState = Depends(get_state)):
    """Approve a draft as the second person: it is published (the author as published_by, you as
    approved_by). The author cannot approve their own version (403, logged)."""
    with Session(state.engines.read) as s:
        d = s.get(ProtocolDraftRow, draft_id)
        if d is None:
            raise HTTPException(status_code=404, detail=f"no protocol draft {draft_id}")
        if d.status != approvals.AWAITING:
            raise HTTPException(status_code=409, detail=f"draft {draft_id} is {d.status.replace('-', ' ')}, not awaiting approval")
        author, yaml, note = d.submitted_by, d.yaml, d.note
    if problem := approvals.approval_problem(author, who.username):
        log_access(state, request, who, "denied", "protocol-approve", status=403,
                   detail={"draft": draft_id, "protocol": f"{d.protocol}@{d.version}", "reason": problem})
        raise HTTPException(status_code=403, detail=problem)
    out = publish_text(request, state, yaml, note, author=author, approver=who)
    if isinstance(out, PublishOut):
        with Session(state.engines.write) as s:
            d = s.get(ProtocolDraftRow, draft_id)
            d.status, d.decided_by, d.decided_at = approvals.PUBLISHED, who.username, out.published_at
            s.add(d)
            s.commit()
    return out
