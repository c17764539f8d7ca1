"""carepath command line (Typer + Rich).

    carepath validate PATH...                      check protocol and role-agreement files
    carepath evaluate --bundle FILE [--as-of D]    care plan, tasks, flags, measures with why-lines
    carepath ingest FILE...                        load FHIR bundles into the registry (idempotent)
    carepath ingest --ndjson DIR                   load FHIR Bulk Data NDJSON files (streamed, resumable)
    carepath demo                                  seed the demo registry and show a care plan
    carepath conformance KIT_DIR... [--protocols DIR] [--engine E|all] [--format json]   eCQM kits (N passed, M failed)
    carepath test | impact | docs | draft | publish  authoring (cli/authoring.py)
    carepath audit verify-log [--database-url URL]  check the access log's hash chain (exit 1 if broken)
    carepath db current | upgrade | backup FILE     schema revision, migrations, SQLite backup (cli/ops.py)
    carepath codelists list | import FILE --cluster NAME   site-supplied codelists (cli/codelists.py)
    carepath outcomes risk-model --population DIR --as-of D   the risk score checked against admissions (cli/risk_model.py)
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.authoring import _date  # one date-option parser for every command
from cli.common import DEFAULT_PROTOCOLS, _library, console, err
from engine.language.library import load_library

app = typer.Typer(help="carepath: shared clinical pathways evaluated into care plans, worklists and audit.",
                  no_args_is_help=True, add_completion=False)




@app.command()
def validate(paths: list[Path] = typer.Argument(None, help="Protocol files or folders (default: protocols/)"),
             format: str = typer.Option("text", "--format", help="text or json")):
    """Check protocol and role-agreement files: errors with file:line:column, warnings, a summary."""
    paths = paths or [DEFAULT_PROTOCOLS]
    lib = load_library(paths)
    if format == "json":
        print(json.dumps({"protocols": [p.key for p in lib.protocols], "agreements": [a.key for a in lib.agreements],
                          "problems": [p.as_dict() for p in lib.problems]}, indent=2))
    else:
        for p in lib.problems:
            colour = "red" if p.severity == "error" else "yellow"
            console.print(f"[{colour}]{p}[/{colour}]", highlight=False, soft_wrap=True)
        console.print(f"{len(lib.protocols)} protocol(s), {len(lib.agreements)} role agreement(s): "
                      f"{len(lib.errors)} error(s), {len(lib.problems) - len(lib.errors)} warning(s)", highlight=False)
    raise typer.Exit(1 if lib.errors else 0)


@app.command()
def evaluate(bundle: Path = typer.Option(..., "--bundle", help="FHIR R4 Bundle (JSON) with the patient's records"),
             protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols", help="Protocol folder(s) or files"),
             as_of: Optional[str] = typer.Option(None, "--as-of", help="Reference date YYYY-MM-DD (default today)"),
             period_start: Optional[str] = typer.Option(None, "--period-start", help="Measurement period start"),
             format: str = typer.Option("text", "--format", help="text or json (schema carepath.evaluation/v1)"),
             engine: str = typer.Option("durable", "--engine", help="durable (rule engine) or python (reference)")):
    """Evaluate the protocols in force against the records in a FHIR bundle."""
    from engine.evaluation.evaluator import Options, evaluate as run
    from engine.records.fhir.bundle import BundleError, import_bundle

    ref = _date(as_of, "--as-of") or dt.date.today()
    lib = _library(protocols)
    try:
        data = json.loads(bundle.read_text(encoding="utf-8"))
        result = import_bundle(data, source_system=bundle.stem)
    except json.JSONDecodeError as e:
        err.print(f"{bundle}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})")
        raise typer.Exit(2) from None
    except BundleError as e:
        err.print(f"{bundle}: {e}")
        raise typer.Exit(2) from None
    except OSError as e:
        err.print(f"{bundle}: {e.strerror}")
        raise typer.Exit(2) from None
    in_force = lib.in_force(ref)
    agreements = lib.agreements_in_force(ref)
    evaluations = [run(rec, in_force, agreements, as_of=ref, period_start=_date(period_start, "--period-start"),
                       options=Options(engine=engine)) for rec in result.records]
    if format == "json":
        out = [e.model_dump(mode="json", by_alias=True) for e in evaluations]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return
    for u, n in sorted(result.unsupported.items()):
        err.print(f"note: {n} {u} resource(s) in the bundle are not used by carepath")
    for ev in evaluations:
        render_evaluation(ev)


def render_evaluation(ev) -> None:
    from engine.evaluation.outputs import Evaluation
    assert isinstance(ev, Evaluation)
    console.rule(f"Patient {ev.nhs_number[:3]} {ev.nhs_number[3:6]} {ev.nhs_number[6:]} — as of {ev.reference_date}"
                 + (" (deceased)" if ev.deceased else ""))
    for pr in ev.protocols:
        console.print(f"[bold]{pr.title}[/bold] ({pr.protocol}@{pr.version})", highlight=False)
        console.print(f"  {pr.register_why}", highlight=False)
        if pr.segments:
            console.print("  Segments: " + "; ".join(x.title for x in pr.segments), highlight=False, markup=False)
        if pr.score is not None:
            console.print(f"  Score: {pr.score.provenance.why}", highlight=False, markup=False)
        if pr.tier is not None:
            console.print(f"  Tier {pr.tier.level}: {pr.tier.provenance.why}", highlight=False, markup=False)
        if pr.care_plan:
            t = Table("Activity", "Status", "Last done", "Next due", "Who", "Why", show_lines=False, expand=True)
            colours = {"met": "green", "due": "yellow", "overdue": "red", "excepted": "cyan", "unknown": "magenta"}
            for i in pr.care_plan:
                who = i.assigned.role + (f" ({i.assigned.provider})" if i.assigned.provider else "")
                t.add_row(i.title, f"[{colours[i.status]}]{i.status}[/]", str(i.last_done or "—"), str(i.next_due or "—"),
                          who, i.provenance.why)
            console.print(t)
        for g in pr.goals:
            console.print(f"  Goal: {g.provenance.why}", highlight=False, markup=False)
        if pr.tasks:
            t = Table("Task", "Priority", "Due", "Provider / team / role", "Why", expand=True)
            for task in sorted(pr.tasks, key=lambda x: (["urgent", "high", "routine", "low"].index(x.priority), x.due)):
                a = task.assigned
                t.add_row(task.title, task.priority, task.due.strftime("%Y-%m-%d %H:%M"),
                          " / ".join(x for x in (a.provider, a.team, a.role) if x) + (f" [{a.response}]" if a.response else ""),
                          task.provenance.why)
            console.print(t)
        for f in pr.flags:
            if f.kind == "clinical":
                console.print(f"  Flag ({f.level}) {f.text}: {f.provenance.why}", highlight=False, markup=False)
        for m in pr.measures:
            pops = "".join(x for x, on in (("IP ", m.initial_population), ("DEN ", m.denominator),
                                            ("EXCL ", m.exclusion), ("NUM", m.numerator)) if on) or "—"
            console.print(f"  Measure {m.measure}: {pops.strip()} — {m.provenance.why}", highlight=False, markup=False)
        for d in pr.data_problems:
            console.print(f"  [yellow]Data problem: {d}[/yellow]", highlight=False)
        for c in pr.cannot_determine:  # a declared codelist not supplied (carepath codelists import)
            if c.source.startswith(("rule:", "segment:", "tier:")):
                console.print(f"  [magenta]Cannot determine[/magenta] {c.why}", highlight=False)


@app.command()
def demo(as_of: Optional[str] = typer.Option(None, "--as-of", help="Reference date (default today)"),
         out: Path = typer.Option(Path("var"), "--out", help="Where to write the demo bundles and registry"),
         protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols"),
         population: int = typer.Option(500, "--population", min=0,
                                        help="Generated people added to the registry beside the demo patients (0: none)")):
    """Seed a demo registry (SQLite under var/) from demo patients and a generated population, and show the
    demo patients' care plans and worklist."""
    from engine.synthetic.demo import demo_records
    from engine.evaluation.evaluator import evaluate as run
    from engine.records.fhir.export import export_patient_bundle

    ref = _date(as_of, "--as-of") or dt.date.today()
    lib = _library(protocols)
    records = demo_records(ref)
    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / "demo-bundles"
    bundle_dir.mkdir(exist_ok=True)
    for rec in records:
        (bundle_dir / f"{rec.patient.nhs_number}.json").write_text(json.dumps(export_patient_bundle(rec), indent=1))
    from engine.app.demo import seed_registry

    with console.status("Loading the demo registry (and a generated population, evaluated) ..."):
        try:
            seeded = seed_registry(records, out, ref, population, lib)
        except ValueError as e:  # an earlier load did not finish
            raise typer.BadParameter(str(e), param_hint="--population")
    in_force, agreements = lib.in_force(ref), lib.agreements_in_force(ref)
    evaluations = [run(r, in_force, agreements, as_of=ref) for r in records]
    render_evaluation(evaluations[0])
    t = Table("Patient", "Practice", "Task", "Priority", "Due", "Who", title=f"Worklist, MDT central-1/central-2, as of {ref}")
    tasks = [(ev, task) for ev in evaluations for task in ev.tasks]
    for ev, task in sorted(tasks, key=lambda x: (["urgent", "high", "routine", "low"].index(x[1].priority), x[1].due)):
        rec = next(r for r in records if r.patient.nhs_number == ev.nhs_number)
        t.add_row(f"{rec.patient.given_name} {rec.patient.family_name}", rec.patient.practice or "", task.title,
                  task.priority, task.due.strftime("%Y-%m-%d %H:%M"), task.assigned.role)
    console.print(t)
    console.print(f"Demo bundles written to {bundle_dir}/ — try: carepath evaluate --bundle {bundle_dir}/{records[0].patient.nhs_number}.json"
                  + (f"\nRegistry: {seeded}" if seeded else ""), highlight=False)


