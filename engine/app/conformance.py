"""eCQM conformance: run a published measure test kit against carepath's own protocol for it.

A kit folder (e.g. ../shared/conformance/ecqm/CMS122) holds `terminology.json` (naming the
measure by its canonical url) and `cases/<case>/{bundle.json, expected.json}`. The protocol that
implements the measure is found in the protocol library by the `ecqm: {url, version}` its measure
declares: that declaration is the one place a kit is mapped to a protocol.

For each case: import the FHIR bundle, evaluate the measure as of the end of the case's
measurement period (period start from expected.json, reference date = period end) and compare the
four populations with the expected MeasureReport counts. A case fails when any population differs
or the case cannot be run (bad bundle, no patient, ...); a failure says which population differed,
expected and actual, the measure's why-line and the values of the protocol's definitions.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.engines.derive import Context, Deriver, Ev
from engine.evaluation.evaluator import Options, evaluate
from engine.language.library import Library, library_fingerprint, load_library
from engine.language.model import Measure, Protocol

POPULATIONS = ("initial-population", "denominator", "denominator-exclusion", "denominator-exception", "numerator")
SHORT = {"initial-population": "IP", "denominator": "DEN", "denominator-exclusion": "DENEX",
         "denominator-exception": "DENEXCEP", "numerator": "NUM"}
ENGINES = ("durable", "python", "batch")
DEFAULT_PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"


class KitError(Exception):
    """The kit cannot be run at all (missing folder, unknown measure, no protocol implements it)."""


@dataclass
class CaseResult:
    kit: str
    case: str
    description: str
    expected: dict[str, int]
    actual: dict[str, int] = field(default_factory=dict)
    passed: bool = False
    differences: list[dict[str, Any]] = field(default_factory=list)  # {population, expected, actual}
    why: str = ""
    why_steps: dict[str, str] = field(default_factory=dict)  # each population step's why (failing cases)
    definitions: dict[str, str] = field(default_factory=dict)  # only for failing cases
    engine: str = "durable"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class KitMeasure:
    url: str
    version: str | None
    period_start: dt.date | None
    period_end: dt.date | None


def kit_measure(kit_dir: Path) -> KitMeasure:
    """The measure a kit tests, from terminology.json (or the first case's expected.json)."""
    term = kit_dir / "terminology.json"
    if term.is_file():
        m = json.loads(term.read_text(encoding="utf-8")).get("measure") or {}
        period = m.get("effectivePeriod") or {}
    else:
        first = next(iter(sorted((kit_dir / "cases").glob("*/expected.json"))), None)
        if first is None:
            raise KitError(f"{kit_dir}: no terminology.json and no cases/*/expected.json")
        m = json.loads(first.read_text(encoding="utf-8")).get("measure") or {}
        period = {}
    if not m.get("url"):
        raise KitError(f"{kit_dir}: the kit does not name its measure (measure.url)")
    return KitMeasure(m["url"], m.get("version"), _date(period.get("start")), _date(period.get("end")))


_LIBRARIES: dict[str, tuple[tuple, Library]] = {}  # resolved protocols folder -> (fingerprint, library)
_LIBRARIES_KEPT = 4


def _library(protocols_dir: Path) -> Library:
    """The library under protocols_dir, loaded once and reused while none of the files it reads changes (several
    kits, or one kit on several engines, read the same library; loading it is most of a kit run's time)."""
    key = str(protocols_dir.resolve())
    fp = library_fingerprint([protocols_dir])
    hit = _LIBRARIES.get(key)
    if hit is not None and hit[0] == fp:
        return hit[1]
    lib = load_library([protocols_dir])
    _LIBRARIES.pop(key, None)
    while len(_LIBRARIES) >= _LIBRARIES_KEPT:
        _LIBRARIES.pop(next(iter(_LIBRARIES)))
    _LIBRARIES[key] = (fp, lib)
    return lib


def find_protocol(km: KitMeasure, protocols_dir: Path) -> tuple[Protocol, Measure]:
    """The protocol + measure whose `ecqm` declaration names the kit's measure url (and version, if declared)."""
    lib = _library(Path(protocols_dir))
    matches = [(p, m) for p in lib.protocols for m in p.measures if m.ecqm is not None and m.ecqm.url == km.url]
    if not matches:
        hint = "; ".join(str(p) for p in lib.errors[:5])
        raise KitError(f"no protocol under {protocols_dir} declares a measure with ecqm url {km.url}"
                       + (f" (files with errors: {hint})" if hint else ""))
    if km.version:
        same = [(p, m) for p, m in matches if m.ecqm.version in (None, km.version)]
        if not same:
            found = ", ".join(f"{p.key} {m.id} implements {m.ecqm.version}" for p, m in matches)
            raise KitError(f"the kit tests {km.url} version {km.version}, but {found}")
        matches = same
    if len({(p.id, m.id) for p, m in matches}) > 1:
        names = ", ".join(f"{p.key}/{m.id}" for p, m in matches)
        raise KitError(f"more than one protocol implements {km.url}: {names}")
    return max(matches, key=lambda pm: [int(x) for x in pm[0].version.split("-")[0].split(".")])


def case_dirs(kit_dir: Path) -> list[Path]:
    return sorted(p for p in (kit_dir / "cases").iterdir() if p.is_dir()) if (kit_dir / "cases").is_dir() else []


def run_kit(kit_dir: Path | str, protocols_dir: Path | str = DEFAULT_PROTOCOLS, engine: str = "durable") -> list[CaseResult]:
    """Every case of a kit on one engine (durable | python | batch)."""
    if engine not in ENGINES:
        raise KitError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
    kit_dir, protocols_dir = Path(kit_dir), Path(protocols_dir)
    if not kit_dir.is_dir():
        raise KitError(f"{kit_dir}: no such kit folder")
    cases = case_dirs(kit_dir)
    if not cases:
        raise KitError(f"{kit_dir}: no cases (expected cases/<case>/bundle.json + expected.json)")
    km = kit_measure(kit_dir)
    proto, measure = find_protocol(km, protocols_dir)
    if engine == "batch":  # the population engine over the whole kit at once, as it runs on a registry
        _precompute_batch(kit_dir, cases, proto, km)
    return [run_case(kit_dir.name, c, proto, measure, km, engine) for c in cases]


def _precompute_batch(kit_dir: Path, cases: list[Path], proto: Protocol, km: KitMeasure) -> None:
    from engine.engines.duckdb.batch import precompute
    from engine.records.fhir.bundle import BundleError, import_bundle

    by_period: dict[tuple, list] = {}
    for c in cases:
        try:
            exp = json.loads((c / "expected.json").read_text(encoding="utf-8"))
            mp = exp.get("measurement_period") or {}
            start, end = _date(mp.get("start")) or km.period_start, _date(mp.get("end")) or km.period_end
            imported = import_bundle(json.loads((c / "bundle.json").read_text(encoding="utf-8")),
                                     source_system=f"{kit_dir.name}/{c.name}", single_patient=True)
        except (BundleError, json.JSONDecodeError, OSError, KeyError):
            continue  # run_case reports it
        if start and end and len(imported.records) == 1:
            by_period.setdefault((start, end), []).extend(imported.records)
    for (start, end), records in by_period.items():
        if len({r.patient.nhs_number for r in records}) == len(records):
            precompute(records, proto, Context.as_of(end, proto.period, start))


def run_case(kit: str, case_dir: Path, proto: Protocol, measure: Measure, km: KitMeasure,
             engine: str = "durable") -> CaseResult:
    from engine.records.fhir.bundle import BundleError, import_bundle

    exp_data = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    # a kit without exceptions (CMS122, CMS165) publishes no denominator-exception count: 0
    expected = {k: int(exp_data["populations"].get(k, 0)) for k in POPULATIONS}
    res = CaseResult(kit, exp_data.get("case", case_dir.name), exp_data.get("description", ""), expected, engine=engine)
    mp = exp_data.get("measurement_period") or {}
    start, end = _date(mp.get("start")) or km.period_start, _date(mp.get("end")) or km.period_end
    if start is None or end is None:
        res.error = "no measurement period (expected.json measurement_period or the kit's effectivePeriod)"
        return res
    try:
        # a test case's bundle is one patient's record: a resource whose subject names no resource of
        # the bundle is that patient's (import_bundle single_patient, with a warning)
        imported = import_bundle(json.loads((case_dir / "bundle.json").read_text(encoding="utf-8")),
                                 source_system=f"{kit}/{case_dir.name}", single_patient=True)
    except (BundleError, json.JSONDecodeError, OSError) as e:
        res.error = f"bundle.json: {e}"
        return res
    if len(imported.records) != 1:
        res.error = f"bundle.json holds {len(imported.records)} patients; a case needs exactly one"
        return res
    record = imported.records[0]
    ev = evaluate(record, [proto], as_of=end, period_start=start, options=Options(engine=engine))
    mr = next(m for m in ev.protocols[0].measures if m.measure == measure.id)
    if mr.counts is not None:  # counted per episode: a case may count 2 or more
        c = mr.counts
        res.actual = {"initial-population": c["initial_population"], "denominator": c["denominator"],
                      "denominator-exclusion": c["exclusion"], "denominator-exception": c["exception"],
                      "numerator": c["numerator"]}
    else:
        res.actual = {"initial-population": int(mr.initial_population), "denominator": int(mr.denominator),
                      "denominator-exclusion": int(mr.exclusion), "denominator-exception": int(mr.exception),
                      "numerator": int(mr.numerator)}
    res.why = mr.provenance.why
    res.differences = [{"population": k, "expected": expected[k], "actual": res.actual[k]}
                       for k in POPULATIONS if expected[k] != res.actual[k]]
    res.passed = not res.differences
    if not res.passed:
        res.why_steps = dict(mr.why_steps)
        ctx = Context.as_of(end, proto.period, start)
        res.definitions = definition_values(proto, record, ctx)
        if ev.protocols[0].data_problems:
            res.definitions["(data problems)"] = "; ".join(ev.protocols[0].data_problems)
    return res


def definition_values(proto: Protocol, record, ctx: Context) -> dict[str, str]:
    """Every definition of the protocol with this patient's value, in plain text."""
    from engine.ir import nodes as ir
    d = Deriver(proto, record, ctx)
    return {name: "(per episode: see the steps above)" if ir.uses_episode(node) else _show(d.eval(node))
            for name, node in proto.definitions.items()}


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "missing"
    if isinstance(v, Ev):
        return _show_event(v)
    if isinstance(v, list):
        if not v:
            return "none"
        shown = ", ".join(_show_event(e) for e in v[-3:])
        return f"{len(v)} event(s): {'..., ' if len(v) > 3 else ''}{shown}"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _show_event(e: Ev) -> str:
    f = e.fact
    code = f.codes[0].code
    when = f.start.strftime("%Y-%m-%d %H:%M") + (f"..{f.end.strftime('%Y-%m-%d %H:%M')}" if f.end else "")
    extra = [f"value {e.value:g}"] if e.value is not None else []
    if f.value_codes:
        extra.append(f"value code {f.value_codes[0].code}")
    if f.status:
        extra.append(f.status)
    return f"{f.kind.value} {code} {when}" + (f" ({', '.join(extra)})" if extra else "")


def _date(v: Any) -> dt.date | None:
    if not v:
        return None
    return dt.date.fromisoformat(str(v)[:10])


# ---- rendering --------------------------------------------------------------------------------

def summary_line(results: list[CaseResult]) -> str:
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"


def render_json(results: list[CaseResult]) -> str:
    passed = sum(r.passed for r in results)
    return json.dumps({"cases": [r.as_dict() for r in results], "passed": passed, "failed": len(results) - passed},
                      indent=2)


def render_text(results: list[CaseResult], console=None) -> None:
    """A per-case table, the details of every failing case, and last the line `N passed, M failed`."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    kit = results[0].kit if results else ""
    engine = results[0].engine if results else ""
    table = Table(title=f"{kit} conformance ({engine})", expand=False)
    table.add_column("case")
    for p in POPULATIONS:
        table.add_column(f"{SHORT[p]} exp/got", justify="center")
    table.add_column("result")

    def cell(r: CaseResult, p: str) -> str:
        e, a = r.expected[p], r.actual.get(p)
        if a is None:
            return f"{e}/-"
        return f"{e}/{a}" if e == a else f"[red]{e}/{a}[/red]"

    for r in results:
        table.add_row(r.case, *(cell(r, p) for p in POPULATIONS),
                      "[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
    console.print(table)
    for r in results:
        if r.passed:
            continue
        console.print(f"[red]FAIL[/red] {r.kit}/{r.case} on {r.engine}: {r.description}", highlight=False)
        if r.error:
            console.print(f"  error: {r.error}", highlight=False, markup=False)
            continue
        for diff in r.differences:
            console.print(f"  {diff['population']}: expected {diff['expected']}, got {diff['actual']}",
                          highlight=False, markup=False)
        console.print(f"  why: {r.why}", highlight=False, markup=False)
        for step, why in r.why_steps.items():
            console.print(f"    [{step}] {why}", highlight=False, markup=False)
        for name, value in r.definitions.items():
            console.print(f"    {name} = {value}", highlight=False, markup=False)
    console.print(summary_line(results), highlight=False, markup=False)
