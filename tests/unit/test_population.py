"""The synthetic population generator, its columnar output, and population runs."""
from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from pathlib import Path

import pytest

from engine.engines.duckdb.columnar import record_rows
from engine.synthetic.generate import (LOCALITIES, codelist, generate, nhs_number_for, person, person_rows,
                                        practices, write_population)
from engine.records.nhs_number import is_valid_nhs_number
from tests.unit.cached import shipped_library

AS_OF = dt.date(2026, 4, 30)
ROOT = Path(__file__).resolve().parents[2]


def test_reproducible_and_seeded():
    a = [r.model_dump() for r in generate(30, seed=5, as_of=AS_OF)]
    b = [r.model_dump() for r in generate(30, seed=5, as_of=AS_OF)]
    c = [r.model_dump() for r in generate(30, seed=6, as_of=AS_OF)]
    assert a == b
    assert a != c
    # a person does not depend on where the stream starts (shards give the same people)
    assert [r.model_dump() for r in generate(5, seed=5, as_of=AS_OF, start=25)] == a[25:]


def test_structure_localities_mdts_practices_and_identifiers():
    ps = practices()
    assert len({p.locality for p in ps}) == 5 and len({p.mdt for p in ps}) == 9 and len(ps) >= 100
    assert all(re.fullmatch(r"[A-Z]\d{5}", p.ods) for p in ps) and len({p.ods for p in ps}) == len(ps)
    assert all(p.mdt in LOCALITIES[p.locality] for p in ps)
    numbers = [nhs_number_for(i) for i in range(3000)]
    assert len(set(numbers)) == 3000 and all(is_valid_nhs_number(n) for n in numbers)
    assert all(n.startswith("999") for n in numbers)  # the range reserved for testing


def test_population_shape_and_prevalence():
    people = [person(i, 11, AS_OF) for i in range(4000)]
    adults = [p for p in people if p.age >= 17]
    share = lambda xs, f: sum(1 for x in xs if f(x)) / len(xs)  # noqa: E731
    assert 0.05 <= share(people, lambda p: p.age >= 75) <= 0.095
    assert 0.05 <= share(adults, lambda p: p.dm) <= 0.085
    assert 0.10 <= share(people, lambda p: p.hyp) <= 0.19
    assert 0.04 <= share(people, lambda p: p.asthma) <= 0.09
    assert 0.10 <= share(adults, lambda p: p.depression) <= 0.19
    assert 0.003 <= share(people, lambda p: p.hf) <= 0.02
    assert 0.005 <= share(people, lambda p: p.copd) <= 0.03
    mean_facts = sum(len(p.facts) for p in people) / len(people)
    assert 40 <= mean_facts <= 60
    sources = Counter(f[9] for p in people for f in p.facts)
    assert {"gp-system", "pathology-lims", "acute-pas", "community-ehr", "mental-health", "social-care"} <= set(sources)
    kinds = Counter(f[1] for p in people for f in p.facts)
    assert kinds["exception"] > 0 and kinds["medication"] > 0 and kinds["observation"] > 0
    statuses = Counter(f[8] for p in people for f in p.facts)
    assert statuses["entered-in-error"] > 0
    hba1c = set(codelist("ifcchbam_cod.csv"))
    units = Counter(f[7] for p in people for f in p.facts if f[3] in hba1c)
    assert units["mmol/mol"] > units["%"] > 0  # mostly IFCC, some DCCT % to convert


def test_frailty_categories_for_older_people():
    people = [person(i, 12, AS_OF) for i in range(4000)]
    frail = set(codelist("frailty_cod.csv", "severity", ("moderate", "severe")))
    old = [p for p in people if p.age >= 65]
    coded = [p for p in old if any(f[3] in frail for f in p.facts)]
    assert 0.05 <= len(coded) / len(old) <= 0.2  # ~15 % moderate or severe, most of them coded
    assert all(p.age >= 65 for p in people if any(f[3] in frail for f in p.facts))


def test_columnar_rows_match_the_records():
    records = list(generate(150, seed=9, as_of=AS_OF))
    for i, rec in enumerate(records):
        assert person_rows(i, person(i, 9, AS_OF)) == record_rows(i, rec)


