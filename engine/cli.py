"""carepath command line (Typer + Rich).

    carepath validate PATH...                      check protocol and role-agreement files
    carepath evaluate --bundle FILE [--as-of D]    care plan, tasks, flags, measures with why-lines
    carepath ingest FILE...                        load FHIR bundles into the registry (idempotent)
    carepath ingest --ndjson DIR                   load FHIR Bulk Data NDJSON files (streamed, resumable)
    carepath demo                                  seed the demo registry and show a care plan
    carepath conformance KIT_DIR... [--protocols DIR] [--engine E|all] [--format json]   eCQM kits (N passed, M failed)
    carepath test | impact | docs | draft | publish  authoring (engine/cli_authoring.py)
    carepath audit verify-log [--database-url URL]  check the access log's hash chain (exit 1 if broken)
    carepath db current | upgrade | backup FILE     schema revision, migrations, SQLite backup (engine/cli_ops.py)
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from engine.cli_authoring import _date  # one date-option parser for every command
from engine.protocols.library import Library, load_library

app = typer.Typer(help="carepath: shared clinical pathways evaluated into care plans, worklists and audit.",
                  no_args_is_help=True, add_completion=False)
console = Console(soft_wrap=False, width=140)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_PROTOCOLS = Path("protocols")


def _library(paths: list[Path]) -> Library:
    lib = load_library(paths)
    if lib.errors:
        for p in lib.errors:
            err.print(f"[red]{p}[/red]", markup=True, highlight=False)
        raise typer.Exit(2)
    return lib




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
    from engine.evaluate.evaluator import Options, evaluate as run
    from engine.records.fhir_import import BundleError, import_bundle

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
    from engine.evaluate.outputs import Evaluation
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
            colours = {"met": "green", "due": "yellow", "overdue": "red", "excepted": "cyan"}
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


@app.command()
def demo(as_of: Optional[str] = typer.Option(None, "--as-of", help="Reference date (default today)"),
         out: Path = typer.Option(Path("var"), "--out", help="Where to write the demo bundles and registry"),
         protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols"),
         population: int = typer.Option(500, "--population", min=0,
                                        help="Generated people added to the registry beside the demo patients (0: none)")):
    """Seed a demo registry (SQLite under var/) from demo patients and a generated population, and show the
    demo patients' care plans and worklist."""
    from engine.demo import demo_records
    from engine.evaluate.evaluator import evaluate as run
    from engine.records.fhir_import import export_patient_bundle

    ref = _date(as_of, "--as-of") or dt.date.today()
    lib = _library(protocols)
    records = demo_records(ref)
    out.mkdir(parents=True, exist_ok=True)
    bundle_dir = out / "demo-bundles"
    bundle_dir.mkdir(exist_ok=True)
    for rec in records:
        (bundle_dir / f"{rec.patient.nhs_number}.json").write_text(json.dumps(export_patient_bundle(rec), indent=1))
    seeded = _seed_registry(records, out, ref, population, lib)
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


def _seed_registry(records, out: Path, records_as_of: dt.date, population: int = 0, library=None) -> str | None:
    """Ingest the demo records (and `population` generated people, evaluated) into the SQLite registry
    (idempotent: re-running adds nothing)."""
    try:
        from engine.registry.db import make_engine, upgrade
        from engine.registry.ingest import ingest_records
    except ImportError:
        return None
    import os
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{(out / 'carepath.db').resolve()}"
    engine = make_engine(url)
    upgrade(engine)
    summary = ingest_records(engine, records, source="demo")
    from engine.demo import HISTORY, demo_now
    from engine.evaluate.service import reevaluate_many
    lib = load_library([DEFAULT_PROTOCOLS])
    # A registry with a past: evaluated three weeks ago (tasks raised then, some now past their agreed
    # response time, so worklists show SLA lateness), then again today.
    nhs = {r.patient.nhs_number for r in records}
    new = {n for n, c in summary.patients.items() if c.created}  # a second `carepath demo` adds no history
    earlier = records_as_of - HISTORY
    first = reevaluate_many(engine, new, lib, as_of=earlier, now=dt.datetime.combine(earlier, dt.time(9, 0)))
    now = demo_now(records_as_of)
    diffs = reevaluate_many(engine, nhs, lib, as_of=records_as_of, now=now)
    opened = sum(len(d.tasks_opened) for d in first + diffs)
    generated = _seed_population(engine, population, records_as_of, library or lib) if population else ""
    from sqlmodel import Session

    from api.users import DEMO_PASSWORD_SUFFIX, ensure_demo_users
    with Session(engine) as s:
        made = ensure_demo_users(s)
    users = (f"; demo users {', '.join(made)} (password: <username>{DEMO_PASSWORD_SUFFIX})" if made else "")
    # audit snapshots at a few reporting dates, so the web audit dashboard has a trend to show
    from api.audit_calc import take_snapshot
    from engine.demo import reporting_dates
    with Session(engine) as s:
        for day in reporting_dates(records_as_of):
            take_snapshot(s, lib, day, "carepath demo", now)
        s.commit()
    return f"{url} ({summary}; {opened} new task(s) on the worklists{generated}{users})"


