"""What answered an HTTP request, and how: the one preamble of the middlewares that watch every request.

- `ObservedRequest`: a pure ASGI middleware base (no BaseHTTPMiddleware: nothing is buffered). For each HTTP
  request it notes the status the app answers with (500 when the app fails before answering) and the time
  taken, and once the request is over calls `finished(scope, method, route, status, seconds, begun)`, with
  the route template that answered. A subclass may act when the request begins (`begin`, whose result is
  `begun`) and change the response's start message (`response_start`). Used by api/operations.py's
  `RequestMetrics` and api/request_log.py's `RequestId`.
- `route_template(app, scope)`: `/patients/{nhs_number}`, never the raw path (so no NHS number reaches a
  metric or the log); `<unmatched>` when no route matches.
"""
from __future__ import annotations

import time

from starlette.routing import Match, Mount

UNMATCHED = "<unmatched>"


def _matching_route(routes, scope):
    for candidate in routes:
        inner = getattr(candidate, "original_router", None)  # FastAPI's wrapper of an included router
        if inner is not None:
            found = _matching_route(inner.routes, scope)
            if found is not None:
                return found
            continue
        try:
            match, child = candidate.matches(scope)
        except Exception:  # noqa: BLE001 - a route that cannot judge this scope
            continue
        if match in (Match.FULL, Match.PARTIAL):
            return child.get("route") or candidate
    return None


def route_template(app, scope) -> str:
    """The template of the route that answered (`/patients/{nhs_number}`), `<unmatched>` if none.
    When the request guard answered before routing, the routes are matched here."""
    route = scope.get("route")
    if route is None and app is not None:
        route = _matching_route(app.router.routes, {**scope, "type": "http", "app": app})
    if route is None:
        return UNMATCHED
    path = getattr(route, "path", None) or UNMATCHED
    if isinstance(route, Mount):
        path = path.rstrip("/") + "/{path}"
    return path


class ObservedRequest:
    """Pure ASGI middleware base: see the module docstring. Other scopes (lifespan, websocket) pass through."""

    def __init__(self, app, fastapi_app=None):
        self.app = app
        self.fastapi_app = fastapi_app

    def begin(self, scope):
        """Called as an HTTP request begins; what it returns is handed to response_start and finished."""
        return None

    def response_start(self, message: dict, begun) -> dict:
        """The `http.response.start` message to send (this one, or a changed copy)."""
        return message

    def finished(self, scope, method: str, route: str, status: int, seconds: float, begun) -> None:
        """Called once the request is over (answered, failed or cancelled)."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        begun = self.begin(scope)
        status = {"code": 500}
        started = time.perf_counter()

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = self.response_start(message, begun)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.finished(scope, scope.get("method", "GET"), route_template(self.fastapi_app, scope), status["code"],
                          time.perf_counter() - started, begun)