@app.command()
def ingest(files: list[Path] = typer.Argument(None, help="FHIR R4 Bundle JSON files"),
           ndjson: Optional[Path] = typer.Option(None, "--ndjson", metavar="DIR|MANIFEST",
                                                 help="A folder of FHIR Bulk Data NDJSON files (Patient.ndjson, "
                                                      "Condition.ndjson.gz ...; gzipped too), or a $export manifest "
                                                      "(.json, local file URLs): streamed, resumable (engine/registry/bulk.py)"),
           force: bool = typer.Option(False, "--force", help="With --ndjson: load files again that a finished run loaded"),
           evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                         help="With --ndjson: evaluate the changed patients now (else the service's drain does)"),
           source_system: str = typer.Option("fhir", "--source-system",
                                             help="The feed the bundles come from (part of each fact's identity)"),
           database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL",
                                                      help="Registry database (default sqlite:///var/carepath.db)"),
           protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols"),
           as_of: Optional[str] = typer.Option(None, "--as-of", help="Re-evaluate as of this date (default today)")):
    """Load FHIR bundles (or, with --ndjson DIR, FHIR Bulk Data NDJSON files) into the registry and
    re-evaluate the patients whose records changed.

    Idempotent (the same bundle twice adds nothing); a bundle with an error changes nothing. With
    --ndjson a bad line is refused and reported (file, line, reason) while the rest loads; a killed
    load resumes where it stopped when run again with the same files. Exit 1 if anything was refused."""
    from engine.app.service import reevaluate_many
    from engine.records.fhir.common import BundleError
    from engine.registry.db import database_url as default_url, make_engine, upgrade
    from engine.registry.ingest import IngestError, ingest_fhir_bundle

    if bool(files) == bool(ndjson):
        err.print("give FHIR bundle files or --ndjson DIR (one of them)")
        raise typer.Exit(2)
    lib = _library(protocols)
    engine = make_engine(database_url or default_url())
    upgrade(engine)
    ref = _date(as_of, "--as-of")
    if ndjson:
        from cli.bulk import run_ndjson

        raise typer.Exit(run_ndjson(ndjson, engine, lib, source_system=source_system, as_of=ref, force=force,
                                    console=console, err=err, evaluate=evaluate))
    now = dt.datetime.combine(ref, dt.time(9, 0)) if ref else None
    failed = 0
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            result, summary = ingest_fhir_bundle(engine, data, source_system=source_system, source=str(f))
        except json.JSONDecodeError as e:
            err.print(f"{f}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); nothing stored")
            failed += 1
            continue
        except (BundleError, IngestError, OSError) as e:
            err.print(f"{f}: {e}; nothing stored")
            failed += 1
            continue
        unsupported = ", ".join(f"{n} {t}" for t, n in sorted(result.unsupported.items()))
        console.print(f"{f}: {summary}" + (f"; not used: {unsupported}" if unsupported else ""), highlight=False)
        for diff in reevaluate_many(engine, summary.queued, lib, as_of=ref, now=now):
            for label, items in (("task opened", diff.tasks_opened), ("task closed", diff.tasks_closed),
                                 ("flag raised", diff.flags_raised), ("flag cleared", diff.flags_cleared),
                                 ("flag changed", diff.flags_changed)):
                for c in items:
                    console.print(f"  {diff.nhs_number} {label}: {c.title}" + (f" ({c.detail})" if label == "flag changed" else ""),
                                  highlight=False, markup=False)
    raise typer.Exit(1 if failed else 0)


