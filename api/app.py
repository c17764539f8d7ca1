"""The carepath HTTP service (FastAPI).

    app = create_app(database_url=None, protocols_dir=Path("protocols"))

Runs the registry migrations on start, loads the protocol library (reloaded when the files
change, e.g. after a publish by another process) and serves the routers in `api/routers/`.
OpenAPI at /openapi.json, interactive docs at /docs.
"""
from __future__ import annotations

import datetime as dt
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from api.db import make_engines
from api.limits import RequestGuard
from api.security import Pseudonymiser, Tokens
from api import heap
from api.state import (COOKIE_NAME, DEFAULT_IDLE_TIMEOUT, DEFAULT_TOKEN_TTL, AppState, LibraryHolder,  # noqa: F401
                       _service_key, env_flag)
from api.throttle import ThrottlePolicy
from engine.registry.db import database_url as default_database_url, upgrade
from engine.registry.tables import utcnow

def create_app(database_url: str | None = None, protocols_dir: Path = Path("protocols"), *,
               secret_key: str | None = None, token_ttl: int | None = None,
               clock: Callable[[], dt.datetime] | None = None, migrate: bool = True,
               cookie_secure: bool | None = None, idle_timeout: int | None = None,
               login_policy: ThrottlePolicy | None = None, max_body: int | None = None,
               max_ingest: int | None = None) -> FastAPI:
    """The app. Settings not given come from the environment: CAREPATH_SECRET_KEY, CAREPATH_TOKEN_TTL,
    CAREPATH_IDLE_TIMEOUT, CAREPATH_COOKIE_SECURE (default on: set 0 only to serve plain HTTP on
    loopback), CAREPATH_MAX_BODY_BYTES, CAREPATH_MAX_INGEST_BYTES, CAREPATH_MAX_JSON_DEPTH."""
    url = database_url or default_database_url()
    if migrate:
        upgrade(url)
    engines = make_engines(url)
    from engine.app.impact_runs import interrupt_unfinished
    interrupt_unfinished(engines.write)  # impact runs of an earlier process can never finish: say so
    secret = secret_key or os.environ.get("CAREPATH_SECRET_KEY") or _service_key(engines, "token-signing")
    pseudo_key = os.environ.get("CAREPATH_PSEUDONYM_KEY") or _service_key(engines, "pseudonym")
    ttl = token_ttl or int(os.environ.get("CAREPATH_TOKEN_TTL", DEFAULT_TOKEN_TTL))
    idle = idle_timeout or int(os.environ.get("CAREPATH_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT))
    holder = LibraryHolder(Path(protocols_dir))
    holder.get()
    state = AppState(engines=engines, database_url=url, protocols=holder, protocols_dir=Path(protocols_dir),
                     tokens=Tokens(secret, ttl), pseudonymise=Pseudonymiser(pseudo_key), clock=clock or utcnow,
                     cookie_secure=env_flag("CAREPATH_COOKIE_SECURE", True) if cookie_secure is None else cookie_secure,
                     idle_timeout=idle, login_policy=login_policy or ThrottlePolicy())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # Evaluate whoever is still marked for evaluation (a crash, a large delivery), in the background.
        from engine.app.service import Drainer

        state.drainer = Drainer(engines.write, lambda: state.library, state.now, engines.read)
        state.drainer.kick()
        heap.freeze_long_lived()  # what lives as long as the service, out of the full collections (api/heap.py)
        yield
        heap.thaw()
        if getattr(state, "bulk_runner", None) is not None:
            state.bulk_runner.stop()  # a bulk load stops between patients, resumable (api/bulk_ingest.py)
        state.drainer.stop()
        engines.dispose()

    app = FastAPI(title="carepath", version="0.1.0", lifespan=lifespan,
                  description="Clinical protocols evaluated into care plans, worklists, MDT lists and audit. "
                              "Log in with POST /auth/token (OAuth2 password form) and send "
                              "`Authorization: Bearer <token>`, or POST /auth/login for a session cookie.")
    app.state.carepath = state
    # Size, depth and who-is-asking checks before any body is read (api/limits.py); no-store headers.
    app.add_middleware(RequestGuard, state=state, max_body=max_body, max_ingest=max_ingest, cookie_name=COOKIE_NAME)
    # Outermost: counts and times every request by route template, the guard's refusals too (api/operations.py).
    from api import operations

    operations.metrics_token()  # a CAREPATH_METRICS_TOKEN too short to be a secret stops the start
    app.add_middleware(operations.RequestMetrics, fastapi_app=app)
    from api.request_log import RequestId  # outermost of all: every line of a request names its id (X-Request-ID)

    app.add_middleware(RequestId, fastapi_app=app)

    from api import bulk_ingest
    from api.routers import audit, auth, fhir, ingest, mdt, patients, protocol_drafts, protocols, users, worklists

    for module in (auth, users, ingest, bulk_ingest, patients, worklists, mdt, audit, protocol_drafts, protocols, fhir,
                   operations):
        app.include_router(module.router)

    from api.web import mount as mount_pages  # the Jinja2 web pages (/app, templates/): not part of the API schema

    mount_pages(app)

    from api.schemas import HealthOut

    @app.get("/health", response_model=HealthOut, tags=["service"])
    def health():
        """Liveness, no login needed and no database query: is the service up, which database kind, which
        protocols are loaded. Readiness (database reachable, schema migrated, backlog) is GET /ready."""
        lib = state.library
        return HealthOut(status="ok", database=engines.read.dialect.name, protocols=[p.key for p in lib.protocols],
                         protocol_problems=len(lib.errors))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        errors = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            where = loc[0] if loc else "body"
            parts = loc[1:] if where == "body" else loc
            errors.append({"pointer": "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts),
                           "message": f"{where}: {e.get('msg')}"})
        return JSONResponse(status_code=422, content={"detail": "invalid request", "errors": errors})

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError):
        # A value the database cannot hold (e.g. out of range): the client's input, not our failure.
        return JSONResponse(status_code=422, content={"detail": f"value not accepted by the database: {exc.orig}", "errors": []})

    return app