def _seed_population(engine, n: int, as_of: dt.date, library) -> str:
    """Add n generated people (engine/population/generate.py, seed 1, from person 100 on: the first
    generated NHS numbers are the demo patients') to the registry and store every MDT's outputs, so
    worklists, case conferences and audits show a population; skipped if loaded."""
    from sqlmodel import Session, select

    from engine.population.registry_load import bulk_load, populate_outputs
    from engine.registry.tables import IngestBatch, PatientRow

    key = f"demo-population-{n}-s1-{as_of.isoformat()}"
    with Session(engine) as s:
        done = s.exec(select(IngestBatch).where(IngestBatch.content_hash == key)).first()
    if done is not None and done.patients == n:
        return f"; generated population of {n} already loaded"
    if done is not None:
        raise typer.BadParameter(f"an earlier generated population load into {engine.url} did not finish: "
                                 "remove the demo registry (var/carepath.db) and run carepath demo again",
                                 param_hint="--population")
    with console.status(f"Generating {n} people and evaluating them with every protocol in force ..."):
        bulk_load(engine, n, seed=1, as_of=as_of, start=100, workers=os.cpu_count() or 1, content_hash=key,
                  source=f"synthetic population ({key})")
        with Session(engine) as s:
            mdts = sorted(m for m in s.exec(select(PatientRow.mdt).distinct()) if m)
        from engine.demo import demo_now
        tasks = sum(populate_outputs(engine, m, library=library, as_of=as_of, now=demo_now(as_of),
                                     workers=os.cpu_count() or 1)["tasks_opened"] for m in mdts)
    return f"; generated population of {n} people in {len(mdts)} MDTs with {tasks} task(s)"


@app.command()
def ingest(files: list[Path] = typer.Argument(None, help="FHIR R4 Bundle JSON files"),
           ndjson: Optional[Path] = typer.Option(None, "--ndjson", metavar="DIR",
                                                 help="A folder of FHIR Bulk Data NDJSON files (Patient.ndjson, "
                                                      "Condition.ndjson ...): streamed, resumable (engine/registry/bulk.py)"),
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
    from engine.evaluate.service import reevaluate_many
    from engine.records.fhir_import import BundleError
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
        from engine.cli_bulk import run_ndjson

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
    from engine.conformance import DEFAULT_PROTOCOLS as PROTO_DIR, ENGINES, KitError, render_json, render_text, run_kit

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
          workers: int = typer.Option(1, "--workers", help="uvicorn worker processes")):
    """Run the HTTP API (uvicorn). OpenAPI at /openapi.json, docs at /docs."""
    import os

    import uvicorn

    from engine.registry.db import database_url as default_url
    url = database_url or default_url()
    os.environ["DATABASE_URL"] = url
    os.environ["CAREPATH_PROTOCOLS"] = str(protocols)
    if host in ("127.0.0.1", "localhost", "::1") and not os.environ.get("CAREPATH_COOKIE_SECURE"):
        # Plain HTTP on loopback only (make run): the browser would not send a Secure cookie back.
        # Anywhere else the session cookie is Secure unless CAREPATH_COOKIE_SECURE=0 says otherwise.
        os.environ["CAREPATH_COOKIE_SECURE"] = "0"
    console.print(f"carepath on http://{host}:{port}/ (web pages: log in there; database {make_url_safe(url)}, "
                  f"protocols {protocols}/); API docs at /docs, OpenAPI at /openapi.json", highlight=False)
    uvicorn.run("api.main:app", host=host, port=port, workers=workers, log_level="info")


