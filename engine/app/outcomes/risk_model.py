"""Checking the risk model against what happened: `carepath outcomes risk-model` (issue 19, item 4).

    report = risk_model_report(data, protocol, as_of)      # a dict (schema carepath.risk-model/v1)
    text = render_text(report); svg = calibration_svg(report)

1. As of date T, the risk-stratification protocol is evaluated over the whole population with the batch
   engine (engine/engines/duckdb/batch.py, in chunks of patients as `evaluate-population` does): who is in
   its population, each person's tier, its score (`score:`), and the eFI of the shared definition it uses
   (efi@1.0.0: the score the GP system recorded in the last 12 months, else deficits / 36).
2. The outcome is the protocol's own count of emergency admissions (`admissions_12m`, the GM-SDE
   emergency-admission value set) evaluated as of T + 12 months: a look-back window is (date - 12 months,
   date], so as of T + 12 months it holds exactly the admissions after T up to T + 12 months; no admission
   counts both in the score (as of T) and in the outcome.
3. Beside the local score, published models on the same people: the eFI (Clegg 2016) and the Hospital
   Frailty Risk Score (Gilbert 2018: 109 ICD-10 three-character categories with published points,
   protocols/valuesets/hfrs_icd10.csv) from ICD-10 coded diagnoses in the 2 years before T, with people,
   admissions and rates in its published risk groups (low < 5, intermediate 5-15, high > 15 points). Records
   without ICD-10 codes (most GP records) give no HFRS: the report says so and leaves it out. The synthetic
   population's emergency admissions carry ICD-10 diagnoses (engine/synthetic/diagnoses.py).
4. Discrimination: the c-statistic (AUC) for "one or more emergency admissions in the 12 months", with
   DeLong's 95 % interval, and the paired DeLong difference between each published model and the local score.
   Calibration: a Poisson model of the number of admissions on the score (log-linear, person-time offset),
   fitted on half of the people (by pid parity) and applied to the other half (cross-fitted, so "expected" is
   not fitted to the very people it is compared with); observed and expected admissions by decile of score.
   Tiers: people, admissions and the rate per 1,000 person-years per tier, with the expected count from the
   local score's model.

Who counts: people in the protocol's population at T (adults), alive at T, registered by T. People who die in
the 12 months are kept, with their admissions until death and their person-time until death (reported).
People who leave the area cannot be seen (no deregistration date in the records): their later admissions
are missing, which the report's caveats say.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from engine.app.outcomes.risk_model_stats import deciles, delong, poisson_ci, poisson_fit
from engine.engines.duckdb import batch
from engine.engines.duckdb.run import balanced_chunk, open_population
from engine.engines.derive import age_on, shift
from engine.engines.duckdb.columnar import TABLES
from engine.ir import nodes as ir
from engine.ir.nodes import Duration
from engine.language.model import Protocol, version_key

SCHEMA = "carepath.risk-model/v1"
HFRS_TABLE = Path(__file__).resolve().parents[3] / "protocols" / "valuesets" / "hfrs_icd10.csv"
ICD10_SYSTEMS = ("http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-10-uk")
HFRS_LOOKBACK_YEARS = 2
PREFIX = "rm_"
DEFAULT_OUTCOME = "admissions_12m"


@dataclass(slots=True)
class Person:
    pid: int
    nhs_number: str
    age: int
    in_population: bool
    tier: str | None
    score: float | None
    efi: float | None
    hfrs: float
    icd10_coded: bool
    admissions: int
    exposure: float  # years of follow-up (1 unless they died in the 12 months)
    died: bool


def hfrs_points(path: Path = HFRS_TABLE) -> dict[str, float]:
    """ICD-10 three-character category -> HFRS points (Gilbert et al., Lancet 2018, supplementary table)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return {r["code"].strip().upper(): float(r["points"]) for r in csv.DictReader(fh)}


def outcome_end(as_of: dt.date) -> dt.date:
    """T + 12 months, as the engines count a 12-month look-back (derive.shift)."""
    return as_of + shift(Duration(12, "months"))


def _date(v) -> dt.date | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    return dt.date.fromisoformat(str(v)[:10])


