"""The role matrix: every endpoint, called by every role, is refused (403) exactly for the roles
the permission table leaves out, and refused (401) without a login. A route missing from the
matrix fails the coverage test, so a new endpoint cannot ship unchecked."""
from __future__ import annotations

import pytest

from api.security import PERMISSIONS
from engine.registry.access import ROLES
from tests.api.support import AMINA, ROLE_USER

DATABASES = ["sqlite"]  # the permission table is checked before any query: no database behaviour (tests/conftest.py)

PUBLIC = {("GET", "/health"), ("GET", "/ready"), ("POST", "/auth/token"), ("POST", "/auth/login")}
ANY_ROLE = "any-role"
BAD_YAML = {"yaml": "protocol: t2dm-annual-care\nversion: 9.9.9\n"}  # invalid: allowed roles get 422, nothing published

# (method, path, permission, request kwargs)
MATRIX = [
    ("GET", "/auth/me", ANY_ROLE, {}),
    ("POST", "/auth/logout", ANY_ROLE, {}),
    ("GET", "/users", "users:manage", {}),
    ("POST", "/users", "users:manage", {"json": {"username": "clinical.lead", "password": "x" * 10, "role": "auditor"}}),
    ("PATCH", "/users/{username}", "users:manage", {"json": {"full_name": "Sam No-Scope"}}),
    ("GET", "/access-log", "accesslog:read", {}),
    ("POST", "/ingest/fhir", "ingest", {"json": {"resourceType": "Bundle", "type": "collection", "entry": [{}]}}),
    ("POST", "/ingest/records", "ingest", {"json": {"source": "matrix", "records": []}}),
    ("POST", "/ingest/bulk", "ingest:bulk", {"files": [("files", ("not-ndjson.txt", b"{}"))]}),
    ("POST", "/ingest/bulk/manifest", "ingest:bulk", {"json": {"output": []}}),
    ("GET", "/ingest/bulk/{run}", "ingest:bulk", {}),
    ("GET", "/patients", "patient:read", {}),
    ("GET", "/patients/{nhs}", "patient:read", {}),
    ("GET", "/patients/{nhs}/care-plan", "patient:read", {}),
    ("GET", "/patients/{nhs}/care-plan/plain", "patient:read", {}),
    ("GET", "/patients/{nhs}/tasks", "patient:read", {}),
    ("GET", "/patients/{nhs}/flags", "patient:read", {}),
    ("POST", "/patients/{nhs}/reevaluate", "patient:reevaluate", {}),
    ("GET", "/worklist", "worklist:read", {}),
    ("GET", "/worklist.csv", "worklist:read", {}),
    ("GET", "/tasks/{task}", "worklist:read", {}),
    ("POST", "/tasks/{task}/accept", "task:act", {}),
    ("POST", "/tasks/{task}/complete", "task:act", {"json": {"outcome": "done"}}),
    ("POST", "/tasks/{task}/decline", "task:act", {"json": {"reason": "matrix"}}),
    ("POST", "/tasks/{task}/reopen", "task:act", {}),
    ("POST", "/tasks/{task}/reassign", "task:act", {"json": {}}),
    ("GET", "/mdts", "mdt:read", {}),
    ("GET", "/mdts/{mdt}/case-conference", "mdt:read", {}),
    ("GET", "/mdts/{mdt}/outcomes", "mdt:read", {}),
    ("POST", "/mdts/{mdt}/outcomes", "mdt:write", {"json": {"nhs_number": AMINA, "meeting_date": "2026-01-01", "outcome": "x"}}),
    ("GET", "/audit/measures", "audit:read", {}),
    ("GET", "/audit/measures/{measure}/patients", "audit:drilldown", {}),
    ("POST", "/audit/snapshots", "audit:snapshot", {"json": {"as_of": "2025-03-31"}}),
    ("GET", "/audit/snapshots", "audit:read", {}),
    ("GET", "/audit/trend", "audit:read", {"params": {"measure": "DM020"}}),
    ("GET", "/protocols", "protocol:read", {}),
    ("GET", "/protocols/{protocol}", "protocol:read", {}),
    ("GET", "/protocols/{protocol}/source", "protocol:read", {}),
    ("GET", "/protocols/{protocol}/versions", "protocol:read", {}),
    ("POST", "/protocols/validate", "protocol:validate", {"json": BAD_YAML}),
    ("POST", "/protocols/impact", "protocol:impact", {"json": BAD_YAML}),
    ("POST", "/protocols/impact/runs", "protocol:impact", {"json": BAD_YAML}),
    ("GET", "/protocols/impact/runs/{run}", "protocol:impact", {}),
    ("POST", "/protocols/drafts", "protocol:publish", {"json": BAD_YAML}),
    ("GET", "/protocols/drafts", "protocol:publish", {}),
    ("POST", "/protocols/drafts/{draft}/approve", "protocol:publish", {}),
    ("GET", "/fhir/CarePlan", "patient:read", {"params": {"patient": AMINA}}),
    ("GET", "/fhir/Task", "patient:read", {"params": {"patient": AMINA}}),
    ("GET", "/fhir/Task/{task}", "patient:read", {}),
    ("GET", "/fhir/Flag", "patient:read", {"params": {"patient": AMINA}}),
    ("GET", "/fhir/MeasureReport", "patient:read", {"params": {"patient": AMINA}}),
    ("GET", "/fhir/MeasureReport/summary", "audit:read", {}),
    ("GET", "/metrics", "metrics:read", {}),
]

