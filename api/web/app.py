"""Mounting the pages on the app, login / logout and the home page for each role."""
from __future__ import annotations

import warnings

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func
from sqlmodel import Session, select

from api import sessions
from api.state import COOKIE_NAME
from api.deps import Principal
from api.routers.auth import _authenticate, clear_session_cookie, end_session, set_session_cookie
from api.security import ADMIN, AUDITOR, CLINICAL, CLINICAL_LEAD, MDT_MEMBER, PERMISSIONS, Scope
from api.web.common import (PREFIX, TEMPLATES_DIR, PageRoute, check_csrf, csrf_token, error_page, optional_page_user,
                            page_user, redirect, render, safe_next, state_of)
from engine.registry.access import UserRow

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)

ROLE_HOME = {
    "clinical-lead": "Clinical lead",
    "mdt-member": "MDT member",
    "practice-staff": "Practice team",
    "auditor": "Audit",
    "admin": "Service administration",
}


def mount(app: FastAPI) -> None:
    """Serve the pages under /app, their stylesheet under /static, and send / to the home page."""
    from api.web import accesslog, audit, care, mdt, outcomes, protocols, risk_model, worklist

    if not (TEMPLATES_DIR / "base.html").is_file():  # e.g. installed without the repository's templates/
        warnings.warn(f"carepath web pages not served: no templates in {TEMPLATES_DIR} (set CAREPATH_TEMPLATES)")
        return
    app.include_router(router)
    for module in (worklist, mdt, care, audit, outcomes, protocols, accesslog):
        app.include_router(module.router)
    app.include_router(risk_model.router)
    app.mount("/static", StaticFiles(directory=TEMPLATES_DIR / "static"), name="static")

    # Unknown pages and a GET on an action URL (405) never reach a PageRoute: the app's default answers
    # JSON. Under /app answer a page in plain words instead; the API keeps its JSON errors.
    default_http_handler = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)

    async def page_or_json_error(request: Request, exc: StarletteHTTPException):
        if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
            detail = {404: "There is no page at this address. Check the link, or start again from your home page.",
                      405: "This address is for a button on a page, not for opening directly. Go back to the page and use its button."}
            who = await run_in_threadpool(optional_page_user, request)
            return error_page(request, exc.status_code, detail.get(exc.status_code, exc.detail), who)
        return await default_http_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, page_or_json_error)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse(PREFIX + "/", status_code=307)


@router.get("/login")
def login_page(request: Request, next: str | None = None):
    return render(request, "login.html", None, page_title="Log in", next=safe_next(next), error=None, username="")


@router.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form(""),
          csrf_token_: str = Form("", alias="csrf_token")):
    check_csrf(request, csrf_token_)
    state = state_of(request)
    try:
        token, user = _authenticate(state, request, username[:200], password[:500], kind="cookie")
    except HTTPException as e:
        throttled = e.status_code == 429
        wait = (e.headers or {}).get("Retry-After", "a few")
        response = render(request, "login.html", None, status_code=e.status_code, page_title="Log in",
                          next=safe_next(next), username=username[:200],
                          error=f"Too many failed logins: try again in {wait} seconds." if throttled
                          else "Wrong username or password.")
        if throttled:
            response.headers["Retry-After"] = str(wait)
        return response
    response = redirect(request, safe_next(next))
    set_session_cookie(response, state, token)
    return response


@router.post("/logout")
def logout(request: Request, csrf_token_: str = Form("", alias="csrf_token")):
    check_csrf(request, csrf_token_)
    state = state_of(request)
    checked = sessions.check(state, request.cookies.get(COOKIE_NAME))
    if checked.problem is None:  # end the session server side: the cookie's token stops working at once
        who = Principal(id=checked.user.id, username=checked.user.username, role=checked.user.role, mdt=None,
                        practice=None, locality=None, scope=Scope(), session=checked.session.id_hash)
        end_session(state, request, who)
    response = redirect(request, PREFIX + "/login", flash="You are logged out.")
    clear_session_cookie(response, state)
    return response


@router.get("/")
def home(request: Request, who: Principal = Depends(page_user)):
    from api.routers.audit import measures as audit_measures
    from api.routers.mdt import list_mdts
    from api.routers.protocols import list_protocols
    from api.web.worklist import headline_counts

    state = state_of(request)
    ctx: dict = {"role_title": ROLE_HOME.get(who.role, who.role)}
    if who.role in CLINICAL:
        ctx["counts"] = headline_counts(state, who)
    if who.role in PERMISSIONS["mdt:read"]:
        ctx["mdts"] = list_mdts(who, state)
    if who.role in PERMISSIONS["audit:read"]:
        out = audit_measures("area", None, None, None, who, state)
        ctx["area_rows"] = [r for r in out.rows]
        ctx["audit_patients"] = out.patients
    protos = list_protocols(who, state)
    ctx["protocols"] = protos
    ctx["drafts"] = [(p, v) for p in protos for v in p.versions
                     if v != p.in_force_version and _status(state, p.id, v) == "draft"]
    if who.role == ADMIN:
        with Session(state.engines.read) as s:
            ctx["users"] = s.exec(select(func.count()).select_from(UserRow)).one()
    return render(request, "home.html", who, page_title=ctx["role_title"] + " home", **ctx,
                  is_lead=who.role == CLINICAL_LEAD, is_mdt=who.role == MDT_MEMBER, is_auditor=who.role == AUDITOR)


def _status(state, pid: str, version: str) -> str | None:
    p = state.library.find(pid, version)
    return p.status if p else None


__all__ = ["mount", "router", "csrf_token"]