def _efi_nodes(proto: Protocol) -> dict[str, ir.Node]:
    """The eFI as the protocol reads it: the shared efi@1.0.0 (the recorded score, else deficits / 36), or a
    number definition `efi` of its own (risk-stratification 1.0.0)."""
    d = proto.definitions
    out = {}
    if "efi.calculated_score" in d:
        out["efi_calculated"] = d["efi.calculated_score"]
        if "efi.recorded_score" in d:
            out["efi_recorded"] = ir.Attr(d["efi.recorded_score"], "value")
    elif "efi" in d and ir.unwrap(d["efi"]).type == ir.NUMBER:
        out["efi_calculated"] = d["efi"]
    return out


def collect(data: Path, proto: Protocol, as_of: dt.date, outcome: str = DEFAULT_OUTCOME,
            chunk_size: int | None = None, first: int | None = None, log=None) -> list[Person]:
    """Every person of the population at `data` alive and registered at `as_of`, with the model inputs as of
    `as_of` and the outcome in the 12 months after it (one batch-engine query per chunk and date). `chunk_size`:
    patients per chunk (None: the population run's default, engine.engines.duckdb.run.balanced_chunk)."""
    if proto.score is None:
        raise ValueError(f"{proto.key} has no score (section 8a): nothing to check")
    if "score" in proto.undetermined:
        raise ValueError(f"{proto.key}: the score cannot be determined (codelists not supplied: "
                         f"{', '.join(proto.undetermined['score'])})")
    if outcome not in proto.definitions or ir.unwrap(proto.definitions[outcome]).type != ir.NUMBER:
        raise ValueError(f"{proto.key} has no number definition {outcome!r} to count the outcome with")
    end = outcome_end(as_of)
    points = hfrs_points()
    tier_ids = [t.id for t in proto.tiers]
    values = {"score": proto.definitions[proto.score], **_efi_nodes(proto)}
    con = open_population(data, threads=1, first=first)
    people: list[Person] = []
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE rm_hfrs (cat VARCHAR, points DOUBLE)")
        con.executemany("INSERT INTO rm_hfrs VALUES (?, ?)", list(points.items()))
        lo_pid, hi_pid = con.execute("SELECT coalesce(min(pid), 0), coalesce(max(pid), -1) FROM patients").fetchone()
        chunk_size = chunk_size or balanced_chunk(hi_pid - lo_pid + 1, 1)
        for lo in range(lo_pid, hi_pid + 1, chunk_size):
            hi = lo + chunk_size
            for t in TABLES:
                con.execute(f'CREATE OR REPLACE TEMP TABLE "{PREFIX}{t}" AS SELECT * FROM "{t}" '
                            f"WHERE pid >= {int(lo)} AND pid < {int(hi)}")
            people += _chunk(con, proto, as_of, end, outcome, values, tier_ids)
            if log:
                log(f"people {lo}-{min(hi, hi_pid + 1) - 1}: done")
    finally:
        con.close()
    return people


def _chunk(con, proto: Protocol, as_of: dt.date, end: dt.date, outcome: str, values: dict, tier_ids: list[str]) -> list[Person]:
    tables = batch.default_tables(PREFIX)
    keys = [k for k in ["population"] + [f"tier:{t}" for t in tier_ids] if k in proto.conditions]
    at_t = batch.prepare(con, proto, as_of, tables=tables, keys=keys, values=values)
    cols = ", ".join(batch.ident(k) for k in keys) + "".join(f", {batch.ident('expr:' + n)}" for n in values)
    state = {r[0]: r[1:] for r in con.execute(f"SELECT pid, {cols} FROM ({at_t.sql})").fetchall()}
    after = batch.prepare(con, proto, end, tables=tables, keys=[], values={"outcome": proto.definitions[outcome]})
    counts = dict(con.execute(f"SELECT pid, {batch.ident('expr:outcome')} FROM ({after.sql})").fetchall())
    hfrs, coded = _hfrs(con, tables, as_of)
    out = []
    for pid, nhs, birth, death, registered in con.execute(
            f"SELECT pid, nhs_number, birth_date, death_date, registered_on FROM {tables['patients']} ORDER BY pid").fetchall():
        birth, death, registered = _date(birth), _date(death), _date(registered)
        if birth is None or birth > as_of or (death is not None and death <= as_of) \
                or (registered is not None and registered > as_of):
            continue  # not alive and registered at T: not at risk
        row = dict(zip(keys + [f"expr:{n}" for n in values], state.get(pid, ())))
        tier = next((t for t in tier_ids if row.get(f"tier:{t}")), None)
        score = row.get("expr:score")
        rec, calc = row.get("expr:efi_recorded"), row.get("expr:efi_calculated")
        efi = rec if rec is not None else calc
        follow_end = min(death, end) if death is not None else end
        out.append(Person(pid=pid, nhs_number=nhs, age=age_on(birth, as_of), in_population=bool(row.get("population")),
                          tier=tier, score=None if score is None else float(score),
                          efi=None if efi is None else float(efi), hfrs=hfrs.get(pid, 0.0), icd10_coded=pid in coded,
                          admissions=int(counts.get(pid) or 0),
                          exposure=max(0, (follow_end - as_of).days) / (end - as_of).days,
                          died=death is not None and death <= end))
    return out


