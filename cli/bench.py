"""`carepath bench ...`: the benchmarks in benchmarks/ (not part of the test run)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cli.authoring import _date
from cli.common import console, err


bench_app = typer.Typer(help="Benchmarks (not part of the test run); results go to benchmarks/results/.",
                        no_args_is_help=True)


@bench_app.command("batch")
def bench_batch(patients: int = typer.Option(10000, "--patients"), seed: int = typer.Option(1, "--seed"),
                as_of: str = typer.Option("2026-04-30", "--as-of"),
                workers: Optional[int] = typer.Option(None, "--workers"),
                protocol: str = typer.Option("t2dm-annual-care", "--protocol"),
                durable_sample: int = typer.Option(2000, "--durable-sample", help="Patients run through durable-rules too"),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """The batch engine over a synthetic population, with the plain-Python reference and a durable-rules sample."""
    from benchmarks.bench_batch import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), workers, protocol, durable_sample,
                    log=lambda m: err.print(m, highlight=False))
    if as_json:
        print(json.dumps(out))
        return
    console.print(f"{out['patients']} patients: batch {out['seconds']} s ({out['patients_per_second']}/s), "
                  f"plain Python {out.get('reference_seconds')} s, peak RSS {out['peak_rss_mib']} MiB; "
                  f"written to {out.get('written')}", highlight=False)


def _bench_out(out: dict, as_json: bool, line: str) -> None:
    if as_json:
        print(json.dumps(out))
    else:
        console.print(f"{line}; written to {out.get('written')}", highlight=False)


@bench_app.command("population")
def bench_population(patients: int = typer.Option(750000, "--patients"), seed: int = typer.Option(1, "--seed"),
                     as_of: str = typer.Option("2026-11-20", "--as-of"),
                     workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: CPUs)"),
                     chunk: Optional[int] = typer.Option(None, "--chunk", help="Default: as evaluate-population (balanced, at most 31,250)"),
                     scaling: str = typer.Option("10000,100000", "--scaling", help="Smaller runs for the growth figures"),
                     reference_sample: int = typer.Option(1000, "--reference-sample"),
                     as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """P1 (every protocol over the population, persisted), scaling, and P4 (one measure by practice)."""
    from benchmarks.bench_population import run as run_bench

    sizes = tuple(int(x) for x in scaling.split(",") if x.strip())
    out = run_bench(patients, seed, _date(as_of, "--as-of"), workers, chunk, sizes, reference_sample,
                    log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"P1 {out['p1']['patients']} patients x {out['p1']['protocols']} protocols: "
               f"{out['p1']['seconds']} s, peak RSS {out['p1']['peak_rss_mib']} MiB; P4 {out['p4']['seconds_best']} s")


@bench_app.command("p5")
def bench_p5(patients: int = typer.Option(200000, "--patients"),
             python: Optional[str] = typer.Option(None, "--python", help="A Python with numpy, polars, pyarrow, psutil "
                                                  "for the reference's files (default: this one, else /tmp/perfref)"),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """P5: the compiled batch engine against the hand-written DuckDB query (perf-reference), same protocol and data."""
    from benchmarks.bench_p5 import run as run_bench

    out = run_bench(patients, python, log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"P5 {out['patients']} patients: hand-written {out['hand_written']['patients_per_s']}/s, "
                             f"compiled {out['compiled']['patients_per_s']}/s, ratio {out['ratio']} (target "
                             f"{out['target']}), mismatches {out['agreement']['mismatches']}")


@bench_app.command("episodes")
def bench_episodes(patients: int = typer.Option(20000, "--patients"), seed: int = typer.Option(1, "--seed"),
                   protocol: str = typer.Option("ecqm-cms22-bp-screening", "--protocol"),
                   rounds: int = typer.Option(2, "--rounds", help="Each way this many times, alternating"),
                   data: Optional[Path] = typer.Option(None, "--data", help="A population folder (default: generated)"),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """Measures counted per episode: one query over (patient, episode) rows vs one query per episode."""
    from benchmarks.bench_episodes import run as run_bench

    out = run_bench(patients, seed, protocol, rounds, data_dir=data, log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"{out['protocol']} over {out['patients']} patients: CPU {out['per_episode']['cpu_best']} s "
                             f"per episode -> {out['episode_rows']['cpu_best']} s in (patient, episode) rows")


@bench_app.command("spark")
def bench_spark(patients: int = typer.Option(750000, "--patients", help="The population (generated once, cached)"),
                seed: int = typer.Option(1, "--seed"), as_of: str = typer.Option("2026-11-20", "--as-of"),
                chunk: Optional[int] = typer.Option(None, "--chunk", min=1, help="People per chunk, both engines "
                                                    "(default: the DuckDB run's for the whole population)"),
                chunks: Optional[int] = typer.Option(None, "--chunks", min=1, help="Run only the first K chunks (the "
                                                     "JSON projects the figures to the whole population, as a projection)"),
                protocols: str = typer.Option("", "--protocols", help="Protocol ids, comma-separated (default: all in force)"),
                workers: int = typer.Option(2, "--workers", help="DuckDB worker processes"),
                master: str = typer.Option("local[2]", "--master"),
                spark_memory: Optional[str] = typer.Option(None, "--spark-memory", help="Spark driver memory (default "
                                                           "CAREPATH_SPARK_MEMORY or 2g)"),
                data: Optional[Path] = typer.Option(None, "--data", help="A population folder (default: the cached one)"),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """Spark local[2] against DuckDB on the same people and protocols, same run: seconds, CPU, memory, rows compared."""
    from benchmarks.bench_spark import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), chunk, chunks, tuple(protocols.split(",")) if protocols else (),
                    workers, master, spark_memory, data, log=lambda m: err.print(m, highlight=False))
    d, s = out["duckdb"], out["spark"]
    _bench_out(out, as_json, f"{out['patients']} patients x {len(out['protocols'])} protocols: DuckDB {d['seconds']} s "
               f"({d['cpu_seconds']} CPU-s, {d['peak_rss_mib']} MiB), Spark {s['seconds']} s ({s['cpu_seconds']} CPU-s, "
               f"{s['peak_rss_mib']} MiB): {out['spark_to_duckdb']['seconds']}x; results identical: "
               f"{out['agreement']['identical']}")


@bench_app.command("worklist")
def bench_worklist(patients: int = typer.Option(750000, "--patients"), seed: int = typer.Option(1, "--seed"),
                   as_of: str = typer.Option("2026-11-20", "--as-of"), mdt: Optional[str] = typer.Option(None, "--mdt"),
                   requests: int = typer.Option(300, "--requests"),
                   database_url: Optional[str] = typer.Option(None, "--database-url", help="Registry (default: a cached SQLite file)"),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """P3: first page of an MDT's worklist by role through real HTTP, on a bulk-loaded registry."""
    from benchmarks.bench_worklist import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), mdt, requests, database_url,
                    log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"P3 MDT {out['mdt']} ({out['mdt_patients']} patients): p95 {out['worklist']['p95_ms']} ms")


