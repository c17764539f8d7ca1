"""A larger schemathesis sweep, by hand (not collected by pytest): every operation, N derandomized
examples each, every response checked by each conformance check separately, failures counted
rather than raised. Prints requests sent, server errors, schema violations, undocumented status
codes, wrong content types / headers, and the first few of each.

    PYTHONPATH=. python -m tests.api.fuzz_sweep --examples 50 --db sqlite [--db postgresql]

(PostgreSQL: CAREPATH_TEST_POSTGRES_URL=postgresql+psycopg://...)
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from tests.api.support import _pg_schema, close_api, copy_protocols, make_api
from tests.api.test_api_fuzz import ADMIN_PATHS, OPERATIONS

CHECKS = {"server errors": not_a_server_error, "undocumented status codes": status_code_conformance,
          "schema violations": response_schema_conformance, "content type": content_type_conformance,
          "headers": response_headers_conformance}


def sweep(url: str, examples: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-sweep-"))
    api = make_api(url, copy_protocols(tmp / "protocols"))
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    sent = 0
    failures: dict[str, collections.Counter] = {k: collections.Counter() for k in CHECKS}
    try:
        for method, path in OPERATIONS:
            operation = schema[path][method]
            headers = api.h("admin" if path.startswith(ADMIN_PATHS) else "clinical.lead")

            @given(case=st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                                  operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)))
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                nonlocal sent
                call_headers = headers
                if path == "/auth/logout":
                    case.query = {**(case.query or {}), "everywhere": "false"}
                    call_headers = {"Authorization": f"Bearer {api.login('clinical.lead')}"}
                response = case.call(headers=call_headers)
                sent += 1
                for name, check in CHECKS.items():
                    try:
                        case.validate_response(response, checks=[check], headers=call_headers)
                    except KeyboardInterrupt:
                        raise
                    except BaseException as exc:  # noqa: BLE001 - counting, not judging
                        first = str(exc).strip().splitlines()
                        failures[name][f"{method} {path} {response.status_code}: {' '.join(first[:3])[:200]}"] += 1

            run()
    finally:
        close_api(api)
    print(f"{url.split(':')[0]}: {sent} requests, {examples} examples per operation, {len(OPERATIONS)} operations")
    for name, c in failures.items():
        print(f"  {name}: {sum(c.values())}")
        for k, n in c.most_common(12):
            print(f"      {n:4d} × {k}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=50)
    p.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    args = p.parse_args()
    for db in args.db or ["sqlite"]:
        if db == "sqlite":
            sweep(f"sqlite:///{tempfile.mkdtemp(prefix='fuzz-db-')}/carepath.db", args.examples)
        else:
            urls = _pg_schema(os.environ["CAREPATH_TEST_POSTGRES_URL"])
            sweep(next(urls), args.examples)
            next(urls, None)


if __name__ == "__main__":
    main()
