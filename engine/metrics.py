"""Prometheus metrics of the service and the loaders (prometheus-client), one set per process.

Served by the API at `GET /metrics` (api/operations.py: a metrics token or an admin session). The
names, all prefixed `carepath_`:

- `http_requests_total{method, route, status}` and `http_request_duration_seconds{method, route}`:
  by route *template* (`/patients/{nhs_number}`), never the raw path, so NHS numbers never become
  label values and the number of series stays bounded; a path no route matches is `<unmatched>`.
- `ingest_deliveries_total{way, outcome}`: deliveries (`fhir`, `records`, `bulk`) `accepted` or
  `refused`; `ingest_records_total{way, outcome}`: patient records in them; `ingest_facts_total{change}`:
  facts `added` / `updated` / `unchanged`.
- `ingest_bulk_lines_total{outcome}`: NDJSON lines `loaded`, `refused`, `skipped` (a supported resource
  with nothing usable) or `unsupported` (a resource type carepath does not import).
- `evaluations_total{outcome}` (`evaluated`, `data-problem`, `pending`: the database stayed busy) and
  `evaluation_duration_seconds`: one patient's re-evaluation; `evaluation_conflicts_total`: evaluations read and
  done again because the record changed between their read and their write (engine/app/service.py); `protocol_results_total{how}`: per protocol,
  `derived` afresh or `reused` (its inputs' digest unchanged, engine/app/service.py).
- `login_failures_total{reason}`: `refused` (wrong username or password, disabled) or `throttled`.
- `evaluation_backlog` (patients marked in `pending_evaluation`) and `data_problems_open`: read from the
  database when scraped.
- prometheus-client's own process metrics (CPU, resident memory, open files) and Python GC metrics.

With several worker processes (`carepath serve --workers N`) set `PROMETHEUS_MULTIPROC_DIR` to an
empty folder (wiped before each start): the counters are then kept in files there and a scrape of any
worker sums every worker's (prometheus-client's multiprocess mode). Without it, each worker counts
its own and a scrape sees the worker that answered.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter("carepath_http_requests", "HTTP requests answered, by route template and status",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("carepath_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
                         ["method", "route"], buckets=LATENCY_BUCKETS)
INGEST_DELIVERIES = Counter("carepath_ingest_deliveries", "Ingest deliveries accepted or refused", ["way", "outcome"])
INGEST_RECORDS = Counter("carepath_ingest_records", "Patient records in ingest deliveries, accepted or refused",
                         ["way", "outcome"])
INGEST_FACTS = Counter("carepath_ingest_facts", "Facts of accepted deliveries: added, updated or unchanged", ["change"])
BULK_LINES = Counter("carepath_ingest_bulk_lines", "NDJSON lines of bulk ingest: loaded, refused, skipped, unsupported",
                     ["outcome"])
EVALUATIONS = Counter("carepath_evaluations", "Patient re-evaluations by outcome", ["outcome"])
EVALUATION_CONFLICTS = Counter("carepath_evaluation_conflicts", "Evaluations read again because the record changed "
                               "between their read and their write (optimistic check)")
EVALUATION_LATENCY = Histogram("carepath_evaluation_duration_seconds", "Time to re-evaluate one patient and store it",
                               buckets=LATENCY_BUCKETS)
PROTOCOL_RESULTS = Counter("carepath_protocol_results", "Per-protocol results of re-evaluations: derived or reused",
                           ["how"])
LOGIN_FAILURES = Counter("carepath_login_failures", "Failed logins: refused (wrong password ...) or throttled", ["reason"])
EVALUATION_BACKLOG = Gauge("carepath_evaluation_backlog", "Patients marked for evaluation (pending_evaluation)",
                           multiprocess_mode="livemostrecent")
DATA_PROBLEMS_OPEN = Gauge("carepath_data_problems_open", "Patients' open data problems (failed evaluations)",
                           multiprocess_mode="livemostrecent")


def count_ingest(way: str, summary=None, *, refused_records: int = 0) -> None:
    """An ingest delivery: accepted with its `IngestSummary`, or refused with how many records it held."""
    if summary is None:
        INGEST_DELIVERIES.labels(way, "refused").inc()
        INGEST_RECORDS.labels(way, "refused").inc(refused_records)
        return
    INGEST_DELIVERIES.labels(way, "accepted").inc()
    INGEST_RECORDS.labels(way, "accepted").inc(len(summary.patients))
    for change in ("added", "updated", "unchanged"):
        INGEST_FACTS.labels(change).inc(getattr(summary, change))


def exposition() -> bytes:
    """The text exposition of this process's metrics (of every worker's in multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)