@bench_app.command("pages")
def bench_pages(patients: int = typer.Option(0, "--patients", help="0: the demo registry; N: a generated registry "
                                             "of N people (built once, cached under benchmarks/.data/)"),
                requests: int = typer.Option(50, "--requests", help="Requests per page and user"),
                seed: int = typer.Option(1, "--seed"), workers: int = typer.Option(2, "--workers"),
                profile: bool = typer.Option(False, "--profile", help="Profile the audit page in-process too"),
                note: Optional[str] = typer.Option(None, "--note", help="Kept in the result, e.g. that the machine was shared"),
                database_url: Optional[str] = typer.Option(
                    None, "--database-url", help="With --patients: the generated registry there (e.g. a copy of one "
                    "built elsewhere: the run adds the demo users and the service migrates it) instead of benchmarks/.data/"),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """p50 / p95 / p99 of the protocol pages and the audit page (as clinical lead and auditor) and the MDT
    worklist page (as clinical lead), through a real uvicorn server on loopback (targets: protocol page
    p95 <= 300 ms, audit page and MDT worklist page p95 <= 500 ms)."""
    from benchmarks.bench_pages import run as run_bench

    out = run_bench(patients, requests, seed, workers=workers, profile=profile, note=note, database_url=database_url,
                    log=lambda m: err.print(m, highlight=False))
    worst = {p: max(st["p95_ms"] for st in by_user.values()) for p, by_user in out["pages"].items()}
    _bench_out(out, as_json, f"pages ({out['patients']}): worst p95 " + ", ".join(f"{p} {v} ms" for p, v in worst.items())
               + f"; targets {'met' if out['meets_targets'] else 'NOT met'}")


@bench_app.command("incremental")
def bench_incremental(patients: int = typer.Option(750000, "--patients"), seed: int = typer.Option(1, "--seed"),
                      as_of: str = typer.Option("2026-11-20", "--as-of"), rate: float = typer.Option(100.0, "--rate"),
                      seconds: float = typer.Option(30, "--seconds"),
                      database_url: Optional[str] = typer.Option(None, "--database-url", help="Registry (default: a cached SQLite file)"),
                      as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """P2: one new record through the API at a fixed rate (open loop), latency percentiles."""
    from benchmarks.bench_incremental import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), rate, seconds, database_url,
                    log=lambda m: err.print(m, highlight=False))
    ol = out.get("open_loop") or {}
    _bench_out(out, as_json, f"P2 at {rate}/s: p50 {ol.get('p50_ms')} p95 {ol.get('p95_ms')} p99 {ol.get('p99_ms')} ms")


