"""Benchmark P5 (issue 18 item 5): carepath's compiled batch engine against a hand-written DuckDB query, same
protocol, same data, same run.

    carepath bench p5 [--patients 200000] [--json]

The yardstick is ../shared/perf-reference beside the repository (read-only; its README): a 16-rule diabetes protocol written by hand as
one DuckDB query (protocol_sql.py, timed by bench_duckdb.py) over data from its generator (gen_data.py). This
benchmark only runs those files (copied to a scratch folder, because they write `data/` and `results/` beside
themselves); none of their code is in the project. One run:

1. gen_data.py N -> patients.parquet, facts.parquet (a Python with numpy / polars / pyarrow / psutil: the project
   venv has none of them, so /tmp/perfref as the README says, made once; `--python` to give another);
2. bench_duckdb.py N agg 2: the hand-written query, in-memory tables, 2 DuckDB threads, `CREATE TABLE out AS
   <query>` best of 3 (its JSON line: eval_s, patients_per_s); its outputs per patient (results/duckdb_agg_N.parquet);
3. carepath: the same Parquet loaded into the columnar tables (benchmarks/perf_reference/load.py, timed apart as
   the reference's load is), then benchmarks/perf_reference/perfref-diabetes.yaml compiled (batch.prepare: compile
   + value-set matching) and run as `CREATE TABLE out AS <compiled query>`, in the same process, 2 DuckDB threads
   (the reference's setting), best of 3, each repeat timing prepare + query;
4. the outputs compared patient by patient: in_register = the register (`population`), every other output = its
   rule (each rule is asked only of patients on the register, as the reference's `reg AND ...`). `cp_count` is not
   a carepath output; it is checked through cp8_complete (= 8) and care_process_review (< 4).

Writes benchmarks/results/p5-<N>-<timestamp>.json: both throughputs, the ratio compiled / hand-written and whether
it meets P5's 0.7, the compiled runs' CPU seconds (`cpu_s`, `prepare_cpu_s`: this process, DuckDB's threads
included; on a loaded machine the figures to compare two versions by), and the mismatches per output (must be 0).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_batch import ROOT, finish

REFERENCE = Path(os.environ.get("CAREPATH_PERF_REFERENCE", ROOT.parent / "shared" / "perf-reference"))  # beside the repository
PROTOCOL = ROOT / "benchmarks" / "perf_reference" / "perfref-diabetes.yaml"
REF_VENV = Path("/tmp/perfref")
AS_OF = dt.date(2025, 1, 1)  # the reference's evaluation date
THREADS = 2  # the reference's setting (its README: 2 cores, 2 threads)
TARGET = 0.7
OUTPUTS = ["in_register", "hba1c_met", "bp_met", "cp8_complete", "order_hba1c", "glycaemic_review", "measure_bp",
           "foot_check", "renal_referral", "order_acr", "order_lipids", "consider_statin", "smoking_cessation",
           "retinal_screening", "annual_review_invite", "consider_acei_arb", "care_process_review"]
MODULES = ("numpy", "polars", "pyarrow", "psutil", "duckdb")


def reference_python(log=print) -> str:
    """A Python that can run the reference's files: this one if it has their modules, else /tmp/perfref (made with
    pip as the README says when missing)."""
    probe = "import " + ", ".join(MODULES)
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return sys.executable
    py = REF_VENV / "bin" / "python"
    if not py.exists() or subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        import duckdb

        log(f"making {REF_VENV} (numpy, polars, pyarrow, psutil, duckdb=={duckdb.__version__}) ...")
        subprocess.run(["python3", "-m", "venv",
                        str(REF_VENV)], check=True)
        subprocess.run([str(REF_VENV / "bin" / "pip"), "install", "-q", f"duckdb=={duckdb.__version__}", "numpy",
                        "polars", "psutil", "pyarrow"], check=True)
    return str(py)


def _json_line(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in the reference's output:\n{stdout[-2000:]}")


def hand_written(work: Path, patients: int, python: str, log=print) -> tuple[dict, dict]:
    """Generate the data and time the hand-written query; (its JSON line + generate time, pid -> outputs)."""
    for f in ("gen_data.py", "bench_duckdb.py", "common.py", "protocol_sql.py"):
        shutil.copy(REFERENCE / f, work / f)
    t0 = time.perf_counter()
    log(f"gen_data.py {patients} ...")
    subprocess.run([python, "gen_data.py", str(patients)], cwd=work, check=True, capture_output=True, text=True)
    gen_s = time.perf_counter() - t0
    log(f"bench_duckdb.py {patients} agg {THREADS} ...")
    proc = subprocess.run([python, "bench_duckdb.py", str(patients), "agg", str(THREADS)], cwd=work, check=True,
                          capture_output=True, text=True)
    line = _json_line(proc.stdout)
    line["generate_s"] = round(gen_s, 2)
    import duckdb

    con = duckdb.connect()
    path = str(work / "results" / f"duckdb_agg_{patients}.parquet").replace("'", "''")
    cols = ", ".join(OUTPUTS)
    rows = con.execute(f"SELECT pid, {cols} FROM read_parquet('{path}')").fetchall()
    con.close()
    return line, {r[0]: tuple(bool(v) for v in r[1:]) for r in rows}


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def compiled(data: Path, patients: int, repeat: int = 3, log=print) -> tuple[dict, dict]:
    """Load the reference's Parquet into carepath's tables and time the compiled protocol; (timings, pid -> outputs)."""
    from benchmarks.perf_reference.load import load_reference
    from engine.engines.duckdb import batch
    from engine.language.loader import load_protocol

    proto = load_protocol(PROTOCOL)
    con = batch.connect(threads=THREADS)
    t0 = time.perf_counter()
    n_pat, n_facts = load_reference(con, data, patients)
    load_s = time.perf_counter() - t0
    tables = batch.default_tables("")
    runs, prepare_s, cpu, prepare_cpu = [], [], [], []
    keys = None
    for _ in range(repeat):
        con.execute("DROP TABLE IF EXISTS out")
        t0, c0 = time.perf_counter(), _cpu()
        c = batch.prepare(con, proto, AS_OF, None, tables)
        t1, c1 = time.perf_counter(), _cpu()
        con.execute(f"CREATE TABLE out AS {c.sql}")
        runs.append(time.perf_counter() - t0)
        cpu.append(_cpu() - c0)
        prepare_s.append(t1 - t0)
        prepare_cpu.append(c1 - c0)
        keys = list(c.conditions)
    log(f"compiled: {[round(r, 3) for r in runs]} s")
    column = {"in_register": "population", **{o: f"rule:{o}" for o in OUTPUTS if o != "in_register"}}
    missing = [k for k in column.values() if k not in keys]
    if missing:
        raise RuntimeError(f"the compiled protocol has no {missing}")
    # a rule's column is its `when:`; a rule applies to patients on the register (docs/protocol-language.md §7),
    # which is what the engine's outputs report, so each rule is read together with the register
    reg = batch.ident("population")
    sel = ", ".join(f"coalesce({batch.ident(column[o])}, FALSE)" if o == "in_register"
                    else f"coalesce({reg} AND {batch.ident(column[o])}, FALSE)" for o in OUTPUTS)
    rows = con.execute(f"SELECT pid, {sel} FROM out").fetchall()
    con.close()
    best = min(runs)
    return ({"eval_s": round(best, 3), "first_s": round(runs[0], 3), "runs": [round(r, 3) for r in runs],
             "prepare_s_best": round(min(prepare_s), 3), "load_s": round(load_s, 2), "patients": n_pat,
             # CPU seconds of this process (DuckDB's threads included) per run and in prepare: on a loaded
             # machine the figures to compare before / after a change
             "cpu_s": [round(x, 3) for x in cpu], "prepare_cpu_s": [round(x, 3) for x in prepare_cpu],
             "facts_loaded": n_facts, "threads": THREADS, "patients_per_s": round(n_pat / best, 1)},
            {r[0]: tuple(bool(v) for v in r[1:]) for r in rows})


def compare(ref: dict, ours: dict) -> dict:
    """Per output: patients where the two disagree, and how many each has true."""
    pids = sorted(set(ref) | set(ours))
    none = (False,) * len(OUTPUTS)
    out = {}
    for i, o in enumerate(OUTPUTS):
        a = [ref.get(p, none)[i] for p in pids]
        b = [ours.get(p, none)[i] for p in pids]
        bad = [p for p, x, y in zip(pids, a, b) if x != y]
        out[o] = {"hand_written": sum(a), "compiled": sum(b), "mismatches": len(bad), "first_mismatches": bad[:5]}
    return {"patients_hand_written": len(ref), "patients_compiled": len(ours),
            "mismatches": sum(v["mismatches"] for v in out.values()), "per_output": out}


def agreement(patients: int, python: str | None = None, log=print) -> tuple[dict, dict, dict]:
    """Generate, run both, compare (no result file): (hand-written line, compiled timings, comparison)."""
    python = python or reference_python(log)
    with tempfile.TemporaryDirectory(prefix="carepath-p5-") as tmp:
        work = Path(tmp)
        line, ref = hand_written(work, patients, python, log)
        timing, ours = compiled(work / "data", patients, log=log)
    return line, timing, compare(ref, ours)


def run(patients: int = 200_000, python: str | None = None, log=print, write: bool = True) -> dict:
    line, timing, cmp = agreement(patients, python, log)
    ratio = timing["patients_per_s"] / line["patients_per_s"]
    out = {"benchmark": "P5", "patients": patients, "as_of": AS_OF.isoformat(),
           "protocol": str(PROTOCOL.relative_to(ROOT)), "reference": "perf-reference (hand-written DuckDB, agg)",
           "threads": THREADS,
           "hand_written": {k: line.get(k) for k in ("eval_s", "first_s", "runs", "load_s", "patients_per_s",
                                                      "facts_per_s", "threads", "peak_rss_mb", "duckdb",
                                                      "generate_s")},
           "compiled": timing, "ratio": round(ratio, 3), "target": TARGET, "meets_target": ratio >= TARGET,
           "agreement": cmp}
    return finish(out, f"p5-{patients}", write)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    print(json.dumps(run(n), indent=2))