def test_write_population_parquet_round_trip(tmp_path):
    """The worker path (rows -> CSV -> Parquet) holds exactly what load_records makes of the same records."""
    from engine.engines.duckdb import batch
    from engine.engines.duckdb.columnar import TABLES, load_parquet, load_records

    info = write_population(tmp_path / "pop", 120, seed=4, as_of=AS_OF, workers=2, shard_size=50)
    records = list(generate(120, seed=4, as_of=AS_OF))
    con = batch.connect()
    load_parquet(con, tmp_path / "pop", prefix="w_")
    load_records(con, records, prefix="r_")
    for t in TABLES:
        a, b = (con.execute(f"SELECT count(*) FROM {p}{t}").fetchone()[0] for p in ("w_", "r_"))
        diff = con.execute(f"SELECT count(*) FROM ((SELECT * FROM w_{t} EXCEPT ALL SELECT * FROM r_{t}) "
                           f"UNION ALL (SELECT * FROM r_{t} EXCEPT ALL SELECT * FROM w_{t}))").fetchone()[0]
        assert a == b and diff == 0, t
    assert info["facts"] == sum(len(r.facts) for r in records)


def test_population_run_matches_per_patient_measures(tmp_path):
    """evaluate-population's measure counts equal the per-patient evaluator's, patient by patient summed."""
    from engine.evaluation.evaluator import Options, evaluate
    from engine.engines.duckdb.run import evaluate_population_run

    write_population(tmp_path / "pop", 250, seed=8, as_of=AS_OF, workers=1)
    lib = shipped_library()
    protos = [p for p in lib.protocols if p.id == "t2dm-annual-care"]
    summary = evaluate_population_run(tmp_path / "pop", protos, AS_OF, workers=1, log=lambda m: None)
    want: list[dict] = [{} for _ in protos]  # every version's counts (the run stores each version's)
    on_register = [0 for _ in protos]
    for rec in generate(250, seed=8, as_of=AS_OF):
        for i, res in enumerate(evaluate(rec, protos, as_of=AS_OF, options=Options(engine="python")).protocols):
            on_register[i] += res.on_register
            for m in res.measures:
                w = want[i].setdefault(m.measure, {"initial_population": 0, "denominator": 0, "exclusions": 0,
                                                   "exceptions": 0, "numerator": 0, "cannot_determine": 0})
                w["initial_population"] += m.initial_population
                w["denominator"] += m.denominator
                w["exclusions"] += m.exclusion
                w["exceptions"] += m.exception
                w["numerator"] += m.numerator
                w["cannot_determine"] += bool(m.cannot_determine)
    by_key = {r["protocol"]: r for r in summary["protocols"]}
    assert set(by_key) == {p.key for p in protos} and len(protos) > 1
    for i, proto in enumerate(protos):
        assert by_key[proto.key]["measures"] == want[i], proto.key
        assert by_key[proto.key]["on_register"] == on_register[i] > 0, proto.key
    again = evaluate_population_run(tmp_path / "pop", protos, AS_OF, workers=1, log=lambda m: None)
    assert all(r["skipped"] for r in again["protocols"])
    assert {r["protocol"]: r["measures"] for r in again["protocols"]} == {p.key: want[i] for i, p in enumerate(protos)}

    # the audit over the stored per-patient rows counts the same, practice by practice
    import duckdb

    from engine.engines.duckdb.audit import measure_by_practice

    con = duckdb.connect(summary["results"], read_only=True)
    for mid, w in want[0].items():
        rows = measure_by_practice(con, summary["run"], protos[0], mid)
        assert {k: sum(r[k] for r in rows) for k in w} == w
        stored = con.execute("SELECT practice, sum(numerator) FROM measures WHERE measure = ? AND version = ? "
                             "GROUP BY practice", [mid, protos[0].version]).fetchall()
        assert {p: int(n) for p, n in stored} == {r["practice"]: r["numerator"] for r in rows}
    with pytest.raises(KeyError, match="no measure"):
        measure_by_practice(con, summary["run"], protos[0], "DM999")
    con.close()


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_populations(tmp_path, n):
    info = write_population(tmp_path / f"p{n}", n, seed=1, as_of=AS_OF, workers=1)
    assert info["patients"] == n


