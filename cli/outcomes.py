"""`carepath outcomes report`: the outcome evaluation (engine/app/outcomes) of issue 19 as JSON and text."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Optional

import typer

from cli.authoring import _date
from cli.common import console, err

outcomes_app = typer.Typer(help="Outcomes for the pathway cohorts: SPC, funnel, pilot comparison (docs/outcomes.md).")


def _fmt(x, nd=1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def _pct(ci) -> str:
    return "-" if not ci else f"{ci[0] * 100:+.1f}% to {ci[1] * 100:+.1f}%"


@outcomes_app.command("report")
def report(cohort: str = typer.Option("75-plus", "--cohort", help="A pilot-outcomes cohort: diabetes, 75-plus, frailty, tier-3, tier-2 or tier-1"),
           outcome: str = typer.Option("emergency_admission", "--outcome",
                                       help="emergency_admission, ae_attendance, bed_days or readmission_30d"),
           level: str = typer.Option("area", "--level", help="area, locality, mdt or practice (the SPC chart)"),
           unit: Optional[str] = typer.Option(None, "--unit", help="The locality, MDT or practice code"),
           funnel_level: str = typer.Option("practice", "--funnel-level", help="Units compared in the funnel"),
           pilot: Optional[str] = typer.Option(None, "--pilot", help="Pilot practices: practice codes, MDTs or localities, comma-separated"),
           start: Optional[str] = typer.Option(None, "--start", help="Pilot start month YYYY-MM"),
           cost: float = typer.Option(2000.0, "--cost", help="Assumed average cost of an emergency admission (GBP), for the savings scenario"),
           as_of: Optional[str] = typer.Option(None, "--as-of", help="Report on the 3 years before this date (default today)"),
           synthetic: Optional[int] = typer.Option(None, "--synthetic", help="Use a generated population of N people (records with hospital care from the hazard model) instead of the registry"),
           seed: int = typer.Option(1, "--seed", help="Synthetic population seed"),
           plant: Optional[float] = typer.Option(None, "--plant-effect", help="Synthetic only: plant this relative change (e.g. -0.10) in emergency admissions of the pilot practices from --start"),
           database_url: Optional[str] = typer.Option(None, "--database-url", help="Registry (default DATABASE_URL)"),
           from_measures: bool = typer.Option(False, "--from-measures", help="Evaluate record by record with the reference evaluator (the same pilot-outcomes measures) instead of the DuckDB batch engine: slow"),
           population: Optional[Path] = typer.Option(None, "--population", help="Count with the protocol's outcome measures (pilot-outcomes) over this population folder (`carepath generate`) with the DuckDB batch engine, month by month (cohorts: diabetes, 75-plus, frailty, tier-1..3; docs/outcomes.md)"),
           chunk: Optional[int] = typer.Option(None, "--chunk", min=1, help="With --population: patients per chunk (memory; default: equal chunks of at most 31,250 on the workers, as evaluate-population)"),
           workers: int = typer.Option(2, "--workers", help="With --population or --synthetic: worker processes"),
           months: Optional[int] = typer.Option(None, "--months", help="Only the last N months (each month is one evaluation of the protocol)"),
           protocols: Path = typer.Option(Path("protocols"), "--protocols", help="The protocol folder (pilot-outcomes)"),
           out: Optional[Path] = typer.Option(None, "--out", help="Write the report as JSON here"),
           fhir: Optional[Path] = typer.Option(None, "--fhir", help="Write the monthly series as a FHIR Bundle of MeasureReports here"),
           fmt: str = typer.Option("text", "--format", help="text or json (to stdout)")):
    """Counted by the pilot-outcomes protocol's outcome measures (docs/outcomes.md). Monthly standardised rates with an XmR chart, a funnel between units, and (with --pilot and --start)
    before/after and difference-in-differences with its interval and a savings scenario."""
    from cli.common import _library
    from engine.app.outcomes import protocol_route
    from engine.app.outcomes.report import Options, build, pilot_practices

    ref = _date(as_of, "--as-of") or dt.date.today()
    proto = _library([protocols]).find("pilot-outcomes")
    if proto is None:
        err.print(f"no pilot-outcomes protocol in {protocols}")
        raise typer.Exit(2)
    log = (lambda m: err.print(m, highlight=False))
    cohorts = protocol_route.cohorts_of(proto)
    if cohort != "all" and cohort not in cohorts:  # said before any counting
        err.print(f"no cohort {cohort!r} in {proto.id}@{proto.version} (cohorts: {', '.join(cohorts)})")
        raise typer.Exit(2)
    if plant is not None and not (synthetic and pilot and start):
        err.print("--plant-effect needs --synthetic, --pilot and --start")
        raise typer.Exit(2)
    if population is not None:
        try:
            table = protocol_route.from_population(population, proto, ref, months=months, chunk_size=chunk,
                                                   workers=workers, log=log)
        except FileNotFoundError as e:
            err.print(str(e))
            raise typer.Exit(2) from None
    elif from_measures:
        from sqlmodel import Session

        from engine.app.outcomes.table import from_measure_values
        from engine.registry.ingest import iter_records

        if synthetic:
            from engine.synthetic.generate import generate
            from engine.synthetic.outcomes import OutcomeModel

            table = from_measure_values(generate(synthetic, seed=seed, as_of=ref, outcomes=OutcomeModel()), proto, ref,
                                        months=months)
        else:
            from engine.registry.db import database_url as default_url, make_engine

            with Session(make_engine(database_url or default_url())) as session:
                table = from_measure_values(iter_records(session), proto, ref, months=months)
    elif synthetic:
        from engine.synthetic.generate import practices
        from engine.synthetic.outcomes import Effect, OutcomeModel

        effect = None
        if plant is not None:
            chosen = {p.ods for p in practices() if {p.ods, p.mdt, p.locality} & {x.strip() for x in pilot.split(",")}}
            effect = Effect(frozenset(chosen), dt.date.fromisoformat(start + "-01"), plant)
        table = protocol_route.from_synthetic(synthetic, seed, ref, proto, OutcomeModel(effect=effect),
                                              months=months, workers=workers)
    else:
        from engine.registry.db import database_url as default_url, make_engine

        engine = make_engine(database_url or default_url())
        try:
            table = protocol_route.from_registry(engine, proto, ref, months=months)
        finally:
            engine.dispose()
    if cohort == "all":  # the protocol's measures name their cohorts; there is no "everyone"
        cohort = "75-plus"
        err.print("pilot-outcomes has no 'everyone' cohort: showing --cohort 75-plus "
                  f"(cohorts here: {', '.join(table.cohorts())})", highlight=False)
    for o, why in table.unavailable.items():
        err.print(f"cannot determine {o}: {why}", highlight=False)
    try:
        opts = Options(cohort=cohort, outcome=outcome, level=level, unit=unit, funnel_level=funnel_level,
                       pilot=pilot_practices(table, pilot) if pilot else frozenset(), start_month=start, cost=cost)
        rep = build(table, opts)
    except ValueError as e:
        err.print(str(e))
        raise typer.Exit(2) from None
    text = json.dumps(rep, indent=1, default=str)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if fhir:
        from engine.app.outcomes.fhir import series_bundle

        fhir.parent.mkdir(parents=True, exist_ok=True)
        fhir.write_text(json.dumps(series_bundle(rep, dt.datetime.now(dt.timezone.utc)), indent=1) + "\n")
    if fmt == "json":
        print(text)
        return
    s = rep["spc"]
    console.print(f"{rep['outcome_name']}, {rep['cohort_name'].lower()}, {rep['unit_name']} ({rep['level']}): "
                  f"{rep['unit']}, age-sex standardised; {rep['months'][0]} to {rep['months'][1]}; "
                  f"{rep['people']:,} people ({rep['source']})", highlight=False)
    console.print(f"XmR: mean {_fmt(s['mean'])}, process limits {_fmt(s['lower'])} to {_fmt(s['upper'])} "
                  f"(from the first {s['baseline_points']} months); {s['variation']}", highlight=False)
    for rule, pts in s["rules"].items():
        if pts:
            console.print(f"  {rule}: " + ", ".join(rep["series"][i]["month"] for i in pts), highlight=False)
    f = rep["funnel"]
    outside = [u for u in f["units"] if u["comparison"] in ("above", "below")]
    console.print(f"Funnel ({f['level']}, last 12 months, area {_fmt(f['area_rate'])}): "
                  f"{len(outside)} of {len(f['units'])} outside the 95% limits"
                  + (": " + ", ".join(f"{u['label']} {u['comparison']}" for u in outside[:12]) if outside else ""),
                  highlight=False)
    c = rep.get("comparison")
    if c:
        console.print(f"Pilot ({c['pilot_practices']} practices) vs the rest ({c['other_practices']}), from {c['start_month']}: "
                      f"pilot {_fmt(c['pilot']['rate_before'])} -> {_fmt(c['pilot']['rate_after'])}, "
                      f"rest {_fmt(c['rest']['rate_before'])} -> {_fmt(c['rest']['rate_after'])}", highlight=False)
        rc = c["relative_change"]
        console.print(f"Difference-in-differences: {'-' if rc is None else f'{rc * 100:+.1f}%'}; 95% CI "
                      f"{_pct(c['ci95_bootstrap'])} (practice bootstrap), {_pct(c['ci95_poisson'])} (Poisson)", highlight=False)
        if "placebo" in c:
            p = c["placebo"]
            prc = p["relative_change"]
            console.print(f"Placebo start {p['start_month']}: {'-' if prc is None else f'{prc * 100:+.1f}%'} "
                          f"(95% CI {_pct(p['ci95_bootstrap'])})", highlight=False)
        for w in c["warnings"]:
            console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
    sv = rep.get("savings_scenario")
    if sv and sv["value_per_year"] is not None:
        r = sv["range_per_year"]
        console.print(f"{sv['label']}: {_fmt(sv['per_year'])} admissions a year x £{sv['cost_per_admission']:,.0f} = "
                      f"£{sv['value_per_year']:,.0f} a year" + (f" (range £{r[0]:,.0f} to £{r[1]:,.0f})" if r else ""),
                      highlight=False)
    if out:
        console.print(f"-> {out}", highlight=False)
