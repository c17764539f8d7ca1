"""The author's commands: test, impact, docs, draft, publish (registered on the `carepath` app by cli.py).

    carepath test [PATHS]                          run the protocols' own cases (<protocol>.tests.yaml)
    carepath impact OLD NEW --population PATH      what a change shifts, before publishing it
    carepath docs [PATHS] [--out DIR]              a protocol as a readable summary for clinicians
    carepath draft PROTOCOL [--bump minor]         start the next version (a draft copy, with its tests)
    carepath publish FILE [--effective DATE]       check, test, activate and record a version
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
    from engine.protocols.cases import CaseFileError, case_files, load_cases, run_case
    from engine.protocols.errors import ProtocolError

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


def register(app: typer.Typer) -> None:
    app.command("test")(test)
