"""`carepath ingest --ndjson DIR`: FHIR Bulk Data NDJSON into the registry (engine/registry/bulk.py),
with a Rich progress bar, then a per-file report of refused and skipped lines."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from engine.language.library import Library
from engine.registry.bulk import BulkBusy, BulkError, BulkLoad, describe_files, ndjson_files

REPORT_LINES = 50  # refused lines printed per file (all of them are in the database: GET /ingest/bulk/{id})


def run_ndjson(folder: Path, engine, library: Library | None, *, source_system: str, as_of: dt.date | None,
               force: bool, console: Console, err: Console, evaluate: bool = True,
               on_line: Callable[[int], None] | None = None) -> int:
    """Load, evaluate the patients whose facts changed, print the report. Returns the exit status:
    0 loaded (refused lines are reported, not fatal), 1 when a line was refused, 2 when nothing could be done."""
    from engine.app.service import EVALUATED, PROBLEM, drain, evaluate_one
    from engine.registry.tables import utcnow

    now = dt.datetime.combine(as_of, dt.time(9, 0)) if as_of else None
    counts = {"evaluated": 0, "data problems": 0, "still pending": 0}
    try:
        paths = ndjson_files(folder)
    except BulkError as e:
        err.print(str(e), highlight=False)
        return 2
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                label = {"reading": "reading the files (bytes)", "loading": "loading patients"}.get(phase, phase)
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        def on_chunk(summary) -> None:
            if not evaluate or library is None:
                return
            if "evaluating" not in tasks:
                tasks["evaluating"] = bar.add_task("evaluating changed patients", total=0)
            t = tasks["evaluating"]
            bar.update(t, total=(bar.tasks[t].total or 0) + len(summary.queued))
            for nhs in sorted(summary.queued):
                outcome, _ = evaluate_one(engine, nhs, library, now=now, as_of=as_of)
                counts["evaluated" if outcome == EVALUATED else "data problems" if outcome == PROBLEM else "still pending"] += 1
                bar.advance(t)

        try:
            report = BulkLoad(engine, describe_files(paths), source_system=source_system, force=force, progress=progress,
                              on_chunk=on_chunk, on_line=on_line).run()
        except BulkBusy as e:
            err.print(f"{folder}: {e}", highlight=False)
            return 2
        except (BulkError, OSError) as e:
            err.print(f"{folder}: {e}", highlight=False)
            return 2
        if evaluate and library is not None and report["state"] != "already-loaded":
            # whoever is still marked (a chunk stored just before an earlier run was killed, for one)
            left = drain(engine, library, (lambda: now) if now else utcnow)
            counts["evaluated"] += len(left.evaluated)
            counts["data problems"] += len(left.problems)
            counts["still pending"] = len(left.pending)
    print_report(report, console, counts if evaluate and library is not None else None)
    return 1 if report["lines_refused"] else 0


def print_report(report: dict, console: Console, evaluation: dict | None = None) -> None:
    state = {"already-loaded": "already loaded: nothing to do (--force loads them again)", "resumed": "resumed",
             "new": "loaded"}.get(report.get("state"), report.get("state"))
    console.print(f"bulk run {report['id']} ({report['source_system']}): {state}; {report['patients_done']} of "
                  f"{report['patients_total']} patients; lines: {report['lines_loaded']} loaded, {report['lines_refused']} "
                  f"refused, {report['lines_skipped']} skipped, {report['lines_unsupported']} of types carepath does not "
                  f"import, {report['lines_supporting']} supporting; facts {report['facts_added']} added / "
                  f"{report['facts_updated']} updated / {report['facts_unchanged']} unchanged"
                  + (f"; resumed {report['resumed']} time(s)" if report["resumed"] else ""), highlight=False)
    if evaluation is not None:
        console.print("evaluation: " + ", ".join(f"{n} {k}" for k, n in evaluation.items()), highlight=False)
    table = Table("file", "lines", "refused", "skipped", "not imported", "supporting")
    for f in report["files"]:
        table.add_row(f["name"], str(f["lines"]), str(f["refused"]), str(f["skipped"]), str(f["unsupported"]),
                      str(f["supporting"]))
    console.print(table)
    for f in report["files"]:
        for r in f["refusals"][:REPORT_LINES]:
            console.print(f"{f['name']}:{r['line']}: {r['outcome']}" + (f" {r['resource']}" if r["resource"] else "")
                          + f": {r['reason']}", highlight=False, markup=False)
        if len(f["refusals"]) > REPORT_LINES or f["refused"] + f["skipped"] > len(f["refusals"]):
            console.print(f"{f['name']}: … {f['refused'] + f['skipped'] - min(len(f['refusals']), REPORT_LINES)} more "
                          f"(GET /ingest/bulk/{report['id']})", highlight=False)