def _hfrs(con, tables: dict[str, str], as_of: dt.date) -> tuple[dict[int, float], set[int]]:
    """pid -> HFRS (points of each distinct ICD-10 category coded in the 2 years up to T, any setting: ICD-10
    is the hospitals' coding), and the pids with any ICD-10 coded fact in that time."""
    lo = as_of - shift(Duration(HFRS_LOOKBACK_YEARS, "years"))
    systems = ", ".join(batch.lit(s) for s in ICD10_SYSTEMS)
    facts, codings = tables["facts"], tables["fact_codings"]
    live = (f"CAST(f.start AS DATE) > {batch.lit(lo)} AND CAST(f.start AS DATE) <= {batch.lit(as_of)} "
            f"AND lower(coalesce(f.status, '')) <> 'entered-in-error'")
    coded = (f"SELECT f.pid, f.code FROM {facts} f WHERE f.system IN ({systems}) AND {live} "
             f"UNION ALL SELECT f.pid, x.code FROM {codings} x JOIN {facts} f ON f.pid = x.pid AND f.seq = x.seq "
             f"WHERE x.role = 'code' AND x.system IN ({systems}) AND {live}")
    cats = f"SELECT DISTINCT pid, upper(substr(replace(trim(code), '.', ''), 1, 3)) AS cat FROM ({coded})"
    scores = dict(con.execute(f"SELECT c.pid, sum(h.points) FROM ({cats}) c JOIN rm_hfrs h USING (cat) "
                              f"GROUP BY c.pid").fetchall())
    anyone = {r[0] for r in con.execute(f"SELECT DISTINCT pid FROM ({coded})").fetchall()}
    return {k: float(v) for k, v in scores.items()}, anyone


# ---- the report ---------------------------------------------------------------------------------------
MODELS = {
    "local": "Local risk score (the protocol's score)",
    "efi": "Electronic Frailty Index (Clegg 2016)",
    "hfrs": "Hospital Frailty Risk Score (Gilbert 2018)",
}
SHORT = {"adults": "Adults", "aged-65-plus": "65 and over", "aged-75-plus": "75 and over"}
COHORTS = [("adults", "Adults in the protocol's population", 0, ("local",)),  # the protocol decides who
           ("aged-65-plus", "Aged 65 and over", 65, ("local", "efi", "hfrs")),
           ("aged-75-plus", "Aged 75 and over", 75, ("local", "efi", "hfrs"))]


def _tiebreak(nhs: str) -> int:
    return int(hashlib.sha1(nhs.encode()).hexdigest()[:12], 16)


def _value(p: Person, model: str) -> float | None:
    return p.score if model == "local" else p.efi if model == "efi" else p.hfrs


def _expected(people: list[Person], xs: list[float]) -> tuple[list[float], dict]:
    """Each person's expected admissions from a Poisson model on the score, fitted on the other half
    (pid parity), and the whole-cohort fit (reported: the rate ratio per unit of score)."""
    out = [0.0] * len(people)
    for fold in (0, 1):
        train = [i for i, p in enumerate(people) if p.pid % 2 != fold]
        fit = poisson_fit([xs[i] for i in train], [people[i].admissions for i in train], [people[i].exposure for i in train])
        for i, p in enumerate(people):
            if p.pid % 2 == fold:
                out[i] = fit.expected(xs[i], p.exposure)
    whole = poisson_fit(xs, [p.admissions for p in people], [p.exposure for p in people])
    return out, {"intercept": round(whole.intercept, 5), "slope": round(whole.slope, 5),
                 "rate_ratio_per_unit": round(math.exp(whole.slope), 4), "converged": whole.converged,
                 "form": "log E[admissions] = log(years followed) + intercept + slope x score"}


