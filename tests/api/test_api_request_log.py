"""Request ids and structured logs (issue 17 item 4): X-Request-ID accepted or generated and sent back;
every log line written while answering a request names it, the endpoint's threads included; one access
line per request with the route template (no NHS number); `carepath serve --log-format json|text`."""
from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys

from typer.testing import CliRunner

from api.request_log import JsonFormatter, RequestIdFilter
from engine.app import service
from tests.api.test_api_concurrency import NHS, delivery

DATABASES = ["sqlite"]  # request ids and log lines: no database behaviour (tests/conftest.py)

ROOT_LOGGER = logging.getLogger()


def capture():
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    return buf, handler


def test_request_id_generated_or_taken_from_the_caller(api):
    r = api.client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-ID"])
    assert api.client.get("/health").headers["X-Request-ID"] != r.headers["X-Request-ID"]  # one per request
    assert api.client.get("/health", headers={"X-Request-ID": "lb-7f3a:42"}).headers["X-Request-ID"] == "lb-7f3a:42"
    for bad in ("x" * 129, "two words", "semi;colon", "<script>"):  # not taken: a new id instead
        got = api.client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert got != bad and re.fullmatch(r"[0-9a-f]{32}", got)
    refused = api.client.get("/patients/9434765919/care-plan", headers={"X-Request-ID": "abc-1"})  # no login: refused early
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "abc-1"


def test_every_log_line_of_a_request_names_it(fresh_api, monkeypatch):
    real = service.evaluate

    def logging_evaluate(*args, **kwargs):  # a line written in the endpoint's worker thread, mid-request
        logging.getLogger("carepath.evaluate").warning("evaluating for the test")
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "evaluate", logging_evaluate)
    headers = {**fresh_api.h("admin"), "X-Request-ID": "feed-0001"}
    buf, handler = capture()
    ROOT_LOGGER.addHandler(handler)
    old_level = ROOT_LOGGER.level
    ROOT_LOGGER.setLevel(logging.INFO)
    try:
        r = fresh_api.client.post("/ingest/records", headers=headers, json=delivery(0))
    finally:
        ROOT_LOGGER.removeHandler(handler)
        ROOT_LOGGER.setLevel(old_level)
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "feed-0001"
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    ours = [x for x in lines if x["message"] == "evaluating for the test"]
    access = [x for x in lines if x["logger"] == "carepath.access" and x.get("route") == "/ingest/records"]
    assert ours and all(x["request_id"] == "feed-0001" for x in ours)
    assert len(access) == 1 and access[0]["request_id"] == "feed-0001"
    assert access[0]["status"] == 200 and access[0]["method"] == "POST" and access[0]["duration_ms"] > 0
    fresh_api.client.get(f"/patients/{NHS}/care-plan", headers=fresh_api.h("clinical.lead"))
    assert NHS not in buf.getvalue()  # route templates, never the raw path


def test_serve_log_formats(tmp_path):
    script = ("import logging, logging.config\n"
              "from api.request_log import log_config, REQUEST_ID\n"
              "logging.config.dictConfig(log_config(FMT))\n"
              "REQUEST_ID.set('r-1')\n"
              "logging.getLogger('carepath.api').warning('hello %s', 'world')\n"
              "REQUEST_ID.set(None)\n"
              "logging.getLogger('uvicorn.access').warning('raw path /patients/9434765919')\n"
              "logging.getLogger('carepath.evaluate').info('outside a request')\n")
    out = subprocess.run([sys.executable, "-c", script.replace("FMT", "'json'")], capture_output=True, text=True, check=True)
    lines = [json.loads(x) for x in out.stderr.splitlines()]
    assert [(x["logger"], x["message"], x["request_id"], x["level"]) for x in lines] == [
        ("carepath.api", "hello world", "r-1", "WARNING"), ("carepath.evaluate", "outside a request", "-", "INFO")]
    out = subprocess.run([sys.executable, "-c", script.replace("FMT", "'text'")], capture_output=True, text=True, check=True)
    assert re.search(r"WARNING carepath.api \[r-1\] hello world", out.stderr) and "9434765919" not in out.stderr
    from cli.main import app
    bad = CliRunner().invoke(app, ["serve", "--log-format", "xml", "--database-url", f"sqlite:///{tmp_path / 'x.db'}"])
    assert bad.exit_code == 2 and "use json or text" in bad.output