@bench_app.command("ingest-workers")
def bench_ingest_workers(patients: int = typer.Option(10000, "--patients"), seed: int = typer.Option(1, "--seed"),
                         as_of: str = typer.Option("2026-11-20", "--as-of"),
                         rates: str = typer.Option("50,100", "--rates", help="Offered rates, records per second"),
                         seconds: float = typer.Option(60, "--seconds"),
                         workers: str = typer.Option("1,2", "--workers", help="uvicorn worker counts to compare"),
                         database_url: Optional[str] = typer.Option(
                             None, "--database-url", help="PostgreSQL registry (default: an embedded server for the run)"),
                         targets: int = typer.Option(500, "--targets", help="Patients the new records go to"),
                         as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """Sustained ingest on PostgreSQL, 1 vs 2 uvicorn workers, open loop at fixed rates: p50/p95/p99, failures."""
    from benchmarks.bench_ingest_workers import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), tuple(float(r) for r in rates.split(",")), seconds,
                    tuple(int(w) for w in workers.split(",")), database_url, targets,
                    log=lambda m: err.print(m, highlight=False))
    line = "; ".join(f"{r['workers']} worker(s) at {r['rate_target']}/s: p99 {r['p99_ms']} ms, {r['errors']} failures"
                     for r in out["runs"])
    _bench_out(out, as_json, line)


