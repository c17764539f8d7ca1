"""Log in: a bearer token (POST /auth/token, OAuth2 password form) or a session cookie (POST /auth/login)."""
from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import func
from sqlmodel import Session, select

from api.app import COOKIE_NAME, AppState
from api.deps import Principal, current_user, get_state, log_access
from api.schemas import TokenOut, UserOut
from api.security import DUMMY_HASH, verify_password
from engine.registry.access import AccessLogRow, UserRow

router = APIRouter(prefix="/auth", tags=["auth"])


def user_out(u: UserRow) -> UserOut:
    return UserOut(username=u.username, full_name=u.full_name, role=u.role, mdt=u.mdt, practice=u.practice,
                   locality=u.locality, active=u.active, created_at=u.created_at, last_login_at=u.last_login_at)


MAX_FAILURES, FAILURE_WINDOW = 10, dt.timedelta(minutes=15)


def _authenticate(state: AppState, request: Request, username: str, password: str) -> tuple[str, UserRow]:
    name = username.strip().lower()[:100].replace("\x00", "")
    with Session(state.engines.read) as s:
        since = state.now() - FAILURE_WINDOW
        failures = s.exec(select(func.count()).select_from(AccessLogRow).where(
            AccessLogRow.username == name, AccessLogRow.action == "login", AccessLogRow.status == 401,
            AccessLogRow.at >= since)).one()
        if failures >= MAX_FAILURES:  # password guessing: refuse without even checking
            log_access(state, request, None, "login", "auth", status=429, detail={"result": "throttled"}, username=name)
            raise HTTPException(status_code=429, detail="too many failed logins for this user: try again in 15 minutes")
        user = s.exec(select(UserRow).where(UserRow.username == name)).first()
    ok, rehash = verify_password(user.password_hash if user else DUMMY_HASH, password)
    if user is None or not ok or not user.active:
        log_access(state, request, None, "login", "auth", status=401, detail={"result": "refused"}, username=name)
        raise HTTPException(status_code=401, detail="wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    with Session(state.engines.write) as s:
        user = s.get(UserRow, user.id)
        if rehash:  # hashed with older argon2 parameters: upgrade it now that we know the password
            user.password_hash = rehash
        user.last_login_at = state.now()
        s.add(user)
        log_access(state, request, None, "login", "auth", detail={"result": "ok"}, username=user.username, session=s)
        s.commit()
        s.refresh(user)
        return state.tokens.issue(user), user


LOGIN_ERRORS = {401: {"description": "Wrong username or password"},
                429: {"description": "Too many failed logins for this user in 15 minutes"}}


@router.post("/token", response_model=TokenOut, responses=LOGIN_ERRORS)
def token(request: Request, form: OAuth2PasswordRequestForm = Depends(), state: AppState = Depends(get_state)):
    """OAuth2 password flow: form fields `username` and `password` -> a bearer token."""
    tok, user = _authenticate(state, request, form.username, form.password)
    return TokenOut(access_token=tok, expires_in=state.tokens.ttl, user=user_out(user))


@router.post("/login", response_model=TokenOut, responses=LOGIN_ERRORS)
def login(request: Request, response: Response, form: OAuth2PasswordRequestForm = Depends(),
          state: AppState = Depends(get_state)):
    """Like /auth/token, and also sets an HttpOnly, SameSite=Lax session cookie for the web pages."""
    tok, user = _authenticate(state, request, form.username, form.password)
    response.set_cookie(COOKIE_NAME, tok, max_age=state.tokens.ttl, httponly=True, samesite="lax",
                        secure=state.cookie_secure, path="/")
    return TokenOut(access_token=tok, expires_in=state.tokens.ttl, user=user_out(user))


@router.post("/logout", status_code=204)
def logout(request: Request, response: Response, everywhere: bool = False, who: Principal = Depends(current_user),
           state: AppState = Depends(get_state)):
    """Clear the session cookie; with `everywhere=true` also revoke every token issued to this user."""
    if everywhere:
        with Session(state.engines.write) as s:
            user = s.get(UserRow, who.id)
            user.token_version += 1
            s.add(user)
            log_access(state, request, who, "write", "auth", detail={"revoked": "all tokens"}, session=s)
            s.commit()
    response.delete_cookie(COOKIE_NAME, path="/")
    response.status_code = 204
    return response


@router.get("/me", response_model=UserOut)
def me(who: Principal = Depends(current_user), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        return user_out(s.get(UserRow, who.id))
