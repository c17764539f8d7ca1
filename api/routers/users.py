"""Users (admin) and the access log (admin, auditor)."""
from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import func
from sqlmodel import Session, select

from api.state import AppState
from api.deps import Principal, get_state, log_access, require
from api.routers.auth import user_out
from api.responses import API_ERRORS, errors
from api.schemas import AccessLogOut, AccessLogPage, NHS_PATTERN, ShortText, UserCreate, UserOut, UserUpdate
from engine.app.users import UserError, add_user, update_user
from engine.registry.access import AccessLogRow, UserRow

router = APIRouter(tags=["users"], responses=API_ERRORS)


@router.get("/users", response_model=list[UserOut])
def list_users(who: Principal = Depends(require("users:manage")), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        return [user_out(u) for u in s.exec(select(UserRow).order_by(UserRow.username))]


@router.post("/users", response_model=UserOut, status_code=201, responses=errors(**{"409": "Username taken"}))
def create_user(body: UserCreate, request: Request, who: Principal = Depends(require("users:manage")),
                state: AppState = Depends(get_state)):
    with Session(state.engines.write) as s:
        try:
            row = add_user(s, body.username, body.password, body.role, full_name=body.full_name, mdt=body.mdt,
                           practice=body.practice, locality=body.locality, clinical_roles=body.clinical_roles)
        except UserError as e:
            raise HTTPException(status_code=409 if "exists" in str(e) else 422, detail=str(e)) from None
        log_access(state, request, who, "write", "user", detail={"created": row.username, "role": row.role}, session=s)
        s.commit()
        s.refresh(row)
        return user_out(row)


@router.patch("/users/{username}", response_model=UserOut, responses=errors(**{"404": "No such user"}))
def change_user(username: str, body: UserUpdate, request: Request, who: Principal = Depends(require("users:manage")),
                state: AppState = Depends(get_state)):
    with Session(state.engines.write) as s:
        row = s.exec(select(UserRow).where(UserRow.username == username.strip().lower())).first()
        if row is None:
            raise HTTPException(status_code=404, detail=f"no user {username!r}")
        try:
            update_user(s, row, password=body.password, role=body.role, active=body.active, full_name=body.full_name,
                        mdt=body.mdt, practice=body.practice, locality=body.locality, clinical_roles=body.clinical_roles)
        except UserError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        changed = sorted(k for k, v in body.model_dump().items() if v is not None)
        log_access(state, request, who, "write", "user", detail={"updated": row.username, "fields": changed}, session=s)
        s.commit()
        s.refresh(row)
        return user_out(row)


PSEUDONYM_PATTERN = r"^P-[0-9a-f]{12}$"
NHS_RUN = re.compile(r"(?<![0-9])[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}(?![0-9])")  # 10 digits, or 3-3-4 spaced
MASK = "[nhs-number]"
NHS_FILTER_REFUSED = ("auditors filter the access log by pseudonym (pseudonym=P-...), not by NHS number: "
                      "an NHS number and its pseudonym side by side would re-identify the patient")


def _masked(value):
    """For auditors: every NHS-number-shaped run in a string (at any depth) replaced by a mask."""
    if isinstance(value, str):
        return NHS_RUN.sub(MASK, value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {_masked(k): _masked(v) for k, v in value.items()}
    return value


@router.get("/access-log", response_model=AccessLogPage, responses=errors(**{"403": "Your role may not read the log, or an auditor filtering by NHS number"}))
def access_log(request: Request, username: ShortText | None = None, action: ShortText | None = None,
               nhs_number: str | None = Query(None, pattern=NHS_PATTERN, description="Admins only"),
               pseudonym: str | None = Query(None, pattern=PSEUDONYM_PATTERN, description="A patient's pseudonym (P-...)"),
               since: dt.datetime | None = None, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
               who: Principal = Depends(require("accesslog:read")), state: AppState = Depends(get_state)):
    """Who read or changed what: newest first. Admins see NHS numbers and may filter by one; auditors
    see pseudonyms only and filter by pseudonym (an NHS-number filter from an auditor is refused and
    logged). In what an auditor sees, NHS numbers anywhere else in a row (a path, a detail) are masked
    and a username that is not a user account (a failed login) is withheld."""
    if nhs_number and who.pseudonymised:
        # the number is not logged: the refusal would otherwise show the auditor its pseudonym
        log_access(state, request, who, "denied", "accesslog:nhs-filter", status=403,
                   detail={"reason": "auditors filter by pseudonym"})
        raise HTTPException(status_code=403, detail=NHS_FILTER_REFUSED)
    q = select(AccessLogRow)
    if username:
        q = q.where(AccessLogRow.username == username)
    if action:
        q = q.where(AccessLogRow.action == action)
    if since:
        if since.tzinfo is not None:  # stored naive UTC: "...+01:00" means an hour earlier in UTC
            since = since.astimezone(dt.timezone.utc).replace(tzinfo=None)
        q = q.where(AccessLogRow.at >= since)
    pseudo_of: dict[str, str] = {}

    def pseudo(nhs: str) -> str:
        if nhs not in pseudo_of:
            pseudo_of[nhs] = state.pseudonymise(nhs)
        return pseudo_of[nhs]

    with Session(state.engines.read) as s:
        if nhs_number or pseudonym:  # patients is a JSON list: filtered here, portable across SQLite and PostgreSQL
            rows = [r for r in s.exec(q.order_by(AccessLogRow.id.desc()))
                    if (not nhs_number or nhs_number in (r.patients or []))
                    and (not pseudonym or any(pseudo(p) == pseudonym for p in (r.patients or [])))]
            total, page = len(rows), rows[offset:offset + limit]
        else:
            total = s.exec(select(func.count()).select_from(q.subquery())).one()
            page = list(s.exec(q.order_by(AccessLogRow.id.desc()).offset(offset).limit(limit)))
        accounts = set(s.exec(select(UserRow.username))) if who.pseudonymised else set()
    if not who.pseudonymised:
        return AccessLogPage(total=total, items=[
            AccessLogOut(id=r.id, at=r.at, username=r.username, role=r.role, action=r.action, method=r.method, path=r.path,
                         resource=r.resource, status=r.status, patients=list(r.patients or []), detail=r.detail or {})
            for r in page])
    return AccessLogPage(total=total, items=[
        AccessLogOut(id=r.id, at=r.at, username=_masked(r.username) if r.username in accounts or r.username is None else "(not a user)",
                     role=r.role, action=r.action, method=r.method, path=_masked(r.path), resource=r.resource, status=r.status,
                     patients=[pseudo(p) for p in (r.patients or [])], detail=_masked(r.detail or {}))
        for r in page])