@app.command()
def conformance(kit_dirs: list[Path] = typer.Argument(..., metavar="KIT_DIR...",
                                                     help="eCQM test kit folder(s) (terminology.json + cases/)"),
                protocols: Optional[Path] = typer.Option(
                    None, "--protocols",
                    help="Protocol folder searched (recursively, valuesets/ and *.tests.yaml skipped) for the protocol "
                         "whose measure declares the kit's `ecqm: {url, version}`. Default: the repository's "
                         "protocols/ folder (eCQMs are in protocols/ecqm/)."),
                engine: str = typer.Option("durable", "--engine", help="durable, python, batch or all"),
                format: str = typer.Option("text", "--format", help="text or json")):
    """Run eCQM conformance kits: each case's bundle is evaluated as of its measurement period end and its
    populations (IP, DEN, DENEX, DENEXCEP, NUM; counts per episode for episode-based measures) compared
    with the published MeasureReport. Prints `N passed, M failed` per kit and engine; a failing case shows
    every population step's why and the protocol's definitions. Exit 1 if any case fails, 2 if a kit
    cannot be run."""
    from engine.app.conformance import DEFAULT_PROTOCOLS as PROTO_DIR, ENGINES, KitError, render_json, render_text, run_kit

    engines = list(ENGINES) if engine == "all" else [engine]
    if any(e not in ENGINES for e in engines):
        err.print(f"unknown engine {engine!r} (expected durable, python, batch or all)")
        raise typer.Exit(2)
    proto_dir = protocols or PROTO_DIR
    ok, runs = True, []
    for kit_dir in kit_dirs:
        for e in engines:
            try:
                results = run_kit(kit_dir, proto_dir, e)
            except KitError as ex:
                err.print(str(ex))
                raise typer.Exit(2) from None
            ok = ok and all(r.passed for r in results)
            runs.append((kit_dir, e, results))
            if format != "json":
                render_text(results, console)
                if len(kit_dirs) * len(engines) > 1:
                    console.print(f"^ {Path(kit_dir).name} on {e}", highlight=False)
    if format == "json":
        if len(runs) == 1:
            print(render_json(runs[0][2]))
        else:
            print("[" + ",\n".join(render_json(r) for _, _, r in runs) + "]")
    raise typer.Exit(0 if ok else 1)


