"""The error answers an operation can give, documented once and applied where they occur.

    router = APIRouter(prefix="/x", responses=API_ERRORS)              # every route of the router
    @router.get("/{id}", responses=errors(404, 409, **{"404": "No such thing"}))   # route specifics

Every error body is `ErrorOut` (`{"detail": "...", "errors": [{"pointer", "message"}]}`): FastAPI's
`HTTPException` answers `{"detail": ...}`, the request-validation handler (api/app.py) answers 422
with `errors` (JSON pointers), and the request guard (api/limits.py) answers 400 / 401 / 413 with
`{"detail": ...}` before FastAPI sees the request. Declaring 422 here also stops FastAPI from
documenting its own `HTTPValidationError` shape, which the service never sends.
"""
from __future__ import annotations

from typing import Any

from api.schemas import ErrorOut

WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}

COMMON: dict[int, dict[str, Any]] = {
    400: {"description": "Refused by the request guard before the body is read: JSON nested deeper than "
                         "CAREPATH_MAX_JSON_DEPTH (default 64), or an invalid Content-Length"},
    401: {"description": "Not logged in, or the session ended (expired, idle, logged out)", "headers": WWW_AUTHENTICATE},
    403: {"description": "Your role may not do this (the permission table in README, Security)"},
    404: {"description": "Not found, or outside your scope (the two look the same)"},
    409: {"description": "Conflicts with the current state"},
    413: {"description": "Request body too large: CAREPATH_MAX_BODY_BYTES (default 1 MiB), "
                         "CAREPATH_MAX_INGEST_BYTES for /ingest (default 32 MiB)"},
    422: {"description": "Invalid request: `errors` points (JSON pointer) at each offending part"},
    429: {"description": "Too many failed logins: wait for Retry-After seconds",
          "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}},
}


def errors(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for these status codes: the shared description (or the one given, keyed by the
    code as a string: `**{"404": "No such task"}`) and the ErrorOut body."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, *map(int, descriptions)}):
        entry = {**COMMON.get(code, {"description": "Error"}), "model": ErrorOut}
        if str(code) in descriptions:
            entry["description"] = descriptions[str(code)]
        out[code] = entry
    return out


# What any logged-in API operation can answer: the guard's 400 / 401 / 413, the permission check's
# 403, request validation's 422.
API_ERRORS = errors(400, 401, 403, 413, 422)
# The login endpoints (no session needed): the guard's 400 / 413, validation, wrong password, throttling.
LOGIN_ERRORS = errors(400, 413, 422, 429, **{"401": "Wrong username or password"})
