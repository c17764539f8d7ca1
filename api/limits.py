"""Request limits, enforced before the body is read (a pure ASGI middleware, `RequestGuard`), and
limits on protocol YAML text, checked before it is parsed (`yaml_problem`).

For every HTTP request, in this order and before the application sees it:

1. A request that may carry a body (any method but GET / HEAD / OPTIONS, or any request that
   declares one) to anything but the login endpoints must carry a valid session: bearer token or
   session cookie, checked against the server-side session (api/sessions.py). Otherwise: 401 (web
   pages under /app: 303 to the login page) at once; the body is never read.
2. `Content-Length` above the limit: 413 at once. The limit is `CAREPATH_MAX_INGEST_BYTES`
   (default 32 MiB) for `/ingest/...`, `CAREPATH_MAX_BULK_BYTES` (default 1 GiB) for `/ingest/bulk` (NDJSON
   files, spooled to disk) and `CAREPATH_MAX_BODY_BYTES` (default 1 MiB) for the rest, the `$export`
   manifests of `/ingest/bulk/manifest` included.
3. The body is counted as it streams in (chunked bodies have no Content-Length): past the limit,
   413 at once and the rest is not read.
4. A JSON body (`application/json`, `...+json` or no content type) nested deeper than `CAREPATH_MAX_JSON_DEPTH`
   (default 64) arrays / objects: 400 as soon as the depth is seen, before any parsing.

Every response except the static files and the API docs gets `Cache-Control: no-store` and
`Pragma: no-cache`: API answers hold patient data and must not be kept by browsers or proxies.
"""
from __future__ import annotations

import json
import os
import re
import anyio

from api import sessions

MiB = 1024 * 1024
DEFAULT_MAX_BODY = 1 * MiB
DEFAULT_MAX_INGEST = 32 * MiB
DEFAULT_MAX_BULK = 1024 * MiB  # POST /ingest/bulk: NDJSON files, spooled to disk (api/bulk_ingest.py)
DEFAULT_MAX_JSON_DEPTH = 64

PUBLIC_POSTS = ("/auth/token", "/auth/login", "/app/login")   # no session yet: these log in
NO_BODY_METHODS = ("GET", "HEAD", "OPTIONS")
CACHEABLE_PREFIXES = ("/static/", "/docs", "/redoc", "/openapi.json")


def _env_int(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, "") or default)
    except ValueError:
        raise ValueError(f"{name} must be a whole number") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


class _Refused(Exception):
    """Raised into the application's body reading once the guard has answered."""


class JsonDepth:
    """Tracks the nesting depth of a JSON text fed in pieces (strings and escapes understood)."""

    TOKENS = re.compile(rb'[\[\]{}"\\]')

    def __init__(self, limit: int):
        self.limit, self.depth, self.in_string, self.escaped = limit, 0, False, False

    def feed(self, chunk: bytes) -> bool:
        """False once the depth went over the limit."""
        start = 0
        if self.escaped and chunk:  # the escape started at the end of the previous piece
            self.escaped, start = False, 1
        pos_skip = -1
        for m in self.TOKENS.finditer(chunk, start):
            pos = m.start()
            if pos == pos_skip:
                continue
            c = chunk[pos]
            if self.in_string:
                if c == 0x5C:  # backslash: the next byte is escaped
                    if pos + 1 >= len(chunk):
                        self.escaped = True
                    else:
                        pos_skip = pos + 1
                elif c == 0x22:
                    self.in_string = False
            elif c == 0x22:
                self.in_string = True
            elif c in (0x5B, 0x7B):
                self.depth += 1
                if self.depth > self.limit:
                    return False
            elif c in (0x5D, 0x7D):
                self.depth -= 1
        return True