# ---- the HTTP service and its users ------------------------------------------------------------------
@app.command()
def serve(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
          database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL",
                                                     help="Registry database (default sqlite:///var/carepath.db)"),
          protocols: Path = typer.Option(DEFAULT_PROTOCOLS, "--protocols", help="Protocol folder (publishing writes here)"),
          workers: int = typer.Option(1, "--workers", min=1,
                                      help="uvicorn worker processes; more than 1 needs PostgreSQL"),
          log_format: str = typer.Option("text", "--log-format", envvar="CAREPATH_LOG_FORMAT",
                                         help="json (one object per line) or text; every line carries its request id")):
    """Run the HTTP API (uvicorn). OpenAPI at /openapi.json, docs at /docs.

    `--workers N` (N > 1) runs N processes: PostgreSQL only (each evaluates outside the write
    transaction and locks one patient row to write; SQLite has one writer for the whole file)."""


    import uvicorn

    from engine.registry.db import database_url as default_url
    url = database_url or default_url()
    from api.request_log import FORMATS, log_config
    if log_format not in FORMATS:
        console.print(f"[red]--log-format {log_format!r}: use json or text[/red]", highlight=False)
        raise typer.Exit(2)
    problem = workers_problem(url, workers)
    if problem:
        console.print(f"[red]{problem}[/red]", highlight=False)
        raise typer.Exit(2)
    os.environ["DATABASE_URL"] = url
    os.environ["CAREPATH_PROTOCOLS"] = str(protocols)
    if host in ("127.0.0.1", "localhost", "::1") and not os.environ.get("CAREPATH_COOKIE_SECURE"):
        # Plain HTTP on loopback only (make run): the browser would not send a Secure cookie back.
        # Anywhere else the session cookie is Secure unless CAREPATH_COOKIE_SECURE=0 says otherwise.
        os.environ["CAREPATH_COOKIE_SECURE"] = "0"
    console.print(f"carepath on http://{host}:{port}/ (web pages: log in there; database {make_url_safe(url)}, "
                  f"protocols {protocols}/); API docs at /docs, OpenAPI at /openapi.json", highlight=False)
    if workers > 1:  # migrate once here, so N workers starting at once do not all run the migrations
        from engine.registry.db import upgrade
        upgrade(url)
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level="info",
                log_config=log_config(log_format), access_log=False)