def test_population_run_survives_kill_9_and_resumes(tmp_path):
    """A run killed with SIGKILL while it takes a chunk in keeps the chunks it committed whole (every protocol
    of them) and nothing of that chunk; it resumes under the same run id: the results equal an uninterrupted
    run's (made by two worker processes), with no duplicated rows."""
    import pickle
    import signal
    import subprocess
    import sys

    import duckdb

    from engine.engines.duckdb.run import evaluate_population_run

    write_population(tmp_path / "pop", 120, seed=3, as_of=AS_OF, workers=1)
    # three protocols (patient measures, episodes, measure values) over two chunks: 6 (protocol, chunk) steps, one
    # transaction per chunk; killed inside the second chunk's, after two of its three protocols' rows were taken in
    protos = [p for p in shipped_library().in_force(AS_OF)
              if p.id in ("t2dm-annual-care", "ecqm-cms22-bp-screening", "pilot-outcomes")]
    assert len(protos) == 3
    # the killed process gets these protocols as loaded here (pickled: loading the library would be most of
    # its start-up time)
    (tmp_path / "protocols.pickle").write_bytes(pickle.dumps(protos))
    script = f"""
import datetime as dt, os, pickle, signal
from pathlib import Path
from engine.engines.duckdb import run
from engine.engines.duckdb.run import evaluate_population_run
protos = pickle.loads(Path({str(tmp_path / 'protocols.pickle')!r}).read_bytes())
taken, take = [], run._take_part
def take_then_kill(con, run_id, part):
    take(con, run_id, part)
    taken.append(part["chunk"])
    if taken == [0, 0, 0, 1, 1]:  # the first chunk committed; two protocols of the second taken in, not committed
        os.kill(os.getpid(), signal.SIGKILL)
run._take_part = take_then_kill
evaluate_population_run(Path({str(tmp_path / 'pop')!r}), protos, dt.date.fromisoformat({AS_OF.isoformat()!r}),
                        workers=1, results=Path({str(tmp_path / 'killed.duckdb')!r}), run="r1", chunk_size=60,
                        log=lambda m: None)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    con = duckdb.connect(str(tmp_path / "killed.duckdb"), read_only=True)
    # the first chunk kept whole, every protocol; nothing of the second (its transaction was not committed)
    assert sorted(con.execute("SELECT chunk, protocol FROM run_chunks").fetchall()) == \
        sorted((0, p.id) for p in protos)
    assert con.execute("SELECT DISTINCT chunk FROM fired").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM run_protocols").fetchone()[0] == 0
    con.close()
    resumed = evaluate_population_run(tmp_path / "pop", protos, AS_OF, workers=1, results=tmp_path / "killed.duckdb",
                                      run="r1", chunk_size=999, log=lambda m: None)
    whole = evaluate_population_run(tmp_path / "pop", protos, AS_OF, workers=2, results=tmp_path / "whole.duckdb",
                                    run="r1", chunk_size=60, log=lambda m: None)
    assert resumed["chunk_size"] == 60 and resumed["chunks"] == 2
    assert [p["measures"] for p in resumed["protocols"]] == [p["measures"] for p in whole["protocols"]]

    def table(path, t):
        c = duckdb.connect(str(path), read_only=True)
        rows = sorted(c.execute(f"SELECT * EXCLUDE (seconds, finished) FROM {t}").fetchall() if t == "run_chunks"
                      else c.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        c.close()
        return rows

    for t in ("fired", "measures", "registers"):
        assert table(tmp_path / "killed.duckdb", t) == table(tmp_path / "whole.duckdb", t)
    assert len(table(tmp_path / "killed.duckdb", "fired")) == 120 * len(protos)
    assert [r[:4] for r in table(tmp_path / "killed.duckdb", "run_chunks")] == \
        [r[:4] for r in table(tmp_path / "whole.duckdb", "run_chunks")]


def test_evaluate_population_command(tmp_path, shipped_library_once):
    """The CLI runs a population in chunks and prints the run's summary as JSON."""
    import json

    from typer.testing import CliRunner

    from cli.main import app

    write_population(tmp_path / "pop", 60, seed=5, as_of=AS_OF, workers=1)
    res = CliRunner().invoke(app, ["evaluate-population", "--data", str(tmp_path / "pop"), "--as-of", AS_OF.isoformat(),
                                   "--chunk", "30", "--workers", "2", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["patients"] == 60 and out["chunks"] == 2
    assert {p["protocol"] for p in out["protocols"]} >= {"t2dm-annual-care@1.0.0"}
    assert all("error" not in p for p in out["protocols"])
    missing = CliRunner().invoke(app, ["evaluate-population", "--data", str(tmp_path / "none"), "--as-of", "2026-04-30"])
    assert missing.exit_code == 2 and "no population here" in missing.output


def test_bench_summary_marks_targets():
    from benchmarks.bench_all import summary

    rows = {r["figure"]: r for r in summary({
        "population": {"p1": {"seconds": 200.0, "peak_rss_mib": 3000.0, "patients": 750000, "protocols": 10},
                       "p4": {"seconds_worst": 0.4}},
        "worklist": {"worklist": {"p95_ms": 30.0}, "mdt": "east-1", "mdt_patients": 50000},
        "incremental": {"open_loop": {"p99_ms": 900.0}, "target": {"met_here": False}},
    })}
    assert rows["P1 all protocols, seconds"]["met"] is False
    assert rows["P1 peak RSS of the process tree, MiB"]["met"] is True
    assert rows["P2 incremental p99 ms at the target rate"]["met"] is False
    assert rows["P3 worklist first page p95 ms"]["met"] is True
    assert rows["P4 one measure by practice, seconds"]["met"] is True
    assert rows["durable-rules memory over evaluations"]["met"] is None  # not measured is not "met"


def test_demo_seeds_a_generated_population(tmp_path, monkeypatch, shipped_library_once):
    """`carepath demo --population N` adds N generated people, evaluated, once."""
    from sqlalchemy import text
    from typer.testing import CliRunner

    from cli.main import app
    from engine.registry.db import make_engine

    monkeypatch.delenv("DATABASE_URL", raising=False)
    args = ["demo", "--out", str(tmp_path), "--population", "25", "--as-of", "2026-11-20"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    engine = make_engine(f"sqlite:///{tmp_path / 'carepath.db'}")
    with engine.connect() as c:
        patients = c.execute(text("SELECT count(*) FROM patient")).scalar_one()
        evaluated = c.execute(text("SELECT count(DISTINCT patient_id) FROM patient_evaluation")).scalar_one()
        generated_tasks = c.execute(text("SELECT count(*) FROM task JOIN patient p ON p.id = task.patient_id "
                                         "WHERE p.practice NOT LIKE 'A8100%'")).scalar_one()
    assert patients == 6 + 25 and evaluated == 31 and generated_tasks > 0
    with engine.connect() as c:
        tasks_before = c.execute(text("SELECT count(*) FROM task")).scalar_one()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already loaded" in " ".join(again.output.split())  # however the console wraps
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM patient")).scalar_one() == 31
        tasks_after = c.execute(text("SELECT count(*) FROM task")).scalar_one()
    assert "0 new task(s)" in " ".join(again.output.split())  # seeding again changes no task
    assert tasks_after == tasks_before
    engine.dispose()


def test_nobody_dies_before_birth():
    """Person 264,429 of seed 1 (born 2026-08-09) was once given a death date before their birth, which
    the Parquet path wrote and the record model refused (found by the 450,000-person registry load)."""
    rec = next(generate(1, seed=1, as_of=dt.date(2026, 11, 20), start=264429))
    assert rec.patient.birth_date == dt.date(2026, 8, 9)
    assert rec.patient.death_date is None or rec.patient.death_date >= rec.patient.birth_date
    # the same dates generate() puts in the records, drawn without building the records (8 times cheaper)
    people = [person(i, 2, dt.date(2026, 11, 20)) for i in range(3000)]
    assert sum(p.deceased is not None for p in people) > 10  # deaths to check
    for p in people:
        assert p.deceased is None or p.deceased >= p.birth


def test_demo_registry_shows_sla_lateness_and_nothing_raised_in_the_future(tmp_path, monkeypatch, shipped_library_once):
    """Issue 16 item 10: the demo had 0 overdue tasks and stamped tasks as raised later than the clock
    a user then sees (as of today, 09:00, seeded at 03:30)."""
    from sqlalchemy import text
    from typer.testing import CliRunner

    from cli.main import app
    from engine.registry.db import make_engine

    monkeypatch.delenv("DATABASE_URL", raising=False)
    today = dt.datetime.now(dt.timezone.utc).date()
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--population", "0", "--as-of", today.isoformat()])
    assert result.exit_code == 0, result.output
    after = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    engine = make_engine(f"sqlite:///{tmp_path / 'carepath.db'}")
    with engine.connect() as c:
        raised = [dt.datetime.fromisoformat(str(r)) for r in c.execute(text("SELECT raised_at FROM task")).scalars()]
        overdue = c.execute(text("SELECT count(*) FROM task WHERE status IN ('open', 'accepted') AND due < :now"),
                            {"now": after}).scalar_one()
    engine.dispose()
    assert raised and max(raised) <= after
    assert overdue > 0


ECQM_KITS = ROOT.parent / "shared" / "conformance" / "ecqm"


@pytest.mark.parametrize("kit", ["CMS122", "CMS135", "CMS144", "CMS159", "CMS165", "CMS2", "CMS22", "CMS69"])
def test_population_run_counts_exceptions_and_episodes_as_the_per_patient_engines(tmp_path, kit, shipped_library_once):
    """Issue 15: a population run of an eCQM protocol over its whole conformance deck counts every population
    (denominator exceptions apart; CMS22 per episode, a case can count 2) exactly as the per-patient
    evaluations summed, and as the deck's own expected MeasureReports summed; the audit over the stored
    per-patient rows (measure_by_practice) counts the same."""
    import json

    import duckdb

    from engine.app.audit import step_counts
    from engine.app.conformance import find_protocol, kit_measure
    from engine.engines.duckdb import batch
    from engine.engines.duckdb.audit import measure_by_practice
    from engine.engines.duckdb.columnar import load_records
    from engine.engines.duckdb.run import evaluate_population_run
    from engine.evaluation.evaluator import Options, evaluate
    from engine.records.fhir.bundle import import_bundle

    kit_dir = ECQM_KITS / kit
    km = kit_measure(kit_dir)
    proto, measure = find_protocol(km, ROOT / "protocols")
    start, end = km.period_start, km.period_end
    records, expected = [], dict.fromkeys(("initial_population", "denominator", "exclusions", "exceptions", "numerator"), 0)
    names = {"initial-population": "initial_population", "denominator": "denominator",
             "denominator-exclusion": "exclusions", "denominator-exception": "exceptions", "numerator": "numerator"}
    for case in sorted((kit_dir / "cases").iterdir()):
        (rec,) = import_bundle(json.loads((case / "bundle.json").read_text()), source_system=f"{kit}/{case.name}",
                               single_patient=True).records
        records.append(rec)
        for k, v in json.loads((case / "expected.json").read_text())["populations"].items():
            expected[names[k]] += int(v)
    want = dict.fromkeys(expected, 0)
    for rec in records:
        res = evaluate(rec, [proto], as_of=end, period_start=start, options=Options(engine="python")).protocols[0]
        (m,) = [x for x in res.measures if x.measure == measure.id]
        for k, v in step_counts(m).items():
            want[k] += v
    assert want == expected  # every case passes on the per-patient engine: the deck's sums are the truth
    con = batch.connect(str(tmp_path / "population.duckdb"))
    load_records(con, records)
    con.close()
    summary = evaluate_population_run(tmp_path / "population.duckdb", [proto], end, start, workers=1,
                                      results=tmp_path / "results.duckdb", log=lambda m: None)
    (p,) = summary["protocols"]
    assert p["measures"][measure.id] == {**want, "cannot_determine": 0}, p
    if kit in ("CMS135", "CMS144", "CMS2", "CMS22", "CMS69"):
        assert want["exceptions"] > 0
    if kit == "CMS22":
        assert want["denominator"] > len(records) // 2 and any(  # some case counts two episodes
            json.loads((c / "expected.json").read_text())["populations"]["denominator"] > 1
            for c in (kit_dir / "cases").iterdir())
    res = duckdb.connect(summary["results"], read_only=True)
    try:
        rows = measure_by_practice(res, summary["run"], proto, measure.id)
        assert {k: sum(r[k] for r in rows) for k in want} == want
        assert {r["basis"] for r in rows} == {"episode" if measure.episode_based else "patient"}
        basis = res.execute("SELECT DISTINCT basis FROM measures WHERE measure = ?", [measure.id]).fetchall()
        assert basis == [("episode" if measure.episode_based else "patient",)]
    finally:
        res.close()


@pytest.mark.parametrize("as_of", [dt.date(2026, 12, 31), dt.date(2027, 6, 30)])
def test_population_run_of_every_protocol_equals_the_per_patient_counts(tmp_path, as_of):
    """Every protocol in force over a generated population (eCQM ones included): the run's counts of every
    population equal the per-patient evaluations summed with the audit's own reading (engine.app.audit.step_counts).
    (The generated people have no eCQM episodes: the conformance decks test above has them.) From 2027-04-01 the
    versions in force declare clusters the site has not supplied: the patients whose result cannot be determined
    are counted apart (`cannot_determine`), patient by patient as the evaluator decides it."""
    from engine.app.audit import step_counts
    from engine.engines.duckdb.run import evaluate_population_run
    from engine.evaluation.evaluator import Options, evaluate

    data_as_of = min(as_of, AS_OF)  # people generated up to today (no record may be dated in the future)
    write_population(tmp_path / "pop", 150, seed=21, as_of=data_as_of, workers=1)
    protos = shipped_library().in_force(as_of)
    assert any(m.has_exceptions for p in protos for m in p.measures) and any(m.episode_based for p in protos for m in p.measures)
    summary = evaluate_population_run(tmp_path / "pop", protos, as_of, workers=2, chunk_size=80, log=lambda m: None)
    got = {p["protocol"]: p["measures"] for p in summary["protocols"] if p["measures"]}
    want: dict = {}
    for rec in generate(150, seed=21, as_of=data_as_of):
        for res in evaluate(rec, protos, as_of=as_of, options=Options(engine="python")).protocols:
            for m in res.measures:
                w = want.setdefault(f"{res.protocol}@{res.version}", {}).setdefault(
                    m.measure, dict.fromkeys(("initial_population", "denominator", "exclusions", "exceptions", "numerator",
                                              "cannot_determine"), 0))
                for k, v in step_counts(m).items():
                    w[k] += v
                w["cannot_determine"] += bool(m.cannot_determine)
    assert got == want
    assert sum(v["denominator"] for ms in want.values() for v in ms.values()) > 0
    if as_of >= dt.date(2027, 4, 1):  # declared clusters not supplied: some results cannot be determined
        assert sum(v["cannot_determine"] for ms in want.values() for v in ms.values()) > 0


def test_bench_p4_counts_exceptions_and_agrees_with_the_stored_run(tmp_path):
    """The population benchmark's P4 (one measure by practice from a stored run) counts denominator exceptions
    (QOF personalised care adjustments, t2dm-annual-care 1.3.0) and cannot-determine apart, and its plain-Python
    reference over the stored rows agrees with the run's own aggregates."""
    from benchmarks.bench_population import p4
    from engine.engines.duckdb.run import evaluate_population_run
    from engine.language.loader import load_protocol

    as_of = dt.date(2026, 11, 20)  # the version given explicitly (in force from 2027-04-01); people up to this date
    write_population(tmp_path / "pop", 400, seed=5, as_of=as_of, workers=1)
    proto = load_protocol(ROOT / "protocols" / "t2dm-annual-care@1.3.0.yaml")
    summary = evaluate_population_run(tmp_path / "pop", [proto], as_of, workers=1, log=lambda m: None)
    stored = summary["protocols"][0]["measures"]
    for measure in ("DM020", "DM036"):
        out = p4(summary["results"], summary["run"], proto, measure, lambda m: None)
        assert out["agrees_with_stored_aggregates"], out
        assert {k: out[k] for k in ("denominator", "exclusions", "exceptions", "numerator", "cannot_determine")} == {
            k: stored[measure][k] for k in ("denominator", "exclusions", "exceptions", "numerator", "cannot_determine")}
    assert stored["DM020"]["exceptions"] > 0 and stored["DM020"]["exclusions"] == 0  # PCAs are exceptions in 1.3.0


def test_default_chunks_are_equal_and_a_multiple_of_the_workers():
    """Without --chunk a run takes equal chunks of at most DEFAULT_CHUNK, as many as a multiple of the workers
    (an odd number of chunks on 2 workers leaves one core idle for the last)."""
    from engine.engines.duckdb.run import DEFAULT_CHUNK, balanced_chunk

    assert balanced_chunk(750_000, 2) == DEFAULT_CHUNK == 31_250  # 24 chunks, 12 per worker
    assert balanced_chunk(100_000, 2) == 25_000  # not 3 x 31,250 and a last chunk of 6,250
    assert balanced_chunk(62_500, 2) == 31_250 and balanced_chunk(62_501, 2) == 15_626  # 4 chunks, the last 15,623
    assert balanced_chunk(100, 1) == 100 and balanced_chunk(100, 2) == 50 and balanced_chunk(0, 2) == 1
    for n, w in [(750_000, 2), (99_999, 2), (1_000_003, 3), (7, 4)]:
        size = balanced_chunk(n, w)
        chunks = -(-n // size)
        assert size <= DEFAULT_CHUNK and (chunks % w == 0 or chunks < w)
