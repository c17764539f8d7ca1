"""The author's commands: test, impact, docs, draft, publish (registered on the `carepath` app by cli.py).

    carepath test [PATHS]                          run the protocols' own cases (<protocol>.tests.yaml)
    carepath impact OLD NEW --population PATH      what a change shifts, before publishing it
    carepath docs [PATHS] [--out DIR]              a protocol as a readable summary for clinicians
    carepath draft PROTOCOL [--bump minor]         start the next version (a draft copy, with its tests)
    carepath publish FILE --approved-by NAME [--effective DATE]   check, test, activate and record a version (two-person)
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(soft_wrap=True, width=140, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)
ENGINES = ("durable", "python", "batch")


def _date(value: Optional[str], what: str) -> Optional[dt.date]:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        err.print(f"{what} {value!r} is not a date (expected YYYY-MM-DD)")
        raise typer.Exit(2) from None


# ---- carepath test ---------------------------------------------------------------------------------------
def test(paths: list[Path] = typer.Argument(None, help="Case files, protocol files or folders (default: protocols/)"),
         engine: str = typer.Option("durable", "--engine", help="durable | python | batch | all (each case on every engine)"),
         name: Optional[str] = typer.Option(None, "--name", "-k", help="Only cases whose name contains this text"),
         format: str = typer.Option("text", "--format", help="text or json"),
         verbose: bool = typer.Option(False, "--verbose", "-v", help="List passing cases too")):
    """Run every protocol's own test cases (<protocol>.tests.yaml beside it): records -> expected care plan,
    tasks, flags, measures. A failing case shows what was expected, what came out, and the why-lines.

    Exit status: 0 all passed, 1 a case failed, 2 a case file could not be read."""
    from engine.app.cases import CaseFileError, case_files, load_cases, run_case
    from engine.language.errors import ProtocolError

    engines = list(ENGINES) if engine == "all" else [engine]
    if any(e not in ENGINES for e in engines):
        err.print(f"--engine {engine!r}: expected durable, python, batch or all")
        raise typer.Exit(2)
    files = case_files(paths or [Path("protocols")])
    if not files:
        err.print(f"no test files (*.tests.yaml) under {', '.join(str(p) for p in paths or ['protocols'])}")
        raise typer.Exit(2)
    report, passed, failed, broken = [], 0, 0, 0
    for f in files:
        try:
            cf = load_cases(f)
        except (CaseFileError, ProtocolError, OSError) as e:
            broken += 1
            err.print(f"[red]{f}: cannot run: {e}[/red]", markup=True)
            report.append({"file": str(f), "error": str(e)})
            continue
        outcomes = []
        for c in cf.cases:
            if name and name.lower() not in c.name.lower():
                continue
            for e in engines:
                o = run_case(cf, c, e)
                outcomes.append((e, o))
        n_fail = sum(not o.passed for _, o in outcomes)
        passed += len(outcomes) - n_fail
        failed += n_fail
        keys = sorted({o.protocol for _, o in outcomes}) or [cf.protocol.key]
        report.append({"file": str(f), "protocol": keys, "passed": len(outcomes) - n_fail, "failed": n_fail,
                       "cases": [{"name": o.case.name, "engine": e, "line": o.case.line, "passed": o.passed,
                                  "problems": o.problems, "why": o.why} for e, o in outcomes]})
        if format != "json":
            colour = "red" if n_fail else "green"
            console.print(f"[{colour}]{f}[/{colour}] ({', '.join(keys)}): {len(outcomes) - n_fail} passed, {n_fail} failed",
                          markup=True)
            for e, o in outcomes:
                on = f" [{e}]" if len(engines) > 1 else ""
                if o.passed:
                    if verbose:
                        console.print(f"  ok    {o.case.name}{on}", markup=False)
                    continue
                console.print(f"  [red]FAIL[/red]  {o.case.name}{on}  ({f.name}:{o.case.line}, {o.protocol}, as of {o.case.as_of})",
                              markup=True)
                for p in o.problems:
                    console.print(f"        - {p}", markup=False)
                console.print("        why:", markup=False)
                for w in o.why:
                    console.print(f"          {w}", markup=False)
    if format == "json":
        print(json.dumps({"files": report, "passed": passed, "failed": failed, "unreadable": broken}, indent=2))
    else:
        console.print(f"{passed} passed, {failed} failed" + (f", {broken} file(s) could not be read" if broken else "")
                      + f" ({len(files)} file(s))")
    raise typer.Exit(2 if broken else 1 if failed else 0)




# ---- carepath draft / publish -------------------------------------------------------------------------------------
def _bump(version: str, part: str) -> str:
    major, minor, patch = (int(x) for x in version.split("-")[0].split("."))
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    if part == "patch":
        return f"{major}.{minor}.{patch + 1}"
    raise typer.BadParameter(f"--bump {part!r}: expected major, minor or patch")


def _set_line(text: str, key: str, value: str) -> str:
    """Replace the top-level `key:` line of a YAML file, keeping comments and everything else."""
    import re
    pattern = re.compile(rf"^{re.escape(key)}:[ \t]*[^\n#]*?(?P<comment>[ \t]+#[^\n]*)?$", re.M)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{key}: {value}" + (m.group("comment") or ""), text, count=1)
    return text


def draft(protocol: Path = typer.Argument(..., help="The protocol file to start the next version from"),
          bump: str = typer.Option("minor", "--bump", help="major | minor | patch (semantic versioning)"),
          version: Optional[str] = typer.Option(None, "--version", help="The new version, instead of --bump")):
    """Start a new version of a protocol: a draft copy `<id>@<version>.yaml` beside it (status: draft, so it
    is never in force until published), and a copy of its test cases pinned to the new version.

    Then edit the draft, run `carepath test`, `carepath impact OLD NEW --population ...`, and `carepath publish`.
    A role agreement is drafted the same way (`<agreement id>@<version>.yaml` beside it, no test cases)."""
    from engine.app.cases import case_files
    from engine.language.agreements import load_agreement
    from engine.language.library import _kind

    if _kind(protocol) == "agreement":
        ag, new, target = _write_draft(protocol, load_agreement, lambda lib: lib.agreements, bump, version)
        console.print(f"next: edit the draft; carepath validate {protocol.parent.parent}; "
                      f"carepath publish {target} --effective YYYY-MM-DD --approved-by <a second clinical lead>")
        return
    from engine.language.loader import load_protocol
    proto, new, target = _write_draft(protocol, load_protocol, lambda lib: lib.protocols, bump, version)
    for tf in case_files([protocol]):
        out = protocol.parent / f"{proto.id}@{new}.tests.yaml"
        if out.exists():
            continue
        t = _set_line(tf.read_text(encoding="utf-8"), "protocol", f"{proto.id}@{new}")
        out.write_text(t, encoding="utf-8")
        console.print(f"wrote {out} (the cases of {tf.name}, now run on {new})")
        break
    console.print("next: edit the draft; carepath test " + str(protocol.parent) + "; carepath impact "
                  f"{protocol} {target} --population var/demo-bundles; carepath publish {target} --approved-by <a second clinical lead>")


def _write_draft(path: Path, load, versions_of, bump: str, version: Optional[str]):
    """The one draft step for protocols and role agreements: load the file (errors at file:line), pick the new
    version (newer than every version of that id on file), write `<id>@<new>.yaml` with status draft."""
    from engine.language.errors import ProtocolError
    from engine.language.library import load_library, version_key
    from engine.language.yamlsrc import SEMVER

    try:
        doc = load(path)
    except ProtocolError as e:
        for p in e.problems:
            err.print(str(p))
        raise typer.Exit(2) from None
    new = version or _bump(doc.version, bump)
    if not SEMVER.match(new):
        err.print(f"--version {new!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        raise typer.Exit(2)
    latest = max((d for d in versions_of(load_library([path.parent])) if d.id == doc.id),
                 key=lambda d: version_key(d.version))
    if version_key(new) <= version_key(latest.version):
        err.print(f"{doc.id} {new} is not newer than the latest version on file, {latest.version} ({latest.source})")
        raise typer.Exit(2)
    target = path.parent / f"{doc.id}@{new}.yaml"
    if target.exists():
        err.print(f"{target} already exists")
        raise typer.Exit(2)
    target.write_text(_set_line(_set_line(path.read_text(encoding="utf-8"), "version", new), "status", "draft"),
                      encoding="utf-8")
    console.print(f"wrote {target} ({doc.id} {new}, status: draft, copied from {doc.version})")
    return doc, new, target


def publish(file: Path = typer.Argument(..., help="The protocol (or role agreement) version to publish"),
            effective: Optional[str] = typer.Option(None, "--effective", help="Date it takes effect (YYYY-MM-DD); "
                                                    "default: the file's effective date"),
            today: Optional[str] = typer.Option(None, "--today", help="Publication date (default: today)"),
            approved_by: Optional[str] = typer.Option(None, "--approved-by", help="The second person (a clinical lead, "
                                                      "not the author) who approved this version: required"),
            author: Optional[str] = typer.Option(None, "--author", envvar="CAREPATH_USER",
                                                 help="Who wrote the version (default: your login name)"),
            database_url: Optional[str] = typer.Option(None, "--database-url", help="A registry: the approver must be "
                                                       "an active clinical lead there, and the publication is written "
                                                       "to its access log")):
    """Publish a version: it must validate with the library beside it, be newer than every version on file
    and pass its test cases, and a second person — a clinical lead other than the author — must have approved
    it (--approved-by). Its status becomes active (and its effective date --effective), and its content,
    author and approver are recorded in published.lock: from then on `carepath validate` refuses any change
    to it. Older versions stay: evaluating as of an earlier date uses the version then in force."""
    import getpass

    from engine.app import approvals
    from engine.language import checks

    author = (author or getpass.getuser() or "").strip()
    if problem := approvals.approval_problem(author, approved_by):
        err.print(f"not published: {problem} (--approved-by NAME)")
        raise typer.Exit(2)
    approved_by = approved_by.strip()
    if database_url:
        from sqlmodel import Session

        from engine.registry.db import make_engine
        with Session(make_engine(database_url)) as s:
            if problem := approvals.approver_problem(s, approved_by):
                err.print(f"not published: {problem}")
                raise typer.Exit(2)
    from engine.app.cases import case_files, load_cases, run_case
    from engine.language.library import _kind, load_library, version_key

    when = _date(today, "--today") or dt.date.today()
    eff = _date(effective, "--effective")
    kind = _kind(file)
    if kind not in ("protocol", "agreement", "shared"):
        err.print(f"{file}: not a protocol, role agreement or shared definitions file")
        raise typer.Exit(2)
    manifest = checks.find_manifest(file)
    root = manifest.parent if manifest else file.parent
    text = file.read_text(encoding="utf-8")
    new_text = _set_line(text, "status", "active")
    if eff is not None:
        new_text = _set_line(new_text, "effective", eff.isoformat())
    original = text
    file.write_text(new_text, encoding="utf-8")
    ok = False
    try:
        lib = load_library([root])
        mine = [p for p in lib.problems if Path(p.location.file).resolve() == file.resolve()]
        errors = [p for p in lib.problems if p.severity == "error"]
        for p in mine:
            (err if p.severity == "error" else console).print(str(p))
        if errors:
            for p in errors:
                if p not in mine:
                    err.print(str(p))
            err.print(f"not published: {len(errors)} error(s) in the library (carepath validate {root})")
            raise typer.Exit(1)
        items = {"protocol": lib.protocols, "agreement": lib.agreements, "shared": lib.shared}[kind]
        item = next(x for x in items if Path(x.source).resolve() == file.resolve())
        entries = checks.read_manifest(manifest) if manifest else {}
        if item.key in entries:
            err.print(f"not published: {item.key} is already published ({entries[item.key].get('published')})")
            raise typer.Exit(1)
        newer = [x for x in items if x.id == item.id and version_key(x.version) >= version_key(item.version) and x is not item]
        if newer and kind != "shared":  # shared definitions are pinned by version: any order is fine
            err.print(f"not published: {item.id} already has version {max(x.version for x in newer)} on file")
            raise typer.Exit(1)
        if kind == "protocol":
            from engine.language.codelist_checks import made_up_code_problems  # the API's publish applies it too
            made_up = made_up_code_problems(item)
            for p in made_up:
                err.print(str(p))
            if made_up:
                err.print(f"not published: {item.key} uses made-up codes (the synthetic code system)")
                raise typer.Exit(1)
            from engine.language.shared import unpublished_uses
            for u in unpublished_uses(item, manifest):
                err.print(f"not published: {item.key} uses {u.id}@{u.version}, which is not published "
                          f"(carepath publish {u.source})")
            if unpublished_uses(item, manifest):
                raise typer.Exit(1)
            files = case_files([file])
            if not files:
                err.print(f"not published: no test cases name {item.key} (carepath draft copies them; see README)")
                raise typer.Exit(1)
            failed = []
            for f in files:
                cf = load_cases(f)
                failed += [(f, o) for o in (run_case(cf, c) for c in cf.cases) if not o.passed]
            if failed:
                for f, o in failed:
                    err.print(f"{f.name}:{o.case.line}: {o.case.name}: " + "; ".join(o.problems))
                err.print(f"not published: {len(failed)} failing case(s) (carepath test {file.parent})")
                raise typer.Exit(1)
        checks.record_publication(root, item.key, file, when.isoformat(), author=author, approved_by=approved_by)
        ok = True
    finally:
        if not ok:
            file.write_text(original, encoding="utf-8")
    if database_url:
        _log_publication(database_url, item.key, file, author, approved_by)
    if kind == "shared":
        console.print(f"published {item.key}; recorded in {root / checks.MANIFEST} (protocols pin it with "
                      f"uses: [{item.use}])", markup=False)
        return
    previous = [x for x in items if x.id == item.id and x is not item and x.status == "active"]
    console.print(f"published {item.key} (effective {item.effective}); recorded in {root / checks.MANIFEST}")
    # in force on a date: the highest active version effective on or before it (Library.in_force), so a version
    # with the same effective date as this one is superseded on that date and never in force
    for x in sorted((x for x in previous if x.effective == item.effective), key=lambda x: version_key(x.version)):
        console.print(f"{x.key} has the same effective date ({item.effective}): {item.key}, the higher version, is in "
                      f"force from then, so {x.key} never is (it stays on file, published)")
    earlier = [x for x in previous if x.effective is None or item.effective is None or x.effective < item.effective]
    if earlier:
        last = max(earlier, key=lambda x: version_key(x.version))
        console.print(f"{last.key} stays on file: dates before {item.effective} are evaluated with it")


def _log_publication(database_url: str, key: str, file: Path, author: str, approved_by: str) -> None:
    """The registry's access log records the CLI publication as the API's does (hash-chained)."""
    from sqlmodel import Session

    from engine.registry.access import AccessLogRow
    from engine.registry.db import make_engine
    from engine.registry.logchain import seal
    from engine.registry.tables import utcnow
    with Session(make_engine(database_url)) as s:
        row = AccessLogRow(username=approved_by, role="clinical-lead", action="write", method="CLI", path="carepath publish",
                           resource="protocol", status=200, patients=[], at=utcnow(),
                           detail={"published": key, "file": file.name, "author": author, "approved_by": approved_by,
                                   "via": "cli"})
        seal(s.connection(), row)
        s.add(row)
        s.commit()


# ---- carepath impact -------------------------------------------------------------------------------------------------
def impact(old: str = typer.Argument(..., help="The published version: a protocol file, id@version, or 'none' for a new pathway"),
           new: str = typer.Argument(..., help="The changed version: a protocol file (a draft) or id@version"),
           population: str = typer.Option(..., "--population", help="A folder of FHIR bundles (var/demo-bundles), a bundle, "
                                          "a registry database (var/carepath.db or a DATABASE_URL), or demo[:N]"),
           as_of: Optional[str] = typer.Option(None, "--as-of", help="Reference date (default today)"),
           protocols: Path = typer.Option(Path("protocols"), "--protocols", help="The library: role agreements, id@version"),
           format: str = typer.Option("text", "--format", help="text or json"),
           examples: int = typer.Option(3, "--examples", help="Example patients per kind of change")):
    """Before publishing: how a change shifts outputs over a population. Patients entering and leaving
    the register, tasks and flags added or removed (per role, provider and practice), care-plan statuses,
    tiers and measures, with example patients and the why-lines of what changed for them."""
    from engine.app.impact import PopulationError, impact as run, load_population, render_text
    from engine.language.errors import ProtocolError
    from engine.language.library import load_library
    from engine.language.loader import load_protocol

    ref = _date(as_of, "--as-of") or dt.date.today()
    lib = load_library([protocols]) if protocols.exists() else None

    def resolve(ref_: str):
        if ref_ == "none":
            return None
        if Path(ref_).suffix in (".yaml", ".yml"):
            try:
                return load_protocol(Path(ref_))
            except ProtocolError as e:
                for p in e.problems:
                    err.print(str(p))
                raise typer.Exit(2) from None
        pid, _, version = ref_.partition("@")
        found = lib.find(pid, version or None) if lib else None
        if found is None:
            err.print(f"{ref_}: not a protocol file and not a protocol in {protocols}/")
            raise typer.Exit(2)
        return found

    before, after = resolve(old), resolve(new)
    if after is None:
        err.print("NEW cannot be 'none'")
        raise typer.Exit(2)
    if before is not None and before.id != after.id:
        err.print(f"OLD is {before.id} and NEW is {after.id}: compare two versions of one protocol")
        raise typer.Exit(2)
    agreements = lib.agreements_in_force(ref) if lib else []
    try:
        rep = run(before, after, load_population(population, ref), agreements, ref, examples_per_change=examples)
    except PopulationError as e:
        err.print(str(e))
        raise typer.Exit(2) from None
    if format == "json":
        print(json.dumps(rep.as_dict(), indent=2, default=str))
    else:
        render_text(rep, console)


# ---- carepath docs ---------------------------------------------------------------------------------------------------
def docs(paths: list[Path] = typer.Argument(None, help="Protocol files or folders (default: protocols/)"),
         out: Optional[Path] = typer.Option(None, "--out", help="Write <id>@<version>.md files and index.md here "
                                            "(default: print to the terminal)"),
         all_versions: bool = typer.Option(False, "--all-versions", help="Every version, not only the latest of each"),
         as_of: Optional[str] = typer.Option(None, "--as-of", help="Date for 'in force' and role agreements (default today)")):
    """A protocol as a readable summary for clinicians: who is on it, what is due when, who does it (by
    locality, from the role agreements), what triggers escalation, how it is audited, with evidence."""
    from engine.app.docs import render_agreement, render_index
    from engine.app.review_doc import render_review as render
    from engine.language.library import load_library, version_key

    ref = _date(as_of, "--as-of") or dt.date.today()
    lib = load_library(paths or [Path("protocols")])
    for p in lib.errors:
        err.print(str(p))
    agreements = lib.agreements_in_force(ref) or lib.agreements
    in_force = {p.key for p in lib.in_force(ref)}
    chosen = lib.protocols
    if not all_versions:
        latest: dict = {}
        for p in lib.protocols:
            if p.id not in latest or version_key(p.version) > version_key(latest[p.id].version):
                latest[p.id] = p
        chosen = list(latest.values())
    chosen = sorted(chosen, key=lambda p: (p.id, version_key(p.version)))
    if not chosen:
        err.print("no protocols found")
        raise typer.Exit(2)
    if out is None:
        for p in chosen:
            print(render(p, agreements, p.key in in_force))
        return
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for p in chosen:
        (out / f"{p.key}.md").write_text(render(p, agreements, p.key in in_force), encoding="utf-8")
        entries.append((p.title, p.key, p.status + (", in force" if p.key in in_force else "")))
    for ag in lib.agreements:
        (out / f"agreement-{ag.key}.md").write_text(render_agreement(ag), encoding="utf-8")
        entries.append((ag.title, f"agreement-{ag.key}", f"role agreement, {ag.status}"))
    (out / "index.md").write_text(render_index(entries, ref), encoding="utf-8")
    console.print(f"wrote {len(chosen)} protocol and {len(lib.agreements)} role agreement summaries, and index.md, to {out}/")


def register(app: typer.Typer) -> None:
    app.command("test")(test)
    app.command("draft")(draft)
    app.command("publish")(publish)
    app.command("impact")(impact)
    app.command("docs")(docs)