TEMPLATE = {"{nhs}": "{nhs_number}", "{task}": "{task_id}", "{mdt}": "{mdt}", "{measure}": "{measure}",
            "{protocol}": "{protocol_id}", "{username}": "{username}", "{run}": "{run_id}", "{draft}": "{draft_id}"}


def _openapi_form(path: str) -> str:
    for k, v in TEMPLATE.items():
        path = path.replace(k, v)
    return path


def test_matrix_covers_every_route(api):
    spec = api.client.get("/openapi.json").json()["paths"]
    routes = {(m.upper(), p) for p, ops in spec.items() for m in ops}
    covered = {(m, _openapi_form(p)) for m, p, _, _ in MATRIX} | PUBLIC
    assert routes - covered == set(), "endpoints missing from the role matrix"
    assert covered - routes == set(), "matrix names endpoints that do not exist"


@pytest.fixture(scope="module")
def amina_task(api):
    r = api.get("/worklist", params={"nhs_number": AMINA, "page_size": 500})
    return next(t["id"] for t in r.json()["items"] if t["kind"] == "activity" and "Smoking" in t["title"])


def _fill(path: str, task_id: int) -> str:
    return (path.replace("{nhs}", AMINA).replace("{task}", str(task_id)).replace("{mdt}", "central-1")
            .replace("{measure}", "DM020").replace("{protocol}", "t2dm-annual-care").replace("{username}", "staff.noscope")
            .replace("{run}", "999999").replace("{draft}", "999999"))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method,path,permission,kwargs", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_role_matrix(api, amina_task, role, method, path, permission, kwargs):
    url = _fill(path, amina_task)
    headers = api.as_role(role)
    if path == "/auth/logout":  # logging out ends the session it is called with: not the cached one
        headers = {"Authorization": f"Bearer {api.login(ROLE_USER[role])}"}
    r = api.client.request(method, url, headers=headers, **kwargs)
    allowed = permission == ANY_ROLE or role in PERMISSIONS[permission]
    if allowed:
        assert r.status_code not in (401, 403), f"{role} refused {method} {url}: {r.status_code} {r.text[:300]}"
        assert r.status_code < 500, r.text
    else:
        assert r.status_code == 403, f"{role} was not refused {method} {url}: {r.status_code} {r.text[:300]}"


@pytest.mark.parametrize("method,path,permission,kwargs", MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_every_endpoint_needs_a_login(api, amina_task, method, path, permission, kwargs):
    r = api.client.request(method, _fill(path, amina_task), **kwargs)
    assert r.status_code == 401
    assert r.headers.get("www-authenticate") == "Bearer"


def test_refusals_are_logged(api):
    api.get("/users", user="auditor")
    log = api.get("/access-log", user="admin", params={"action": "denied", "username": "auditor"}).json()
    assert log["total"] >= 1 and log["items"][0]["resource"] == "users:manage" and log["items"][0]["status"] == 403


# A role without the permission gets 403 (it may not use the endpoint at all). A role with the
# permission asking for a patient outside its scope gets 404, the same status and body as for an NHS
# number nobody has (tests/api/test_api_reidentification.py): whether a number is registered is not
# revealed to someone who may not see that patient.
@pytest.mark.parametrize("user,nhs,expected", [
    ("mdt.member", AMINA, 200),        # central-1 member, central-1 patient
    ("mdt.other", AMINA, 404),         # central-2 member: outside scope, as if absent
    ("practice.staff", AMINA, 200),    # A81001 staff, A81001 patient
    ("practice.other", AMINA, 404),    # A81003 staff
    ("staff.noscope", AMINA, 404),     # practice staff without a practice sees nobody
    ("lead.central", AMINA, 200),      # locality-scoped clinical lead
    ("clinical.lead", AMINA, 200),     # area-wide clinical lead
    ("auditor", AMINA, 403),           # no patient:read permission: never identifiable patient data
    ("admin", AMINA, 403),             # no patient:read permission: manages the service, not patients
])
def test_patient_scope(api, user, nhs, expected):
    assert api.get(f"/patients/{nhs}/care-plan", user=user).status_code == expected
    assert api.get("/fhir/CarePlan", user=user, params={"patient": nhs}).status_code == expected
    if expected == 404:
        absent = api.get("/patients/9000000033/care-plan", user=user)
        assert api.get(f"/patients/{nhs}/care-plan", user=user).json() == absent.json()


def test_scoped_lists_show_only_scoped_patients(api):
    staff = api.get("/patients", user="practice.staff").json()["items"]
    assert staff and {p["practice"] for p in staff} == {"A81001"}
    member = api.get("/worklist", user="mdt.other", params={"page_size": 500}).json()["items"]
    assert member and {t["mdt"] for t in member} == {"central-2"}
    assert api.get("/worklist", user="staff.noscope").json()["total"] == 0
    # an MDT member cannot open another MDT's case conference
    assert api.get("/mdts/central-1/case-conference", user="mdt.other").status_code == 403
    assert [m["mdt"] for m in api.get("/mdts", user="mdt.other").json()] == ["central-2"]