def make_url_safe(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


users_app = typer.Typer(help="Manage the API's users (roles: clinical-lead, mdt-member, practice-staff, auditor, admin).",
                        no_args_is_help=True)
app.add_typer(users_app, name="users")


def _users_session(database_url: Optional[str]):
    from sqlmodel import Session

    from engine.registry.db import database_url as default_url, make_engine, upgrade
    engine = make_engine(database_url or default_url())
    upgrade(engine)
    return Session(engine)


def _password(password: Optional[str]) -> str:
    if password:
        return password
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(username: str = typer.Argument(...),
              role: str = typer.Option(..., "--role", help="clinical-lead | mdt-member | practice-staff | auditor | admin"),
              password: Optional[str] = typer.Option(None, "--password", envvar="CAREPATH_NEW_PASSWORD",
                                                     help="Prompted for when not given"),
              full_name: Optional[str] = typer.Option(None, "--name"),
              mdt: Optional[str] = typer.Option(None, "--mdt", help="Scope: the user's MDT"),
              practice: Optional[str] = typer.Option(None, "--practice", help="Scope: the user's practice (ODS code)"),
              locality: Optional[str] = typer.Option(None, "--locality", help="Scope: the user's locality"),
              database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL")):
    """Add a user (the password is stored as an argon2 hash)."""
    from api.users import UserError, add_user
    with _users_session(database_url) as s:
        try:
            row = add_user(s, username, _password(password), role, full_name=full_name, mdt=mdt, practice=practice,
                           locality=locality)
        except UserError as e:
            err.print(str(e))
            raise typer.Exit(2) from None
        s.commit()
        console.print(f"added {row.username} ({row.role})", highlight=False)


@users_app.command("list")
def users_list(database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL")):
    """List users, their roles and scopes."""
    from sqlmodel import select

    from engine.registry.access import UserRow
    with _users_session(database_url) as s:
        t = Table("Username", "Name", "Role", "MDT", "Practice", "Locality", "Active", "Last login")
        for u in s.exec(select(UserRow).order_by(UserRow.username)):
            t.add_row(u.username, u.full_name or "", u.role, u.mdt or "", u.practice or "", u.locality or "",
                      "yes" if u.active else "no", str(u.last_login_at or ""))
        console.print(t)


@users_app.command("set")
def users_set(username: str = typer.Argument(...),
              role: Optional[str] = typer.Option(None, "--role"),
              new_password: bool = typer.Option(False, "--password", help="Prompt for a new password"),
              active: Optional[bool] = typer.Option(None, "--active/--disabled"),
              mdt: Optional[str] = typer.Option(None, "--mdt"), practice: Optional[str] = typer.Option(None, "--practice"),
              locality: Optional[str] = typer.Option(None, "--locality"),
              database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL")):
    """Change a user's role, scope, password or status (revokes their tokens and sessions)."""
    from sqlmodel import select

    from api.users import UserError, update_user
    from engine.registry.access import UserRow
    with _users_session(database_url) as s:
        row = s.exec(select(UserRow).where(UserRow.username == username.strip().lower())).first()
        if row is None:
            err.print(f"no user {username!r}")
            raise typer.Exit(2)
        try:
            update_user(s, row, password=_password(None) if new_password else None, role=role, active=active, mdt=mdt,
                        practice=practice, locality=locality)
        except UserError as e:
            err.print(str(e))
            raise typer.Exit(2) from None
        s.commit()
        console.print(f"updated {row.username}", highlight=False)


# ---- population scale: synthetic population, batch evaluation, benchmark -------------------------------
@app.command()
def generate(patients: int = typer.Option(10000, "--patients", help="How many people"),
             seed: int = typer.Option(1, "--seed", help="Same seed, same population"),
             out: Path = typer.Option(Path("var/population"), "--out", help="Folder for the Parquet tables"),
             as_of: Optional[str] = typer.Option(None, "--as-of", help="Records end on this date (default today)"),
             workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: CPUs)"),
             format: str = typer.Option("parquet", "--format", help="parquet or duckdb")):
    """Write a synthetic population (patients, facts, codings, attributes) for `evaluate-population`."""
    from engine.population.generate import write_population

    ref = _date(as_of, "--as-of") or dt.date.today()
    info = write_population(out, patients, seed=seed, as_of=ref, workers=workers, fmt=format)
    console.print(f"{info['patients']} patients, {info['facts']} facts in {info['total_seconds']} s -> {out}/",
                  highlight=False)


@app.command("evaluate-population")
def evaluate_population(data: Path = typer.Option(Path("var/population"), "--data", help="Folder from `carepath generate`"),
                        as_of: str = typer.Option(..., "--as-of", help="Reference date YYYY-MM-DD"),
                        period_start: Optional[str] = typer.Option(None, "--period-start", help="Measurement period start"),
                        workers: Optional[int] = typer.Option(None, "--workers", help="DuckDB threads (default: CPUs)"),
                        protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols"),
                        results: Optional[Path] = typer.Option(None, "--results", help="DuckDB results file (default <data>/results.duckdb)"),
                        run: Optional[str] = typer.Option(None, "--run", help="Run id (same id resumes that run)"),
                        chunk: int = typer.Option(62500, "--chunk", min=1, help="Patients evaluated together per worker (memory follows this)"),
                        memory_limit: Optional[str] = typer.Option(None, "--memory-limit", help="DuckDB memory limit, e.g. 3GB"),
                        format: str = typer.Option("text", "--format", help="text or json")):
    """Evaluate every protocol in force over a whole population with the batch engine (DuckDB)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from engine.population.run import evaluate_population_run

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
            rate = f"{100 * v['numerator'] / v['denominator']:.1f} %" if v["denominator"] else "—"
            console.print(f"  {p['protocol']} {m}: {v['numerator']} / {v['denominator']} ({rate}), "
                          f"{v['exclusions']} excluded", highlight=False)
    console.print(f"{summary['patients']} patients in {summary['chunks']} chunks, {summary['seconds']} s. "
                  f"Results: {summary['results']} (run {summary['run']})", highlight=False)


bench_app = typer.Typer(help="Benchmarks (not part of the test run); results go to benchmarks/results/.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("batch")
def bench_batch(patients: int = typer.Option(10000, "--patients"), seed: int = typer.Option(1, "--seed"),
                as_of: str = typer.Option("2026-04-30", "--as-of"),
                workers: Optional[int] = typer.Option(None, "--workers"),
                protocol: str = typer.Option("t2dm-annual-care", "--protocol"),
                durable_sample: int = typer.Option(2000, "--durable-sample", help="Patients run through durable-rules too"),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """The batch engine over a synthetic population, with the plain-Python reference and a durable-rules sample."""
    from engine.population.bench import run as run_bench

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
                     chunk: int = typer.Option(62500, "--chunk"),
                     scaling: str = typer.Option("10000,100000", "--scaling", help="Smaller runs for the growth figures"),
                     reference_sample: int = typer.Option(1000, "--reference-sample"),
                     as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """P1 (every protocol over the population, persisted), scaling, and P4 (one measure by practice)."""
    from engine.population.bench_population import run as run_bench

    sizes = tuple(int(x) for x in scaling.split(",") if x.strip())
    out = run_bench(patients, seed, _date(as_of, "--as-of"), workers, chunk, sizes, reference_sample,
                    log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"P1 {out['p1']['patients']} patients x {out['p1']['protocols']} protocols: "
               f"{out['p1']['seconds']} s, peak RSS {out['p1']['peak_rss_mib']} MiB; P4 {out['p4']['seconds_best']} s")


@bench_app.command("worklist")
def bench_worklist(patients: int = typer.Option(750000, "--patients"), seed: int = typer.Option(1, "--seed"),
                   as_of: str = typer.Option("2026-11-20", "--as-of"), mdt: Optional[str] = typer.Option(None, "--mdt"),
                   requests: int = typer.Option(300, "--requests"),
                   database_url: Optional[str] = typer.Option(None, "--database-url", help="Registry (default: a cached SQLite file)"),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """P3: first page of an MDT's worklist by role through real HTTP, on a bulk-loaded registry."""
    from engine.population.bench_worklist import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), mdt, requests, database_url,
                    log=lambda m: err.print(m, highlight=False))
    _bench_out(out, as_json, f"P3 MDT {out['mdt']} ({out['mdt_patients']} patients): p95 {out['worklist']['p95_ms']} ms")


@bench_app.command("pages")
def bench_pages(patients: int = typer.Option(0, "--patients", help="0: the demo registry; N: a generated registry "
                                             "of N people (built once, cached under benchmarks/.data/)"),
                requests: int = typer.Option(50, "--requests", help="Requests per page and user"),
                seed: int = typer.Option(1, "--seed"), workers: int = typer.Option(2, "--workers"),
                profile: bool = typer.Option(False, "--profile", help="Profile the audit page in-process too"),
                as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """p50 / p95 / p99 of the protocol pages and the audit page, as clinical lead and auditor, through a real
    uvicorn server on loopback (targets: protocol page p95 <= 300 ms, audit page p95 <= 500 ms)."""
    from engine.population.bench_pages import run as run_bench

    out = run_bench(patients, requests, seed, workers=workers, profile=profile,
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
    from engine.population.bench_incremental import run as run_bench

    out = run_bench(patients, seed, _date(as_of, "--as-of"), rate, seconds, database_url,
                    log=lambda m: err.print(m, highlight=False))
    ol = out.get("open_loop") or {}
    _bench_out(out, as_json, f"P2 at {rate}/s: p50 {ol.get('p50_ms')} p95 {ol.get('p95_ms')} p99 {ol.get('p99_ms')} ms")


@bench_app.command("durable")
def bench_durable(evaluations: int = typer.Option(1000000, "--evaluations"),
                  patients: int = typer.Option(750000, "--patients", help="Population whose summary facts are used"),
                  seed: int = typer.Option(1, "--seed"), as_of: str = typer.Option("2026-11-20", "--as-of"),
                  workers: int = typer.Option(2, "--workers"),
                  as_json: bool = typer.Option(False, "--json", help="Print one JSON object")):
    """durable-rules in worker processes over many evaluations: memory per worker sampled, results checked."""
    from engine.population.bench_durable import run as run_bench

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
    from engine.population.bench_all import run as run_all

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
    from engine.population.bench_all import combine

    out = combine(files)
    for row in out["summary"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        console.print(f"  {row['figure']}: {row['measured']} (target {row['target']}) {mark}"
                      + (f" — {row['note']}" if row.get("note") else ""), highlight=False)
    console.print(f"written to {out.get('written')}", highlight=False)


# ---- audit verify-log: the access log's hash chain (engine/registry/logchain.py) ---------------------------------
audit_app = typer.Typer(help="Checks on the service's own records.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify-log")
def audit_verify_log(database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL",
                                                                help="Registry database (default sqlite:///var/carepath.db)"),
                     expect_head: Optional[str] = typer.Option(None, "--expect-head", metavar="ID:HASH",
                                                               help="A head printed by an earlier run: check it is still there")):
    """Walk the access log's hash chain: OK with the row count and the head (record it elsewhere to catch
    a rewritten or cut-back tail with --expect-head), or the first broken link (row id, what differs) and
    exit status 1."""
    from engine.registry.db import database_url as default_url, make_engine
    from engine.registry.logchain import verify

    head = None
    if expect_head:
        hid, _, hhash = expect_head.partition(":")
        if not hid.isdigit() or len(hhash) != 64:
            raise typer.BadParameter("--expect-head is ID:HASH as printed by verify-log (head: row ID HASH)")
        head = (int(hid), hhash.lower())
    engine = make_engine(database_url or default_url())
    try:
        result = verify(engine, expect_head=head)
    finally:
        engine.dispose()
    if result.ok:
        head = f"; head: row {result.head_id} {result.head_hash}" if result.head_id is not None else ""
        console.print(f"access log OK: {result.rows} rows, chain intact{head}", highlight=False)
        return
    console.print(f"access log BROKEN at row {result.broken_at} (after {result.rows} good rows): {result.problem}",
                  highlight=False)
    raise typer.Exit(1)


# ---- db current | upgrade | backup (engine/cli_ops.py) ---------------------------------------------------------
from engine.cli_ops import db_app  # noqa: E402

app.add_typer(db_app, name="db")


# ---- authoring: test, impact, docs, draft, publish (engine/cli_authoring.py) ------------------------------------
from engine.cli_authoring import register as _register_authoring  # noqa: E402

_register_authoring(app)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
