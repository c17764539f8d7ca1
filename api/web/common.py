"""What every page shares: the Jinja2 environment, rendering, CSRF, flash messages, the route class
that turns the API's HTTP errors into HTML pages (and "not logged in" into the login page), and the
permission check the API uses.

CSRF (signed double-submit, bound to the session): each browser gets a random `carepath_csrf`
cookie (HttpOnly, SameSite=Strict); every form carries HMAC(key, nonce | session token), where the
key is a random per-database service key. A POST is accepted only when the field matches the
cookies it came with, and, when the browser sends an Origin header, only from this site. A token
is useless without both cookies, and the session cookie itself is SameSite=Lax and HttpOnly.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.templating import Jinja2Templates

from api.state import COOKIE_NAME, AppState, _service_key
from api.deps import Principal, current_user, log_access
from api.security import PERMISSIONS
from engine.ir.unit_display import display_unit
from engine.app.practices import practice_label, practice_name

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = Path(os.environ.get("CAREPATH_TEMPLATES", ROOT / "templates"))
PREFIX = "/app"
CSRF_COOKIE = "carepath_csrf"
FLASH_COOKIE = "carepath_flash"
CSRF_FIELD = "csrf_token"

try:
    LONDON = ZoneInfo("Europe/London")
except Exception:  # pragma: no cover - no tz database: show UTC
    LONDON = None

SECURITY_HEADERS = {
    # No JavaScript at all on these pages; styles from our own stylesheet only.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


# ---- formatting -----------------------------------------------------------------------------------
def local(d: dt.datetime) -> dt.datetime:
    """Registry times are naive UTC; pages show UK local time."""
    if LONDON is None:
        return d
    return d.replace(tzinfo=dt.timezone.utc).astimezone(LONDON).replace(tzinfo=None)


def fmt_day(d: dt.date | dt.datetime | None) -> str:
    if d is None:
        return ""
    if isinstance(d, dt.datetime):
        d = local(d).date()
    return f"{d.day} {d:%b %Y}"


def fmt_long_day(d: dt.date | None) -> str:
    return f"{d:%A} {d.day} {d:%B %Y}" if d else ""


def fmt_when(d: dt.datetime | None) -> str:
    if d is None:
        return ""
    d = local(d)
    return f"{d.day} {d:%b %Y %H:%M}"


def fmt_span(hours: float) -> str:
    """3.5 -> '3 h 30 min'; 50 -> '2 d 2 h'."""
    minutes = int(round(abs(hours) * 60))
    days, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    if days:
        return f"{days} d {h} h" if h else f"{days} d"
    if h:
        return f"{h} h {m} min" if m else f"{h} h"
    return f"{m} min"


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f}%"


def fmt_nhs(n: str | None) -> str:
    """NHS numbers are read and spoken 3-3-4 ('943 476 5919'), as on every NHS letter and banner."""
    n = (n or "").replace(" ", "")
    return f"{n[:3]} {n[3:6]} {n[6:]}" if len(n) == 10 and n.isdigit() else n


def humanise(s: str | None) -> str:
    return (s or "").replace("-", " ").replace("_", " ")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(day=fmt_day, long_day=fmt_long_day, when=fmt_when, span=fmt_span, pct=fmt_pct,
                       humanise=humanise, local=local, nhs=fmt_nhs, unit=display_unit,
                       practice=practice_label, practice_name=practice_name)
    env.globals.update(PREFIX=PREFIX, CSRF_FIELD=CSRF_FIELD, urlencode=urlencode, PERMISSIONS=PERMISSIONS)
    return env


templates = Jinja2Templates(env=_env())


# ---- state, CSRF, flash -----------------------------------------------------------------------------
def state_of(request: Request) -> AppState:
    return request.app.state.carepath


def _csrf_key(request: Request) -> bytes:
    key = getattr(request.app.state, "web_csrf_key", None)
    if key is None:
        key = _service_key(state_of(request).engines, "csrf").encode()
        request.app.state.web_csrf_key = key
    return key


def _csrf_value(key: bytes, nonce: str, session: str) -> str:
    bound = hashlib.sha256(session.encode()).hexdigest()
    return hmac.new(key, f"{nonce}|{bound}".encode(), hashlib.sha256).hexdigest()


def csrf_nonce(request: Request) -> str:
    """The browser's CSRF nonce (made for this response when it has none yet)."""
    nonce = getattr(request.state, "csrf_nonce", None) or request.cookies.get(CSRF_COOKIE)
    if not nonce or len(nonce) > 100:
        nonce = secrets.token_urlsafe(32)
        request.state.csrf_new = True
    request.state.csrf_nonce = nonce
    return nonce