def _model_block(cohort: list[Person], model: str, definitions: dict[str, str]) -> tuple[dict, list[float] | None]:
    block: dict = {"model": model, "title": MODELS[model], "definition": definitions[model]}
    if model == "hfrs" and not any(p.icd10_coded for p in cohort):
        block["not_computed"] = ("no ICD-10 coded diagnoses in these records in the 2 years before the date "
                                 "(the HFRS reads hospital diagnoses coded in ICD-10)")
        return block, None
    members = [p for p in cohort if _value(p, model) is not None]
    missing = len(cohort) - len(members)
    if missing:
        block["missing_score"] = missing
    if not members:
        block["not_computed"] = "no one in this group has the score"
        return block, None
    xs = [float(_value(p, model)) for p in members]
    expected, fit = _expected(members, xs)
    observed = [p.admissions for p in members]
    block["people"] = len(members)
    block["fit"] = fit
    block["observed"] = sum(observed)
    block["expected"] = round(sum(expected), 3)
    if sum(expected) > 0:  # calibration-in-the-large of the cross-fitted model, with the observed count's interval
        lo, hi = poisson_ci(sum(observed))
        block["observed_over_expected"] = round(sum(observed) / sum(expected), 3)
        block["observed_over_expected_ci95"] = [round(lo / sum(expected), 3), round(hi / sum(expected), 3)]
    block["deciles"] = deciles(xs, observed, expected, [_tiebreak(p.nhs_number) for p in members])
    if model == "hfrs":
        block["people_with_icd10_codes"] = sum(p.icd10_coded for p in members)
        block["bands"] = hfrs_bands(members)
    return block, xs


HFRS_BANDS = (("low", "Low risk (under 5 points)", None, 5.0),
              ("intermediate", "Intermediate risk (5 to 15 points)", 5.0, 15.0),
              ("high", "High risk (over 15 points)", 15.0, None))


def hfrs_band(score: float) -> str:
    """Gilbert et al. 2018's risk groups: low < 5, intermediate 5-15, high > 15 points."""
    return "low" if score < 5 else "intermediate" if score <= 15 else "high"


def hfrs_bands(people: list[Person]) -> list[dict]:
    """People, admissions and the admission rate per 1,000 person-years in each published HFRS risk group."""
    out = []
    for band, title, lo, hi in HFRS_BANDS:
        group = [p for p in people if hfrs_band(p.hfrs) == band]
        adm, py = sum(p.admissions for p in group), sum(p.exposure for p in group)
        out.append({"band": band, "title": title, "points_from": lo, "points_to": hi, "people": len(group),
                    "with_admission": sum(p.admissions > 0 for p in group), "admissions": adm,
                    "person_years": round(py, 2), "rate_per_1000_person_years": round(1000 * adm / py, 1) if py else None})
    return out


def _definitions(proto: Protocol) -> dict[str, str]:
    d = proto.definitions
    efi = ("the shared eFI (efi@1.0.0): the score the GP system recorded in the last 12 months, else deficits / 36"
           if "efi.calculated_score" in d else "the protocol's own definition 'efi'" if "efi" in d else None)
    return {"local": f"the protocol's score '{proto.score}' (section 8a), as of the date",
            "efi": efi or "not defined by this protocol",
            "hfrs": "points of each distinct ICD-10 category (109, Gilbert et al. Lancet 2018) coded in the 2 years "
                    "up to the date (protocols/valuesets/hfrs_icd10.csv)"}


def records_end(data: Path, first: int | None = None) -> dt.date | None:
    """The date of the latest fact in the population (the records must reach the end of the outcome window)."""
    con = open_population(data, threads=1, first=first)
    try:
        return _date(con.execute("SELECT max(CAST(start AS DATE)) FROM facts").fetchone()[0])
    finally:
        con.close()


