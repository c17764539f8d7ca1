"""What the OpenAPI schema promises about timestamps and error bodies holds (issue 14 item 10):
every timestamp in a JSON answer is RFC 3339 with a zone (`Z`), while the CSV export keeps its own
format; a timestamp read from the API can be sent back as a filter; every 422 body is the service's
own ErrorOut shape, which is what the schema documents (FastAPI's HTTPValidationError appears nowhere)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re

from tests.api.support import AMINA

ZONED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def _timestamps(obj, key=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _timestamps(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _timestamps(v, key)
    elif isinstance(obj, str) and re.match(r"^\d{4}-\d{2}-\d{2}T", obj):
        yield key, obj


def test_every_timestamp_in_json_answers_has_a_zone(api):
    answers = [api.get("/auth/me"), api.get("/users", user="admin"), api.get("/access-log", user="admin"),
               api.get("/worklist", params={"page_size": 20}), api.get(f"/patients/{AMINA}/care-plan"),
               api.get(f"/patients/{AMINA}/flags"), api.get("/mdts/central-1/case-conference"),
               api.get("/protocols/t2dm-annual-care/versions")]
    found = {}
    for r in answers:
        assert r.status_code == 200, r.text
        for key, value in _timestamps(r.json()):
            found[key] = value
            assert ZONED.match(value), f"{r.url}: {key}={value!r} has no zone"
    # the fields the review saw without a zone are among those checked
    assert {"at", "last_login_at", "created_at", "raised_at", "due", "updated_at", "evaluated_at",
            "generated_at"} <= set(found), sorted(found)


def test_csv_export_keeps_its_format(api):
    rows = list(csv.DictReader(io.StringIO(api.get("/worklist.csv").text)))
    assert rows and all(re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$", r["due"]) for r in rows)


def test_a_timestamp_from_the_api_is_a_valid_filter(api):
    newest = api.get("/access-log", user="admin", params={"limit": 1}).json()["items"][0]
    at = dt.datetime.fromisoformat(newest["at"].replace("Z", "+00:00"))
    same_instant_elsewhere = at.astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()
    for since in (newest["at"], same_instant_elsewhere):
        items = api.get("/access-log", user="admin", params={"since": since, "limit": 1000}).json()["items"]
        assert newest["id"] in [i["id"] for i in items], since
    later = (at + dt.timedelta(minutes=30)).astimezone(dt.timezone(dt.timedelta(hours=1))).isoformat()
    assert newest["id"] not in [i["id"] for i in api.get("/access-log", user="admin", params={"since": later}).json()["items"]]


def test_422_bodies_are_the_documented_error_shape(api):
    spec = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "422" in op["responses"]:
                schema = op["responses"]["422"]["content"]["application/json"]["schema"]
                refs = [schema.get("$ref")] + [s.get("$ref") for s in schema.get("anyOf", [])]
                assert "#/components/schemas/ErrorOut" in refs, f"{method} {path}"
    r = api.get("/worklist", params={"page": "zero"})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"detail", "errors"} and body["errors"][0]["message"].startswith("query:")
