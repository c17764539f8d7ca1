"""Log in: a bearer token (POST /auth/token, OAuth2 password form) or a session cookie (POST /auth/login)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from sqlmodel import Session, select

from api import sessions, throttle
from api.state import COOKIE_NAME, AppState
from api.deps import Principal, current_user, get_state, log_access
from api.responses import errors
from api.schemas import TokenOut, UserOut
from api.security import verify_password
from engine import metrics
from engine.registry.access import UserRow

router = APIRouter(prefix="/auth", tags=["auth"])


def user_out(u: UserRow) -> UserOut:
    return UserOut(username=u.username, full_name=u.full_name, role=u.role, mdt=u.mdt, practice=u.practice,
                   locality=u.locality, clinical_roles=list(u.clinical_roles or []), active=u.active, created_at=u.created_at, last_login_at=u.last_login_at)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _throttled(state: AppState, request: Request, name: str, wait: float) -> HTTPException:
    seconds = throttle.retry_after(wait)
    metrics.LOGIN_FAILURES.labels("throttled").inc()
    log_access(state, request, None, "login", "auth", status=429, detail={"result": "throttled", "retry_after": seconds},
               username=name)
    return HTTPException(status_code=429, headers={"Retry-After": str(seconds)},
                         detail=f"too many failed logins for this username or from this address: try again in {seconds} s")


def _authenticate(state: AppState, request: Request, username: str, password: str,
                  kind: str = "bearer") -> tuple[str, UserRow]:
    """Check a username and password (throttled, api/throttle.py) and open a server-side session.
    Returns (token, user); 401 for a wrong username or password, 429 with Retry-After while delayed."""
    name = username.strip().lower()[:100].replace("\x00", "")
    keys = throttle.keys_for(name, client_address(request))
    wait = throttle.reserve(state.engines.write, state.login_policy, keys, state.now())  # counted before checking
    if wait > 0:
        raise _throttled(state, request, name, wait)
    with Session(state.engines.read) as s:
        user = s.exec(select(UserRow).where(UserRow.username == name)).first()
    ok, rehash = verify_password(user.password_hash if user else None, password[:1000])
    if user is None or not ok or not user.active:
        metrics.LOGIN_FAILURES.labels("refused").inc()
        log_access(state, request, None, "login", "auth", status=401, detail={"result": "refused"}, username=name)
        raise HTTPException(status_code=401, detail="wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    now = state.now()
    throttle.succeeded(state.engines.write, state.login_policy, keys, now)
    with Session(state.engines.write) as s:
        user = s.get(UserRow, user.id)
        if rehash:  # hashed with older argon2 parameters: upgrade it now that we know the password
            user.password_hash = rehash
        user.last_login_at = now
        s.add(user)
        sid = sessions.open_session(s, user, kind=kind, client=client_address(request), now=now,
                                    ttl_seconds=state.tokens.ttl)
        log_access(state, request, None, "login", "auth", detail={"result": "ok", "session": kind},
                   username=user.username, session=s)
        s.commit()
        s.refresh(user)
        return state.tokens.issue(user, sid), user


LOGIN_ERRORS = errors(400, 413, 422, **{"401": "Wrong username or password",
                                         "429": "Too many failed logins for this username or from this address: wait for "
                                                "Retry-After seconds (a delay that grows with each failure, capped at 5 minutes)"})
SESSION_ERRORS = errors(400, 401, 413, 422)


def set_session_cookie(response: Response, state: AppState, token: str) -> None:
    response.set_cookie(COOKIE_NAME, token, max_age=state.tokens.ttl, httponly=True, samesite="lax",
                        secure=state.cookie_secure, path="/")


def clear_session_cookie(response: Response, state: AppState) -> None:
    response.delete_cookie(COOKIE_NAME, path="/", secure=state.cookie_secure, httponly=True, samesite="lax")


@router.post("/token", response_model=TokenOut, responses=LOGIN_ERRORS)
def token(request: Request, form: OAuth2PasswordRequestForm = Depends(), state: AppState = Depends(get_state)):
    """OAuth2 password flow: form fields `username` and `password` -> a bearer token."""
    tok, user = _authenticate(state, request, form.username, form.password)
    return TokenOut(access_token=tok, expires_in=state.tokens.ttl, user=user_out(user))


@router.post("/login", response_model=TokenOut, responses=LOGIN_ERRORS)
def login(request: Request, response: Response, form: OAuth2PasswordRequestForm = Depends(),
          state: AppState = Depends(get_state)):
    """Like /auth/token, and also sets an HttpOnly, SameSite=Lax session cookie (Secure unless
    CAREPATH_COOKIE_SECURE=0) for the web pages."""
    tok, user = _authenticate(state, request, form.username, form.password, kind="cookie")
    set_session_cookie(response, state, tok)
    return TokenOut(access_token=tok, expires_in=state.tokens.ttl, user=user_out(user))


def end_session(state: AppState, request: Request, who: Principal, everywhere: bool = False) -> None:
    """Revoke the caller's session (server side); with `everywhere`, every token and session of theirs."""
    with Session(state.engines.write) as s:
        now = state.now()
        if everywhere:
            user = s.get(UserRow, who.id)
            user.token_version += 1
            s.add(user)
            sessions.revoke_all(s, who.id, now)
        else:
            sessions.revoke(s, who.session, now)
        log_access(state, request, who, "write", "auth", detail={"revoked": "all tokens" if everywhere else "this session"},
                   session=s)
        s.commit()


@router.post("/logout", status_code=204, responses=SESSION_ERRORS)
def logout(request: Request, response: Response, everywhere: bool = False, who: Principal = Depends(current_user),
           state: AppState = Depends(get_state)):
    """End this session (the token or cookie stops working at once) and clear the session cookie;
    with `everywhere=true` also revoke every other token and session of this user."""
    end_session(state, request, who, everywhere)
    clear_session_cookie(response, state)
    response.status_code = 204
    return response


@router.get("/me", response_model=UserOut, responses=SESSION_ERRORS)
def me(who: Principal = Depends(current_user), state: AppState = Depends(get_state)):
    with Session(state.engines.read) as s:
        return user_out(s.get(UserRow, who.id))
