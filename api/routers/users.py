"""Users (admin) and the access log (admin, auditor)."""
from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy import func
from sqlmodel import Session, select

from api.app import AppState
from api.deps import Principal, get_state, log_access, require
from api.routers.auth import user_out
from api.schemas import AccessLogOut, AccessLogPage, NHS_PATTERN, ShortText, UserCreate, UserOut, UserUpdate
from api.users import UserError, add_user, update_user
from engine.registry.access import AccessLogRow, UserRow

router = APIRouter(tags=["users"])


@router.get("/users", response_model=list[UserOut])
def list_users(who: Principal = Depends(require("users:manage")), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        return [user_out(u) for u in s.exec(select(UserRow).order_by(UserRow.username))]


@router.post("/users", response_model=UserOut, status_code=201, responses={409: {"description": "Username taken"}})
def create_user(body: UserCreate, request: Request, who: Principal = Depends(require("users:manage")),
                state: AppState = Depends(get_state)):
    with Session(state.engines.write) as s:
        try:
            row = add_user(s, body.username, body.password, body.role, full_name=body.full_name, mdt=body.mdt,
                           practice=body.practice, locality=body.locality)
        except UserError as e:
            raise HTTPException(status_code=409 if "exists" in str(e) else 422, detail=str(e)) from None
        log_access(state, request, who, "write", "user", detail={"created": row.username, "role": row.role}, session=s)
        s.commit()
        s.refresh(row)
        return user_out(row)


@router.patch("/users/{username}", response_model=UserOut, responses={404: {"description": "No such user"}})
def change_user(username: str, body: UserUpdate, request: Request, who: Principal = Depends(require("users:manage")),
                state: AppState = Depends(get_state)):
    with Session(state.engines.write) as s:
        row = s.exec(select(UserRow).where(UserRow.username == username.strip().lower())).first()
        if row is None:
            raise HTTPException(status_code=404, detail=f"no user {username!r}")
        try:
            update_user(s, row, password=body.password, role=body.role, active=body.active, full_name=body.full_name,
                        mdt=body.mdt, practice=body.practice, locality=body.locality)
        except UserError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        changed = sorted(k for k, v in body.model_dump().items() if v is not None)
        log_access(state, request, who, "write", "user", detail={"updated": row.username, "fields": changed}, session=s)
        s.commit()
        s.refresh(row)
        return user_out(row)


@router.get("/access-log", response_model=AccessLogPage)
def access_log(username: ShortText | None = None, action: ShortText | None = None,
               nhs_number: str | None = Query(None, pattern=NHS_PATTERN),
               since: dt.datetime | None = None, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
               who: Principal = Depends(require("accesslog:read")), state: AppState = Depends(get_state)):
    """Who read or changed what: newest first. Auditors see NHS numbers pseudonymised."""
    q = select(AccessLogRow)
    if username:
        q = q.where(AccessLogRow.username == username)
    if action:
        q = q.where(AccessLogRow.action == action)
    if since:
        q = q.where(AccessLogRow.at >= since.replace(tzinfo=None))
    with Session(state.engines.read) as s:
        if nhs_number:  # patients is a JSON list: filtered here, portable across SQLite and PostgreSQL
            rows = [r for r in s.exec(q.order_by(AccessLogRow.id.desc())) if nhs_number in (r.patients or [])]
            total, page = len(rows), rows[offset:offset + limit]
        else:
            total = s.exec(select(func.count()).select_from(q.subquery())).one()
            page = list(s.exec(q.order_by(AccessLogRow.id.desc()).offset(offset).limit(limit)))
    conv = state.pseudonymise if who.pseudonymised else (lambda x: x)
    return AccessLogPage(total=total, items=[
        AccessLogOut(id=r.id, at=r.at, username=r.username, role=r.role, action=r.action, method=r.method,
                     path=re.sub(r"\d{10}", lambda m: conv(m.group()), r.path),
                     resource=r.resource, status=r.status, patients=[conv(p) for p in (r.patients or [])],
                     detail=r.detail or {}) for r in page])