def build_report(people: list[Person], proto: Protocol, as_of: dt.date, outcome: str = DEFAULT_OUTCOME,
                 last_record: dt.date | None = None) -> dict:
    end = outcome_end(as_of)
    base = [p for p in people if p.in_population]
    report: dict = {
        "schema": SCHEMA, "protocol": proto.key, "protocol_effective": proto.effective.isoformat() if proto.effective else None,
        "as_of": as_of.isoformat(), "outcome_window": [as_of.isoformat(), end.isoformat()],
        "outcome": {"definition": outcome, "text": f"emergency admissions: the protocol's '{outcome}' as of {end.isoformat()} "
                    f"(after {as_of.isoformat()} up to {end.isoformat()})",
                    "binary": "one or more emergency admissions in the 12 months"},
        "people_at_risk": len(people), "cohorts": [], "tiers": [],
    }
    if last_record is not None:
        report["records_end"] = last_record.isoformat()
        if last_record < end:
            report["warning"] = (f"the records end on {last_record.isoformat()}, before the end of the outcome window "
                                 f"({end.isoformat()}): admissions after that are missing; choose an earlier date")
    if proto.effective and proto.effective > as_of:
        report["note"] = (f"{proto.key} took effect on {proto.effective.isoformat()}, after {as_of.isoformat()}: "
                          f"it is applied retrospectively, as if it had been in force then")
    local_expected: dict[int, float] = {}
    definitions = _definitions(proto)
    for cid, title, min_age, models in COHORTS:
        cohort = [p for p in base if p.age >= min_age]
        with_adm = [p for p in cohort if p.admissions > 0]
        c = {"cohort": cid, "title": title, "people": len(cohort), "with_admission": len(with_adm),
             "admissions": sum(p.admissions for p in cohort), "person_years": round(sum(p.exposure for p in cohort), 2),
             "died_in_follow_up": sum(p.died for p in cohort), "models": [], "comparisons": []}
        computed = []
        for m in models:
            block, xs = _model_block(cohort, m, definitions)
            c["models"].append(block)
            if xs is not None:
                computed.append(m)
            if cid == "adults" and m == "local" and xs is not None:
                members = [p for p in cohort if p.score is not None]
                exp, _ = _expected(members, xs)
                local_expected = {p.pid: e for p, e in zip(members, exp)}
        # discrimination on the same people for every model (those with every computed score), so they compare
        members_all = [p for p in cohort if all(_value(p, m) is not None for m in computed)]
        scored = {m: [float(_value(p, m)) for p in members_all] for m in computed}
        outcomes = [p.admissions > 0 for p in members_all]
        aucs, pairs = delong(scored, outcomes)
        for block in c["models"]:
            if block["model"] in aucs:
                block["discrimination"] = aucs[block["model"]].as_dict()
                block["discrimination"]["people"] = len(members_all)
        for (a, b), d in pairs.items():
            if a == "local":  # published model minus the local score
                a, b = b, a
                d = {**d, "difference": 0.0 - d["difference"], "ci95": [0.0 - d["ci95"][1], 0.0 - d["ci95"][0]]}
            c["comparisons"].append({"model": a, "versus": b, "model_title": MODELS[a].split(" (")[0],
                                     "versus_title": MODELS[b].split(" (")[0], **d})
        report["cohorts"].append(c)
    by_tier: dict[str | None, list[Person]] = {}
    for p in base:
        by_tier.setdefault(p.tier, []).append(p)
    levels = {t.id: t for t in proto.tiers}
    for tid in [t.id for t in proto.tiers] + [None]:
        group = by_tier.get(tid, [])
        adm, py = sum(p.admissions for p in group), sum(p.exposure for p in group)
        lo, hi = poisson_ci(adm)
        exp = sum(local_expected.get(p.pid, 0.0) for p in group)
        report["tiers"].append({
            "tier": tid, "level": levels[tid].level if tid else None,
            "title": levels[tid].title if tid else "No tier", "people": len(group),
            "with_admission": sum(p.admissions > 0 for p in group),
            "with_admission_percent": round(100 * sum(p.admissions > 0 for p in group) / len(group), 2) if group else None,
            "admissions": adm, "person_years": round(py, 2),
            "rate_per_1000_person_years": round(1000 * adm / py, 1) if py else None,
            "rate_ci95": [round(1000 * lo / py, 1), round(1000 * hi / py, 1)] if py else None,
            "expected_from_local_score": round(exp, 2), "observed_over_expected": round(adm / exp, 3) if exp else None})
    report["caveats"] = CAVEATS
    return report