def workers_problem(url: str, workers: int) -> str | None:
    """Why `--workers` cannot be used with this database, or None."""
    from sqlalchemy.engine import make_url
    if workers > 1 and make_url(url).get_backend_name() != "postgresql":
        return (f"--workers {workers} needs PostgreSQL (DATABASE_URL=postgresql://...): SQLite allows one writer for the "
                "whole file, so more worker processes would only queue behind each other. Use --workers 1 with SQLite.")
    return None


def make_url_safe(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


from cli.authoring import register as _register_authoring  # noqa: E402
from cli.audit_log import audit_app  # noqa: E402
from cli.bench import bench_app  # noqa: E402
from cli.population import population_cmds  # noqa: E402
from cli.users import users_app  # noqa: E402
from cli.ops import db_app  # noqa: E402  (carepath db current | upgrade | backup)
from cli.outcomes import outcomes_app  # noqa: E402  (carepath outcomes report)
import cli.risk_model  # noqa: E402,F401  (adds carepath outcomes risk-model to the same group)

app.add_typer(db_app, name="db")
from cli.codelists import register as _register_codelists  # noqa: E402  (carepath codelists list / import)

_register_codelists(app)

app.add_typer(users_app, name="users")
app.add_typer(bench_app, name="bench")
app.add_typer(audit_app, name="audit")
app.add_typer(outcomes_app, name="outcomes")
app.registered_commands += population_cmds.registered_commands

_register_authoring(app)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