@bench_app.command("ingest-profile")
def bench_ingest_profile(patients: int = typer.Option(5000, "--patients"), seed: int = typer.Option(1, "--seed"),
                         as_of: str = typer.Option("2026-11-20", "--as-of"),
                         requests: int = typer.Option(200, "--requests", help="Requests measured (and again under cProfile)"),
                         database_url: Optional[str] = typer.Option(
                             None, "--database-url", help="Registry (default: the SQLite one under benchmarks/.data)"),
                         prime: bool = typer.Option(True, "--prime/--no-prime", help="Re-evaluate the targets once first"),
                         profile: bool = typer.Option(True, "--profile/--no-profile"),
                         note: str = typer.Option("", "--note"),
                         as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """CPU, SQL statements and where the time goes per POST /ingest/records, in process (benchmarks/profile_ingest.py)."""
    from benchmarks.profile_ingest import run as run_bench

    out = run_bench(patients, requests, seed, _date(as_of, "--as-of"), database_url, prime=prime, profile=profile,
                    note=note, log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"{out['database']}: {out['cpu_ms_per_request']} ms CPU, "
                             f"{out['statements_per_request']} SQL statements per request")


@bench_app.command("durable")
def bench_durable(evaluations: int = typer.Option(1000000, "--evaluations"),
                  patients: int = typer.Option(750000, "--patients", help="Population whose summary facts are used"),
                  seed: int = typer.Option(1, "--seed"), as_of: str = typer.Option("2026-11-20", "--as-of"),
                  workers: int = typer.Option(2, "--workers"),
                  as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """durable-rules in worker processes over many evaluations: memory per worker sampled, results checked."""
    from benchmarks.bench_durable import run as run_bench

    out = run_bench(evaluations, patients, seed, _date(as_of, "--as-of"), workers,
                    log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"{out['evaluations_done']} evaluations, {out['evaluations_per_second']}/s, "
               f"memory {out['verdict']}")


@bench_app.command("all")
def bench_all(patients: int = typer.Option(750000, "--patients"), seed: int = typer.Option(1, "--seed"),
              as_of: str = typer.Option("2026-11-20", "--as-of"),
              workers: Optional[int] = typer.Option(None, "--workers"),
              evaluations: int = typer.Option(1000000, "--evaluations", help="durable-rules evaluations (memory)"),
              incremental_seconds: float = typer.Option(30, "--incremental-seconds"),
              skip: list[str] = typer.Option([], "--skip", help="population, worklist, incremental, durable, batch"),
              as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """Every benchmark of issue 8 one after the other; one summary file with targets and measured figures."""
    from benchmarks.bench_all import run as run_all

    out = run_all(patients, seed, _date(as_of, "--as-of"), workers, evaluations, incremental_seconds,
                  skip=tuple(skip), log=lambda m: err.print(m, highlight=False))
    if as_json:
        print(json.dumps(out))
        return
    for row in out["summary"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        console.print(f"  {row['figure']}: {row['measured']} (target {row['target']}) {mark}"
                      + (f" — {row['note']}" if row.get("note") else ""), highlight=False)
    console.print(f"written to {out.get('written')}", highlight=False)


@bench_app.command("summary")
def bench_summary(files: list[Path] = typer.Argument(..., help="Result files of the separate benchmarks")):
    """The targets-vs-measured summary file from benchmark results written earlier."""
    from benchmarks.bench_all import combine

    out = combine(files)
    for row in out["summary"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        console.print(f"  {row['figure']}: {row['measured']} (target {row['target']}) {mark}"
                      + (f" — {row['note']}" if row.get("note") else ""), highlight=False)
    console.print(f"written to {out.get('written')}", highlight=False)


# ---- audit verify-log: the access log's hash chain (engine/registry/logchain.py) ---------------------------------


@bench_app.command("outcomes")
def bench_outcomes(patients: int = typer.Option(100000, "--patients"), months: int = typer.Option(12, "--months"),
                   seed: int = typer.Option(1, "--seed"), as_of: str = typer.Option("2026-11-30", "--as-of"),
                   data: Optional[Path] = typer.Option(None, "--data", help="An existing population folder (`carepath generate`)"),
                   workers: int = typer.Option(2, "--workers"), chunk: int = typer.Option(62500, "--chunk"),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """The outcome measures (pilot-outcomes) month by month over a population, into the outcome table."""
    from benchmarks.bench_outcomes import run as run_bench

    out = run_bench(patients, months, seed, _date(as_of, "--as-of"), data, workers, chunk,
                    log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"outcomes {out['patients']} patients x {months} months: {out['seconds']} s "
               f"(cpu {out['cpu_seconds']} s, load {out['load_average_before'][0]}); 750,000 extrapolated "
               f"{out['extrapolated']['seconds_linear']} s")