def csrf_token(request: Request, session: str | None = None) -> str:
    if session is None:
        session = request.cookies.get(COOKIE_NAME, "")
    return _csrf_value(_csrf_key(request), csrf_nonce(request), session)


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a POST whose token does not match its cookies, or that comes from another site."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise HTTPException(status_code=403, detail="This form was sent from another site and was refused.")
    nonce = request.cookies.get(CSRF_COOKIE)
    if not submitted or not nonce:
        raise HTTPException(status_code=403, detail="The form's security token is missing. Reload the page and try again.")
    expected = _csrf_value(_csrf_key(request), nonce, request.cookies.get(COOKIE_NAME, ""))
    if not hmac.compare_digest(expected, submitted):
        raise HTTPException(status_code=403, detail="The form's security token is out of date. Reload the page and try again.")


def set_flash(response: Response, message: str) -> None:
    response.set_cookie(FLASH_COOKIE, quote(message[:300]), max_age=60, httponly=True, samesite="strict", path=PREFIX)


def _finish(request: Request, response: Response) -> Response:
    for k, v in SECURITY_HEADERS.items():
        response.headers.setdefault(k, v)
    if getattr(request.state, "csrf_new", False):
        response.set_cookie(CSRF_COOKIE, request.state.csrf_nonce, httponly=True, samesite="strict", path="/",
                            secure=state_of(request).cookie_secure)
    if getattr(request.state, "flash_read", False):
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def render(request: Request, template: str, who: Principal | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    flash = request.cookies.get(FLASH_COOKIE)
    if flash:
        request.state.flash_read = True
    ctx = dict(who=who, csrf=csrf_token(request), flash=unquote(flash) if flash else None, now=state_of(request).now(),
               can=lambda perm: who is not None and who.role in PERMISSIONS[perm], request_path=request.url.path,
               page_title=context.pop("page_title", None))
    ctx.update(context)
    response = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    return _finish(request, response)


def redirect(request: Request, url: str, flash: str | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash:
        set_flash(response, flash)
    return _finish(request, response)


def safe_next(url: str | None, default: str = PREFIX + "/") -> str:
    """Only ever redirect inside the pages (no open redirect)."""
    if not url or not url.startswith(PREFIX + "/") or url.startswith("//") or "\\" in url or "\n" in url or "\r" in url:
        return default
    return url


# ---- who is asking ----------------------------------------------------------------------------------
class LoginRequired(Exception):
    pass


def page_user(request: Request) -> Principal:
    """The logged-in user (the API's session cookie), or the login page."""
    state = state_of(request)
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        raise LoginRequired()
    try:
        who = current_user(request, state, None)
    except HTTPException as e:
        if e.status_code == 401:
            raise LoginRequired() from None
        raise
    request.state.who = who
    return who


def need(request: Request, who: Principal, permission: str) -> None:
    """The API's permission table, refusal logged the same way (`require`)."""
    roles = PERMISSIONS[permission]
    if who.role not in roles:
        log_access(state_of(request), request, who, "denied", permission, status=403, detail={"reason": f"role {who.role}"})
        raise HTTPException(status_code=403, detail=f"Your role ({humanise(who.role)}) cannot use this page "
                                                    f"({permission} is for: {', '.join(humanise(r) for r in sorted(roles))}).")


def optional_page_user(request: Request) -> Principal | None:
    """The logged-in user if there is one (for the navigation on error pages), else None."""
    try:
        return page_user(request)
    except (LoginRequired, HTTPException):
        return None


def _plain_validation(errors: list) -> str:
    """Validation errors in words a clinician can act on, not pydantic's field paths."""
    where = {"query": "in the page address", "path": "in the page address", "body": "in the form"}
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ())]
        field = loc[-1] if loc else "a value"
        place = where.get(loc[0], "") if loc else ""
        parts.append(f"‘{field}’ {place}: {str(e.get('msg', 'not understood')).replace('Input should be', 'should be')}".strip())
    return "This page could not use what it was given — " + "; ".join(parts) + ". Go back and choose again."


def error_page(request: Request, status: int, detail: Any, who: Principal | None = None) -> HTMLResponse:
    titles = {400: "Bad request", 403: "Not allowed", 404: "Page not found", 405: "Not a page", 409: "Not possible now",
              422: "Check what you entered"}
    if isinstance(detail, list):  # validation errors
        detail = _plain_validation(detail)
    who = who or getattr(request.state, "who", None)
    return render(request, "error.html", who, status_code=status, page_title=titles.get(status, "Something went wrong"),
                  status=status, detail=str(detail))


class PageRoute(APIRoute):
    """Errors as HTML pages: not logged in -> the login page; 403 / 404 / 409 / 422 -> a page saying so."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET":
                    target = PREFIX + "/"
                return redirect(request, f"{PREFIX}/login?{urlencode({'next': target})}")
            except HTTPException as e:
                if e.status_code == 401:
                    return redirect(request, f"{PREFIX}/login")
                return error_page(request, e.status_code, e.detail)
            except RequestValidationError as e:
                return error_page(request, 422, e.errors())

        return run