class RequestGuard:
    """Pure ASGI middleware (no BaseHTTPMiddleware: nothing is buffered): see the module docstring."""

    def __init__(self, app, state, *, max_body: int | None = None, max_ingest: int | None = None,
                 max_json_depth: int | None = None, cookie_name: str = "carepath_session"):
        self.app, self.state, self.cookie_name = app, state, cookie_name
        self.max_body = max_body or _env_int("CAREPATH_MAX_BODY_BYTES", DEFAULT_MAX_BODY)
        self.max_ingest = max_ingest or _env_int("CAREPATH_MAX_INGEST_BYTES", DEFAULT_MAX_INGEST)
        self.max_json_depth = max_json_depth or _env_int("CAREPATH_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH)
        self.max_bulk = _env_int("CAREPATH_MAX_BULK_BYTES", DEFAULT_MAX_BULK)

    def limit_for(self, path: str) -> int:
        if path == "/ingest/bulk":
            return self.max_bulk
        if path == "/ingest/bulk/manifest":  # a small JSON manifest naming files on the server
            return self.max_body
        return self.max_ingest if path.startswith("/ingest/") else self.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", ()):
            headers[k.lower()] = v if k.lower() not in headers else headers[k.lower()] + b"," + v
        started = answered = False
        no_store = not path.startswith(CACHEABLE_PREFIXES)

        def with_no_store(hdrs: list) -> list:
            if not no_store:
                return hdrs
            names = {k.lower() for k, _ in hdrs}
            extra = [(b"cache-control", b"no-store")] if b"cache-control" not in names else []
            extra += [(b"pragma", b"no-cache")] if b"pragma" not in names else []
            return hdrs + extra

        async def guarded_send(message):
            nonlocal started
            if answered:  # the guard has answered already: drop the application's late answer
                return
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": with_no_store(list(message.get("headers", ())))}
            await send(message)

        async def answer(status: int, body: dict | None, extra_headers: list[tuple[bytes, bytes]] = ()):
            nonlocal answered
            if started or answered:
                return
            answered = True
            data = json.dumps(body).encode() if body is not None else b""
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close"), *extra_headers]
            await send({"type": "http.response.start", "status": status, "headers": with_no_store(hdrs)})
            await send({"type": "http.response.body", "body": data})

        declared = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        may_have_body = method not in NO_BODY_METHODS or chunked or (declared not in (None, b"0"))

        # 1. who is asking, before a single byte of the body is read
        if may_have_body and path not in PUBLIC_POSTS:
            token = self._token(headers)
            checked = await anyio.to_thread.run_sync(sessions.check, self.state, token)
            if checked.problem:
                if path == "/app" or path.startswith("/app/"):
                    await answer(303, None, [(b"location", b"/app/login?next=%2Fapp%2F")])
                else:
                    await answer(401, {"detail": checked.problem}, [(b"www-authenticate", b"Bearer")])
                return
            sessions.remember(scope, token, checked)  # the route's login dependency uses it (same request)

        # 2. the declared size
        limit = self.limit_for(path)
        if declared is not None:
            try:
                size = int(declared)
                if size < 0:
                    raise ValueError
            except ValueError:
                await answer(400, {"detail": "invalid Content-Length"})
                return
            if size > limit:
                await answer(413, {"detail": f"request body too large: {size} bytes, at most {limit} here"})
                return

        # 3./4. the streamed size and, for JSON, the nesting depth
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        # FastAPI parses a body without a content type as JSON too
        is_json = ctype in (b"", b"application/json") or (ctype.startswith(b"application/") and ctype.endswith(b"+json"))
        depth = JsonDepth(self.max_json_depth) if is_json else None
        received = 0

        async def guarded_receive():
            nonlocal received
            if answered:
                raise _Refused()
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    await answer(413, {"detail": f"request body too large: over {limit} bytes here"})
                    raise _Refused()
                if depth is not None and chunk and not depth.feed(chunk):
                    await answer(400, {"detail": f"request body nested too deeply: more than {self.max_json_depth} "
                                                 "levels of arrays / objects"})
                    raise _Refused()
            return message

        try:
            await self.app(scope, guarded_receive if may_have_body else receive, guarded_send)
        except _Refused:
            if not answered:
                raise
        except Exception:
            if not answered:  # the application's own failure, not one we caused by refusing
                raise

    def _token(self, headers: dict[bytes, bytes]) -> str | None:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raw = headers.get(b"cookie")
        if raw:
            from starlette.requests import cookie_parser
            return cookie_parser(raw.decode("latin-1")).get(self.cookie_name) or None
        return None


# ---- protocol YAML text --------------------------------------------------------------------------------
from engine.language.yaml_limits import (MAX_YAML_ALIASES, MAX_YAML_BLOCK_DEPTH, MAX_YAML_CHARS,  # noqa: E402,F401
                                          MAX_YAML_FLOW_DEPTH, MAX_YAML_LINES, yaml_problem)


