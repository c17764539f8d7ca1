"""Request ids and the service's log lines (issue 17 item 4).

- `RequestId` (pure ASGI middleware, outermost): every HTTP request gets an id: the caller's
  `X-Request-ID` when it is 1-128 characters of letters, digits and `._:-` (a load balancer's or the
  sender's own), else a new one (32 hex digits). It is sent back as `X-Request-ID`, kept in a context
  variable for the request (copied into the threads FastAPI runs endpoints in), and ends the request
  with one access line on the `carepath.access` logger: method, route *template* (`/patients/{nhs_number}`,
  never the raw path, so no NHS number reaches the log), status and milliseconds.
- `RequestIdFilter` puts `request_id` on every log record (`-` outside a request: the background drain,
  start-up), so each line carepath logs while answering a request names it.
- `log_config(fmt)`: the logging configuration `carepath serve --log-format json|text` hands uvicorn:
  `json` is one JSON object per line (`time`, `level`, `logger`, `message`, `request_id`, the access
  fields, `exc_info`); `text` the same fields as plain text.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid

from api.observed_request import ObservedRequest

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("carepath_request_id", default=None)
HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")
access_log = logging.getLogger("carepath.access")


def request_id_from(value: str | None) -> str:
    """The caller's id when it is acceptable, else a new one."""
    if value and _VALID.match(value):
        return value
    return uuid.uuid4().hex


class RequestId(ObservedRequest):
    """Pure ASGI middleware: the request id (module doc) and one access line per request."""

    def begin(self, scope):
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"x-request-id"), None)
        rid = request_id_from(given)
        return rid, REQUEST_ID.set(rid)

    def response_start(self, message: dict, begun) -> dict:
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
        return {**message, "headers": headers + [(b"x-request-id", begun[0].encode("latin-1"))]}

    def finished(self, scope, method: str, route: str, status: int, seconds: float, begun) -> None:
        access_log.info("%s %s %s", method, route, status,
                        extra={"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 1)})
        REQUEST_ID.reset(begun[1])


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (a handler filter, so records of every logger get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage(),
               "request_id": getattr(record, "request_id", None) or REQUEST_ID.get() or "-"}
        for key in ACCESS_FIELDS:
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
FORMATS = ("json", "text")


def log_config(fmt: str = "text", level: str = "INFO") -> dict:
    """A logging.config.dictConfig for uvicorn and carepath: every line on standard error with its request id."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    formatter = {"()": "api.request_log.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "carepath",
               "filters": ["request_id"]}
    return {"version": 1, "disable_existing_loggers": False,
            "filters": {"request_id": {"()": "api.request_log.RequestIdFilter"}},
            "formatters": {"carepath": formatter},
            "handlers": {"stderr": handler, "none": {"class": "logging.NullHandler"}},
            "root": {"handlers": ["stderr"], "level": level},
            "loggers": {"uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
                        "uvicorn.error": {"level": level},
                        "alembic": {"level": "WARNING"},  # each worker's start-up check of the migrations: quiet
                        # uvicorn's own access lines carry raw paths (NHS numbers) and no request id: off;
                        # carepath.access has the route template and the id instead.
                        "uvicorn.access": {"handlers": ["none"], "propagate": False}}}