CAVEATS = [
    "Synthetic data (a generated population, the demo registry): admissions are drawn by the generator's own model, "
    "so the figures describe that model, not patients. Its ICD-10 diagnoses are drawn from each person's conditions "
    "and frailty (engine/synthetic/diagnoses.py): the HFRS there reflects those assumptions.",
    "Outcome window: admissions after the date up to 12 months after it; the data must reach that date (records "
    "that end earlier make everyone look admission-free at the end of the window).",
    "Deaths: people who died in the 12 months are kept with their admissions before death; their person-time ends "
    "at death (the calibration model uses it); in the c-statistic a death without admission counts as no admission.",
    "People who left: the records have no deregistration date, so admissions of people who moved away are missing "
    "and observed rates are too low by that much.",
    "Expected admissions come from a Poisson model of admissions on each score fitted on the other half of the "
    "people (cross-fitted): calibration here checks the shape (does risk rise with the score as a log-linear "
    "model says), not whether the score's own cut-points carry a stated risk (they do not: the local score is "
    "not a predictive model).",
    "The local score contains last year's admissions: it partly predicts admissions from admissions. A good c-statistic "
    "says the score ranks people; it is not evidence that acting on the ranking prevents any admission.",
    "The HFRS was developed on hospital patients aged 75 and over and the eFI in primary care on people aged 65 and "
    "over; both were published to identify frailty, not to predict emergency admissions as such.",
]


# ---- text and SVG ---------------------------------------------------------------------------------------
def _fmt(x, nd=3) -> str:
    return "—" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def render_text(r: dict) -> str:
    w = [f"Risk model check: {r['protocol']} as of {r['as_of']}; outcome: {r['outcome']['text']}"]
    if r.get("warning"):
        w.append(f"WARNING: {r['warning']}")
    if r.get("note"):
        w.append(f"Note: {r['note']}")
    for c in r["cohorts"]:
        w.append("")
        w.append(f"{c['title']}: {c['people']} people, {c['with_admission']} with an emergency admission "
                 f"({c['admissions']} admissions, {c['person_years']} person-years, {c['died_in_follow_up']} died in the 12 months)")
        w.append(f"  {'model':<52} {'AUC':>6}  {'95% CI (DeLong)':<17} {'observed':>8} {'expected':>9} {'O/E':>6}")
        for m in c["models"]:
            if "not_computed" in m:
                w.append(f"  {m['title']:<52} not computed: {m['not_computed']}")
                continue
            d = m.get("discrimination") or {}
            ci = d.get("ci95") or [None, None]
            w.append(f"  {m['title']:<52} {_fmt(d.get('auc')):>6}  {_fmt(ci[0])}-{_fmt(ci[1]):<11} "
                     f"{m['observed']:>8} {m['expected']:>9.1f} {_fmt(m.get('observed_over_expected'), 2):>6}")
        for m in c["models"]:
            for b in m.get("bands") or ():
                w.append(f"  HFRS {b['title']}: {b['people']} people, {b['with_admission']} admitted, "
                         f"{_fmt(b['rate_per_1000_person_years'], 1)} admissions per 1,000 person-years")
        for cmp in c["comparisons"]:
            w.append(f"  AUC {MODELS[cmp['model']].split(' (')[0]} minus {MODELS[cmp['versus']].split(' (')[0]}: "
                     f"{cmp['difference']:+.3f} (95% CI {cmp['ci95'][0]:+.3f} to {cmp['ci95'][1]:+.3f}, p {cmp['p']:.3g})")
        for m in c["models"]:
            if "deciles" not in m:
                continue
            w.append(f"  Calibration, {m['title']} (expected: cross-fitted Poisson model; rate ratio per unit "
                     f"{m['fit']['rate_ratio_per_unit']}):")
            w.append(f"    {'decile':>6} {'people':>7} {'score':>13} {'observed':>8} {'expected':>8} {'O/E':>6}  95% CI")
            for g in m["deciles"]:
                rng = f"{g['score_min']:g}-{g['score_max']:g}"
                ci = g["ratio_ci95"] or [None, None]
                w.append(f"    {g['group']:>6} {g['people']:>7} {rng:>13} {g['observed']:>8g} {g['expected']:>8.1f} "
                         f"{_fmt(g['ratio'], 2):>6}  {_fmt(ci[0], 2)}-{_fmt(ci[1], 2)}")
    w.append("")
    w.append("Admissions by tier (adults):")
    w.append(f"  {'tier':<50} {'people':>7} {'admitted':>9} {'admissions':>10} {'per 1,000 py':>12}  95% CI        O/E")
    for t in r["tiers"]:
        ci = t["rate_ci95"] or [None, None]
        w.append(f"  {t['title']:<50} {t['people']:>7} {t['with_admission']:>9} {t['admissions']:>10} "
                 f"{_fmt(t['rate_per_1000_person_years'], 1):>12}  {_fmt(ci[0], 1)}-{_fmt(ci[1], 1):<8} "
                 f"{_fmt(t['observed_over_expected'], 2)}")
    w.append("")
    w.append("Caveats:")
    w += [f"  - {c}" for c in r["caveats"]]
    return "\n".join(w)


