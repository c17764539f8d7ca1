"""`carepath outcomes risk-model`: the risk-stratification score and tiers checked against the emergency
admissions of the 12 months after a date (engine/app/outcomes/risk_model.py; docs/outcomes.md)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from cli.authoring import _date
from cli.common import DEFAULT_PROTOCOLS, _library, err

from cli.outcomes import outcomes_app  # the one `carepath outcomes` group


@outcomes_app.command("risk-model")
def risk_model(population: Optional[Path] = typer.Option(None, "--population",
                                                         help="Population folder (`carepath generate`) or a population.duckdb; "
                                                              "without it, the registry's records (--database-url)"),
               database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL",
                                                          help="Registry database (default sqlite:///var/carepath.db)"),
               as_of: str = typer.Option(..., "--as-of", help="Date T the model is evaluated as of (YYYY-MM-DD); "
                                                             "outcomes are counted from T to T + 12 months"),
               protocol: str = typer.Option("risk-stratification", "--protocol",
                                            help="id or id@version (default: the version in force at T, else the newest)"),
               outcome: str = typer.Option("admissions_12m", "--outcome",
                                           help="The protocol's 12-month count definition used as the outcome"),
               protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols"),
               chunk: Optional[int] = typer.Option(None, "--chunk", min=1, help="Patients evaluated together (memory follows this; default: equal chunks of at most 31,250, as evaluate-population)"),
               svg: Optional[Path] = typer.Option(None, "--svg", help="Also write the calibration plot (SVG) here"),
               format: str = typer.Option("text", "--format", help="text or json (schema carepath.risk-model/v1)")):
    """Discrimination (c-statistic, DeLong 95% CI) and calibration (observed vs expected admissions by decile)
    of the risk score, the eFI and the Hospital Frailty Risk Score, and admissions per tier."""
    from engine.app.outcomes.risk_model import (calibration_svg, choose_protocol, registry_population, render_text,
                                                risk_model_report)

    if format not in ("text", "json"):
        err.print(f"unknown format {format!r} (text or json)")
        raise typer.Exit(2)
    ref = _date(as_of, "--as-of")
    lib = _library(protocols)
    log = (lambda m: err.print(m, highlight=False)) if format == "text" else None
    try:
        proto = choose_protocol(lib.protocols, protocol, ref)
        with tempfile.TemporaryDirectory(prefix="carepath-risk-model-") as tmp:
            if population is None:  # the registry's own records, as stored
                population = registry_population(database_url, Path(tmp) / "population.duckdb")
            report = risk_model_report(population, proto, ref, outcome, chunk_size=chunk, log=log)
    except (ValueError, FileNotFoundError) as e:
        err.print(str(e))
        raise typer.Exit(2) from None
    if svg:
        svg.write_text(calibration_svg(report), encoding="utf-8")
    if format == "json":
        print(json.dumps(report, indent=2))
    else:
        typer.echo(render_text(report))
