"""Operating the service: readiness, Prometheus metrics and the request-metrics middleware.

- `GET /health` (api/app.py): liveness. No login, no database query: the process answers.
- `GET /ready`: readiness. No login. 200 when the database answers and its schema is at the
  migrations' head, 503 otherwise (a load balancer stops sending requests; an orchestrator waits).
  Says the database kind, the schema revision and the head, and the evaluation backlog (patients
  marked in `pending_evaluation`, evaluated by the background drain). No patient data.
- `GET /metrics`: Prometheus text format (engine/metrics.py lists the metrics). Protected: either
  `Authorization: Bearer <CAREPATH_METRICS_TOKEN>` (a secret of at least 16 characters given to the
  Prometheus server's scrape config; no session, not in the access log) or the session of a user
  whose role has `metrics:read` (admin). Metrics hold counts by route template and outcome, never
  an NHS number or a name; still, they describe the service's use, so they are not public.
- `RequestMetrics`: a pure ASGI middleware (outside all but the request id, so it also counts what the
  request guard refuses) that counts and times every HTTP request by its route template
  (api/observed_request.py).
"""
from __future__ import annotations

import hmac
import logging
import os

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, text
from sqlmodel import Session, select

from api.state import AppState
from api.deps import current_user, get_state, oauth2, require
from api.observed_request import ObservedRequest
from api.responses import errors
from engine import metrics

log = logging.getLogger("carepath.api")
METRICS_TOKEN_ENV = "CAREPATH_METRICS_TOKEN"
MIN_TOKEN_LENGTH = 16

router = APIRouter(tags=["service"])


def metrics_token() -> str | None:
    """CAREPATH_METRICS_TOKEN, or None when unset; too short a token is a configuration error."""
    token = os.environ.get(METRICS_TOKEN_ENV, "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"{METRICS_TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters")
    return token


class ReadyOut(BaseModel):
    status: str = Field(description="`ready` or `not-ready`")
    database: str = Field(description="database kind: sqlite or postgresql")
    database_reachable: bool
    migration: str | None = Field(None, description="the schema's Alembic revision")
    migration_head: str = Field(description="the newest revision this code ships")
    evaluation_backlog: int | None = Field(None, description="patients marked for evaluation, not yet evaluated")
    problems: list[str] = Field(default_factory=list, description="why not ready")


_head_cache: list[str] = []


def migration_head() -> str:
    if not _head_cache:
        from alembic.script import ScriptDirectory

        from engine.registry.db import alembic_config
        _head_cache.append(ScriptDirectory.from_config(alembic_config()).get_current_head())
    return _head_cache[0]


def readiness(state: AppState) -> ReadyOut:
    from alembic.runtime.migration import MigrationContext

    from engine.registry.pending import PendingEvaluationRow

    engine = state.engines.read
    out = ReadyOut(status="ready", database=engine.dialect.name, database_reachable=False, migration_head=migration_head())
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            out.database_reachable = True
            out.migration = MigrationContext.configure(conn).get_current_revision()
        if out.migration == out.migration_head:
            with Session(engine) as s:
                out.evaluation_backlog = s.exec(select(func.count()).select_from(PendingEvaluationRow)).one()
    except Exception as e:  # noqa: BLE001 - any failure to reach the database means not ready
        log.warning("readiness check: database not usable: %s", e)
        out.problems.append(f"database not usable: {type(e).__name__}")
    if out.database_reachable and out.migration != out.migration_head:
        out.problems.append(f"schema at revision {out.migration or 'none'}, this code needs {out.migration_head}: "
                            "run the migrations (carepath db upgrade)")
    if out.problems:
        out.status = "not-ready"
    return out


@router.get("/ready", response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "Not ready: the database is unreachable or its schema "
                                                               "is not at the migrations' head (see `problems`)"}})
def ready(state: AppState = Depends(get_state)):
    """No login needed: can the service do its work (database reachable, schema migrated), and the
    evaluation backlog. 200 when ready, 503 when not."""
    out = readiness(state)
    if out.status != "ready":
        return JSONResponse(status_code=503, content=out.model_dump(mode="json"))
    return out


def metrics_access(request: Request, state: AppState = Depends(get_state), bearer: str | None = Depends(oauth2)) -> str:
    """The metrics token (Prometheus), or a logged-in user with `metrics:read` (401 / 403 otherwise)."""
    expected = metrics_token()
    if expected and bearer and hmac.compare_digest(bearer.encode(), expected.encode()):
        return "metrics-token"
    who = current_user(request, state, bearer)
    return require("metrics:read")(request, who, state).username


def _scrape_gauges(state: AppState) -> None:
    from engine.registry.pending import DataProblemRow, PendingEvaluationRow

    try:
        with Session(state.engines.read) as s:
            metrics.EVALUATION_BACKLOG.set(s.exec(select(func.count()).select_from(PendingEvaluationRow)).one())
            metrics.DATA_PROBLEMS_OPEN.set(s.exec(select(func.count()).select_from(DataProblemRow)
                                                  .where(DataProblemRow.resolved_at.is_(None))).one())
    except Exception as e:  # noqa: BLE001 - the counters are still worth serving
        log.warning("metrics: could not read the backlog from the database: %s", e)


@router.get("/metrics", response_class=Response, responses={
    200: {"description": "Prometheus text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}},
    **errors(401, 403, **{"401": "Neither the metrics token (CAREPATH_METRICS_TOKEN) nor a session",
                          "403": "Your role may not read the metrics (admin only)"})})
def prometheus_metrics(_who: str = Depends(metrics_access), state: AppState = Depends(get_state)):
    """Prometheus metrics (text format): requests and latency by route template, ingest accepted /
    refused, evaluations, the evaluation backlog, login failures. `Authorization: Bearer
    <CAREPATH_METRICS_TOKEN>` or an admin's session."""
    _scrape_gauges(state)
    return Response(content=metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


# ---- request metrics -------------------------------------------------------------------------------------
class RequestMetrics(ObservedRequest):
    """Pure ASGI middleware: `carepath_http_requests_total` and `..._duration_seconds` by route template."""

    def finished(self, scope, method: str, route: str, status: int, seconds: float, begun) -> None:
        metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
        metrics.HTTP_LATENCY.labels(method, route).observe(seconds)
