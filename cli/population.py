"""`carepath generate` and `carepath evaluate-population`: synthetic populations and the batch engine over them."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from cli.authoring import _date
from cli.common import DEFAULT_PROTOCOLS, _library, console, err

population_cmds = typer.Typer()  # merged into the main app (cli/main.py)


@population_cmds.command()
def generate(patients: int = typer.Option(10000, "--patients", help="How many people"),
             seed: int = typer.Option(1, "--seed", help="Same seed, same population"),
             out: Path = typer.Option(Path("var/population"), "--out", help="Folder for the Parquet tables"),
             as_of: Optional[str] = typer.Option(None, "--as-of", help="Records end on this date (default today)"),
             workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: CPUs)"),
             format: str = typer.Option("parquet", "--format", help="parquet or duckdb")):
    """Write a synthetic population (patients, facts, codings, attributes) for `evaluate-population`."""
    from engine.synthetic.generate import write_population

    ref = _date(as_of, "--as-of") or dt.date.today()
    info = write_population(out, patients, seed=seed, as_of=ref, workers=workers, fmt=format)
    console.print(f"{info['patients']} patients, {info['facts']} facts in {info['total_seconds']} s -> {out}/",
                  highlight=False)


@population_cmds.command("evaluate-population")
def evaluate_population(data: Path = typer.Option(Path("var/population"), "--data", help="Folder from `carepath generate`"),
                        as_of: str = typer.Option(..., "--as-of", help="Reference date YYYY-MM-DD"),
                        period_start: Optional[str] = typer.Option(None, "--period-start", help="Measurement period start"),
                        workers: Optional[int] = typer.Option(None, "--workers", help="DuckDB threads (default: CPUs)"),
                        protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols"),
                        results: Optional[Path] = typer.Option(None, "--results", help="DuckDB results file (default <data>/results.duckdb)"),
                        run: Optional[str] = typer.Option(None, "--run", help="Run id (same id resumes that run)"),
                        chunk: Optional[int] = typer.Option(None, "--chunk", min=1, help="Patients evaluated together per worker (memory follows this; default: equal chunks of at most 31,250, a multiple of the workers)"),
                        memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="DuckDB memory limit, e.g. 3GB"),
                        format: str = typer.Option("text", "--format", help="text or json"),
                        engine: str = typer.Option("duckdb", "--engine", help="duckdb or spark"),
                        master: str = typer.Option("local[2]", "--master", help="Spark master (--engine spark): local[N], spark://host:port, or 'active' for the running session (Databricks)")):
    """Evaluate every protocol in force over a whole population with the batch engine (DuckDB or Spark)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if engine == "spark":
        from engine.engines.spark.run import DEFAULT_CHUNK, evaluate_population_spark

        ref = _date(as_of, "--as-of")
        summary = evaluate_population_spark(data, _library(protocols).in_force(ref), ref, _date(period_start, "--period-start"),
                                            master=None if master == "active" else master, out=results, run=run,
                                            chunk_size=chunk or DEFAULT_CHUNK,
                                            log=(lambda m: err.print(m, highlight=False)) if format != "json" else (lambda m: None))
        if format == "json":
            print(json.dumps(summary, indent=2))
        else:
            console.print(f"{summary['patients']} patients in {summary['chunks']} chunks, {summary['seconds']} s on Spark. "
                          f"Results: {summary['results']} (run {summary['run']})", highlight=False)
        return
    if engine != "duckdb":
        err.print(f"unknown engine {engine!r} (duckdb or spark)")
        raise typer.Exit(2)

    from engine.engines.duckdb.run import evaluate_population_run

    ref = _date(as_of, "--as-of")
    lib = _library(protocols)
    bar = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TextColumn("protocol x chunk steps"),
                   TimeElapsedColumn(), console=err, transient=format == "json")
    try:
        with bar:
            task = bar.add_task("run", total=None)
            summary = evaluate_population_run(data, lib.in_force(ref), ref, _date(period_start, "--period-start"),
                                              workers=workers, results=results, run=run, chunk_size=chunk,
                                              memory_limit=memory_limit, log=lambda m: bar.console.log(m, highlight=False)
                                              if format != "json" else None,
                                              progress=lambda done, total: bar.update(task, completed=done, total=total))
    except FileNotFoundError as e:
        err.print(str(e))
        raise typer.Exit(2) from None
    if format == "json":
        print(json.dumps(summary, indent=2))
        return
    for p in summary["protocols"]:
        if p.get("error"):
            console.print(f"  {p['protocol']}: not evaluated: {p['error']}", highlight=False)
        for m, v in (p.get("measures") or {}).items():
            eligible = v["denominator"] - v["exclusions"] - v.get("exceptions", 0)  # as the audit's rate
            rate = f"{100 * v['numerator'] / eligible:.1f} %" if eligible > 0 else "—"
            console.print(f"  {p['protocol']} {m}: {v['numerator']} / {eligible} ({rate}), denominator {v['denominator']}, "
                          f"{v['exclusions']} excluded, {v.get('exceptions', 0)} exceptions"
                          + (f", cannot determine for {v['cannot_determine']} (codelist not supplied)"
                             if v.get("cannot_determine") else ""), highlight=False)
    console.print(f"{summary['patients']} patients in {summary['chunks']} chunks, {summary['seconds']} s. "
                  f"Results: {summary['results']} (run {summary['run']})", highlight=False)
