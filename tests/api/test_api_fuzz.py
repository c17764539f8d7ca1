"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis + hypothesis):
whatever the input, the service answers without a server error, and every answer conforms to the
schema it publishes: a documented status code, the documented content type, a body matching the
documented schema for that code, the documented headers (schemathesis's conformance checks).
Valid and invalid requests (schemathesis's positive and negative generation). Bounded: a few
derandomized examples per operation (CAREPATH_FUZZ_EXAMPLES, default 6; set it higher for a one-off
sweep by hand, or use tests/api/fuzz_sweep.py, which counts failures instead of stopping at the
first), as a clinical lead (most operations allowed) or an admin
(ingest, users, access log), so the run is repeatable and takes seconds.

(schemathesis's own pytest integration, `from_fixture`, does not work with pytest 9, so the
operations are enumerated here: the role matrix's list, which its coverage test proves complete.)
"""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from tests.api.support import _pg_schema, close_api, copy_protocols, make_api
from tests.api.test_api_roles import MATRIX, PUBLIC, _openapi_form

OPERATIONS = sorted({(m, _openapi_form(p)) for m, p, _, _ in MATRIX} | PUBLIC)
ADMIN_PATHS = ("/users", "/ingest", "/access-log")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
EXAMPLES = int(os.environ.get("CAREPATH_FUZZ_EXAMPLES", "6"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_api(request, tmp_path_factory):
    """A seeded service of its own: fuzzed writes (task actions, outcomes, users ...) must not
    change what the other tests see."""
    if request.param == "sqlite":
        urls = iter([f"sqlite:///{tmp_path_factory.mktemp('fuzz-db') / 'carepath.db'}"])
    else:
        urls = _pg_schema(request.getfixturevalue("postgres_base_url"))
    url = next(urls)
    a = make_api(url, copy_protocols(tmp_path_factory.mktemp("fuzz-protocols")))
    yield a
    close_api(a)
    next(urls, None)  # drops the PostgreSQL schema


@pytest.fixture(scope="module")
def schema(fuzz_api):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_api.client.app)


@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_conforms(fuzz_api, schema, method, path):
    api = fuzz_api
    operation = schema[path][method]
    headers = api.h("admin" if path.startswith(ADMIN_PATHS) else "clinical.lead")

    # valid requests (the operation's own answers) and invalid ones (what the validation and the guard answer)
    cases = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        call_headers = headers
        if path == "/auth/logout":  # keep the shared tokens valid: log out of a session of its own
            case.query = {**(case.query or {}), "everywhere": "false"}
            call_headers = {"Authorization": f"Bearer {api.login('clinical.lead')}"}
        case.call_and_validate(headers=call_headers, checks=CHECKS)

    run()