def calibration_svg(r: dict) -> str:
    """Observed against expected admissions per person by decile, one small panel per cohort and model
    (the diagonal is perfect calibration)."""
    panels = [(c, m) for c in r["cohorts"] for m in c["models"] if m.get("deciles")]
    pw, ph, pad = 240, 220, 40
    width = max(1, len(panels)) * (pw + 10) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{ph + 60}" '
           f'viewBox="0 0 {width} {ph + 60}" font-family="sans-serif" font-size="11" role="img" '
           f'aria-label="Calibration: observed against expected emergency admissions per person, by decile of score">']
    for k, (c, m) in enumerate(panels):
        x0 = 10 + k * (pw + 10)
        pts = [(g["expected_per_person"] or 0.0, g["observed_per_person"] or 0.0) for g in m["deciles"]]
        top = max([0.01] + [v for p in pts for v in p]) * 1.1
        sx = lambda v: x0 + pad + (pw - pad - 10) * v / top  # noqa: E731
        sy = lambda v: 20 + (ph - pad) * (1 - v / top)  # noqa: E731
        out.append(f'<text x="{x0 + pw / 2}" y="14" text-anchor="middle">{SHORT.get(c["cohort"], c["title"])}: '
                   f'{m["title"].split(" (")[0]}</text>')
        out.append(f'<rect x="{sx(0)}" y="{sy(top)}" width="{sx(top) - sx(0)}" height="{sy(0) - sy(top)}" '
                   f'fill="none" stroke="#aeb7bd"/>')
        out.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(top)}" y2="{sy(top)}" stroke="#768692" stroke-dasharray="4 3"/>')
        for e, o in pts:
            out.append(f'<circle cx="{sx(e):.1f}" cy="{sy(o):.1f}" r="3.5" fill="#005eb8"/>')
        out.append(f'<text x="{x0 + pw / 2}" y="{ph + 10}" text-anchor="middle">expected per person</text>')
        out.append(f'<text x="{x0 + 12}" y="{20 + (ph - pad) / 2}" transform="rotate(-90 {x0 + 12} {20 + (ph - pad) / 2})" '
                   f'text-anchor="middle">observed per person</text>')
        out.append(f'<text x="{sx(0)}" y="{sy(0) + 14}" text-anchor="middle">0</text>')
        out.append(f'<text x="{sx(top)}" y="{sy(0) + 14}" text-anchor="end">{top:.2f}</text>')
    out.append("</svg>")
    return "\n".join(out)


def risk_model_report(data: Path, proto: Protocol, as_of: dt.date, outcome: str = DEFAULT_OUTCOME,
                      chunk_size: int | None = None, first: int | None = None, log=None) -> dict:
    people = collect(data, proto, as_of, outcome, chunk_size=chunk_size, first=first, log=log)
    return build_report(people, proto, as_of, outcome, last_record=records_end(data, first))


def registry_population(url, out: Path) -> Path:
    """The registry's records (every patient, as stored) written as a population DuckDB file at `out`, so the
    check runs on the registry's own data: the as-of evaluation and the later outcomes come from the same records."""
    from sqlmodel import Session

    from engine.engines.duckdb.columnar import load_records
    from engine.registry.db import make_engine
    from engine.registry.ingest import iter_records

    own = url is None or isinstance(url, str)  # a URL (or the default): an engine of our own; else the caller's Engine
    engine = make_engine(url) if own else url
    con = batch.connect(str(out))
    try:
        with Session(engine) as session:
            load_records(con, iter_records(session))
    finally:
        con.close()
        if own:
            engine.dispose()
    return out


def choose_protocol(protocols: list[Protocol], spec: str, as_of: dt.date) -> Protocol:
    """`id` or `id@version`: the version named; else the version in force on the date; else the newest
    active version (applied retrospectively, which the report notes)."""
    pid, _, version = spec.partition("@")
    cands = [p for p in protocols if p.id == pid and p.status != "draft"]
    if version:
        cands = [p for p in cands if p.version == version]
    if not cands:
        raise ValueError(f"no protocol {spec!r}")
    in_force = [p for p in cands if not p.effective or p.effective <= as_of]
    return max(in_force or cands, key=lambda p: version_key(p.version))
