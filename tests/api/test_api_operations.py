"""Operating the service (api/operations.py, engine/metrics.py): /health (liveness), /ready
(database, migrations, evaluation backlog) and /metrics (Prometheus: token or admin), against the
real app on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlmodel import Session, func, select

from engine.registry.pending import PendingEvaluationRow
from tests.api.support import AMINA, close_api, copy_protocols, make_api

TOKEN = "metrics-token-for-the-tests-0123456789"


def samples(body: str) -> dict[tuple, float]:
    """(sample name, sorted label items) -> value."""
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(api) -> dict:
    r = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


@pytest.fixture
def metrics_token(monkeypatch):
    monkeypatch.setenv("CAREPATH_METRICS_TOKEN", TOKEN)


def test_health_needs_no_login_and_no_database(api):
    r = api.client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert AMINA not in r.text


def test_ready_reports_database_migration_and_backlog(api):
    r = api.client.get("/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["database_reachable"] is True and body["problems"] == []
    assert body["migration"] == body["migration_head"] and body["migration_head"]
    with Session(api.state.engines.read) as s:
        backlog = s.exec(select(func.count()).select_from(PendingEvaluationRow)).one()
    assert body["evaluation_backlog"] == backlog
    assert body["database"] == api.state.engines.read.dialect.name


def test_ready_says_not_ready_when_the_schema_is_behind(db_url, tmp_path):
    """A registry whose schema is one migration behind: 503 and why (the service itself was made
    without migrating, as a second worker started before the upgrade would be)."""
    from engine.registry import db

    a = make_api(db_url, copy_protocols(tmp_path / "protocols"), seed=False)
    try:
        e = a.state.engines.write
        head = a.client.get("/ready").json()["migration_head"]
        with e.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        r = a.client.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "not-ready" and body["migration"] == "0001" and body["migration_head"] == head
        assert any("0001" in p and head in p for p in body["problems"])
        with e.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
        assert a.client.get("/ready").status_code == 200
        assert db.current_revision(e) == head
    finally:
        close_api(a)


def test_ready_says_not_ready_when_the_database_is_gone(tmp_path):
    a = make_api(f"sqlite:///{tmp_path / 'gone.db'}", copy_protocols(tmp_path / "protocols"), seed=False)
    try:
        a.state.engines.read.dispose()
        (tmp_path / "gone.db").unlink()
        (tmp_path / "gone.db").mkdir()  # the file is gone and cannot be made again: not reachable
        r = a.client.get("/ready")
        assert r.status_code == 503
        assert r.json()["database_reachable"] is False and r.json()["problems"]
        assert a.client.get("/health").status_code == 200  # alive all the same
    finally:
        close_api(a)


def test_metrics_need_the_token_or_an_admin(api, metrics_token):
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
    assert api.get("/metrics", user="clinical.lead").status_code == 403
    assert api.get("/metrics", user="auditor").status_code == 403
    assert api.get("/metrics", user="admin").status_code == 200
    assert api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_without_a_token_configured_only_admins(api, monkeypatch):
    monkeypatch.delenv("CAREPATH_METRICS_TOKEN", raising=False)
    assert api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert api.get("/metrics", user="admin").status_code == 200


def test_a_short_metrics_token_stops_the_start(monkeypatch, tmp_path):
    monkeypatch.setenv("CAREPATH_METRICS_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16"):
        make_api(f"sqlite:///{tmp_path / 'x.db'}", copy_protocols(tmp_path / "protocols"), seed=False)


def test_requests_are_counted_by_route_template(api, metrics_token):
    before = scrape(api)
    for _ in range(3):
        assert api.get(f"/patients/{AMINA}").status_code == 200
    assert api.client.get("/no/such/page").status_code == 404
    after = scrape(api)
    route = dict(method="GET", route="/patients/{nhs_number}")
    assert value(after, "carepath_http_requests_total", status="200", **route) - \
        value(before, "carepath_http_requests_total", status="200", **route) == 3
    assert value(after, "carepath_http_request_duration_seconds_count", **route) - \
        value(before, "carepath_http_request_duration_seconds_count", **route) == 3
    assert value(after, "carepath_http_requests_total", method="GET", route="<unmatched>", status="404") >= 1
    raw = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert AMINA not in raw and "/no/such/page" not in raw  # raw paths never become label values


def test_guard_refusals_are_counted_under_their_route(api, metrics_token):
    before = scrape(api)
    r = api.client.post("/ingest/records", json={"source": "x", "records": []})  # no session: the guard's 401
    assert r.status_code == 401
    after = scrape(api)
    labels = dict(method="POST", route="/ingest/records", status="401")
    assert value(after, "carepath_http_requests_total", **labels) - value(before, "carepath_http_requests_total", **labels) == 1


def test_login_failures_ingest_and_evaluations_are_counted(fresh_api, metrics_token):
    api = fresh_api
    from engine.synthetic.demo import demo_records

    before = scrape(api)
    assert api.client.post("/auth/token", data={"username": "clinical.lead", "password": "wrong-password"}).status_code == 401
    records = [r.model_dump(mode="json") for r in demo_records(api.clock().date())[:2]]
    r = api.post("/ingest/records", user="admin", json={"source": "ops-test", "records": records})
    assert r.status_code == 200, r.text
    evaluated = len(r.json()["evaluated"])
    assert evaluated == 2
    twice = {"source": "ops-test", "records": [records[0], records[0]]}
    assert api.post("/ingest/records", user="admin", json=twice).status_code == 422
    after = scrape(api)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("carepath_login_failures_total", reason="refused") == 1
    assert delta("carepath_ingest_deliveries_total", way="records", outcome="accepted") == 1
    assert delta("carepath_ingest_records_total", way="records", outcome="accepted") == 2
    assert delta("carepath_ingest_deliveries_total", way="records", outcome="refused") == 1
    assert delta("carepath_ingest_records_total", way="records", outcome="refused") == 2
    assert delta("carepath_ingest_facts_total", change="added") == sum(len(x["facts"]) for x in records)
    assert delta("carepath_evaluations_total", outcome="evaluated") == evaluated
    assert delta("carepath_evaluation_duration_seconds_count") == evaluated
    assert delta("carepath_protocol_results_total", how="derived") >= evaluated
    assert value(after, "carepath_evaluation_backlog") == 0


def test_backlog_gauge_follows_the_outbox(fresh_api, metrics_token):
    api = fresh_api
    from engine.synthetic.demo import demo_records
    from engine.registry.ingest import ingest_records

    api.state.drainer.stop()  # nobody drains: the marks stay
    ingest_records(api.state.engines.write, demo_records(api.clock().date())[:3], source="ops-test")
    assert value(scrape(api), "carepath_evaluation_backlog") == 3
    assert api.client.get("/ready").json()["evaluation_backlog"] == 3
