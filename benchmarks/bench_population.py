"""Benchmarks P1 (every protocol over the population, results persisted), scaling, and P4 (one
measure by practice over the whole population, from the persisted results).

    carepath bench population --patients 750000 --scaling 10000,100000 [--json]

P1: `evaluate-population` exactly as a user runs it (chunks in worker processes, results written to a
DuckDB file), timed end to end. Peak memory is the largest *sum* of the resident set sizes of this
process and its workers, sampled every 0.2 s (ru_maxrss would only give the largest single process).
Reference, same run: the per-patient engine in plain Python (derive + conditions, engine="python")
over the first `reference_sample` patients for every protocol; its fired sets are compared with the
persisted rows (mismatches must be 0), and patients/s gives the ratio batch / reference.

Scaling: the same P1 over the first 10k and 100k patients of the same population (each generated
person has their own random stream, so the first N people *are* the population of N).

P4: one measure (default DM020 of the diabetes protocol) by practice over every patient, computed from
the persisted per-patient rows (fired conditions + deceased), checked against the per-chunk aggregates
the run stored; reference: the same counts in plain Python over the same rows fetched from the file.
"""
from __future__ import annotations

import datetime as dt
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bench_batch import DATA, ROOT, finish

AS_OF = dt.date(2026, 11, 20)  # every protocol in protocols/ is in force


class TreeRss:
    """Samples the summed RSS (MiB) of this process and all its descendants."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _children() -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                kids.setdefault(ppid, []).append(int(d.name))
        return kids

    def sample(self) -> float:
        kids, todo, total = self._children(), [os.getpid()], 0
        while todo:
            pid = todo.pop()
            todo.extend(kids.get(pid, []))
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.every)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def population_dir(patients: int, seed: int, as_of: dt.date, workers: int, log) -> tuple[Path, float | None]:
    """The generated population (cached under benchmarks/.data, keyed by the generator's code)."""
    import hashlib

    import engine.synthetic.generate as gen_module
    from engine.engines.duckdb.columnar import has_population
    from engine.synthetic.generate import write_population

    version = hashlib.sha1(Path(gen_module.__file__).read_bytes()).hexdigest()[:8]
    data = DATA / f"pop-{patients}-s{seed}-{as_of.isoformat()}-g{version}"
    if has_population(data):
        log(f"reusing {data}")
        return data, None
    log(f"generating {patients} patients into {data} ...")
    return data, write_population(data, patients, seed=seed, as_of=as_of, workers=workers)["total_seconds"]


def p1(data: Path, protocols, as_of: dt.date, patients: int, workers: int, chunk: int, log) -> dict:
    from engine.engines.duckdb.run import evaluate_population_run

    tmp = tempfile.mkdtemp(prefix="carepath-p1-", dir=DATA)  # the caller removes it
    results = Path(tmp) / "results.duckdb"
    c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with TreeRss() as rss:
        summary = evaluate_population_run(data, protocols, as_of, workers=workers, results=results, chunk_size=chunk,
                                          log=log, first=patients)
    seconds = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(c0, c1))
    parent_cpu = c1[0].ru_utime + c1[0].ru_stime - c0[0].ru_utime - c0[0].ru_stime  # taking the rows in (+ the RSS sampler)
    size = results.stat().st_size
    out = {"patients": summary["patients"], "protocols": len(protocols), "seconds": round(seconds, 2),
           "cpu_seconds": round(cpu, 2), "parent_cpu_seconds": round(parent_cpu, 2), "patients_per_second": round(summary["patients"] / seconds),
           "peak_rss_mib": round(rss.peak, 1), "results_mib": round(size / 2**20, 1), "workers": workers,
           "chunk": summary["chunk_size"], "chunks": summary["chunks"],
           "errors": {p["protocol"]: p["error"] for p in summary["protocols"] if p.get("error")},
           "on_register": {p["protocol"]: p.get("on_register") for p in summary["protocols"]}}
    out["_results"] = str(results)  # used (then dropped) while the file still exists
    out["_summary"] = summary
    return out, tmp


def reference(data: Path, protocols, as_of: dt.date, sample: int, results: str, run: str, seed: int, log) -> dict:
    """The per-patient engine in plain Python over the first `sample` patients, checked against the
    persisted rows."""
    import duckdb

    from engine.engines.derive import Context
    from engine.evaluation.evaluator import fired_conditions
    from engine.synthetic.generate import generate

    records = list(generate(sample, seed=seed, as_of=as_of))
    t0 = time.perf_counter()
    got = {}
    for rec in records:
        for proto in protocols:
            ctx = Context.as_of(as_of, proto.period)
            got[(rec.patient.nhs_number, proto.id)] = fired_conditions(rec, proto, ctx, engine="python")[0]
    seconds = time.perf_counter() - t0
    con = duckdb.connect(results, read_only=True)
    nhs = [r.patient.nhs_number for r in records]
    stored = {(n, p): set(f) for n, p, f in con.execute(
        "SELECT nhs_number, protocol, fired FROM fired WHERE run = ? AND nhs_number IN (SELECT unnest(?))",
        [run, nhs]).fetchall()}
    con.close()
    mismatches = sum(1 for k, v in got.items() if stored.get(k) != v)
    log(f"plain-Python per-patient engine: {sample} patients x {len(protocols)} protocols in {seconds:.1f} s, "
        f"{mismatches} mismatches")
    return {"patients": sample, "seconds": round(seconds, 2), "patients_per_second": round(sample / seconds, 1),
            "mismatches": mismatches}


def p4(results: str, run: str, proto, measure: str, log) -> dict:
    """One measure by practice from the persisted per-patient rows; checked against the stored aggregates."""
    import duckdb

    from engine.engines.duckdb.audit import measure_by_practice

    con = duckdb.connect(results, read_only=True)
    con.execute("SET threads = 2")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        rows = measure_by_practice(con, run, proto, measure)
        times.append(time.perf_counter() - t0)
    counted = ("denominator", "exclusions", "exceptions", "numerator", "cannot_determine")
    stored = {r[0]: tuple(int(x) for x in r[1:]) for r in con.execute(
        "SELECT practice, " + ", ".join(f"sum({c})" for c in counted) + " FROM measures WHERE run = ? AND protocol = ? "
        "AND version = ? AND measure = ? GROUP BY practice", [run, proto.id, proto.version, measure]).fetchall()}
    agree = stored == {r["practice"]: tuple(r[c] for c in counted) for r in rows}
    # reference: the same counts in plain Python over the same rows (QOF personalised care adjustments, i.e.
    # denominator exceptions, apart; a measure that cannot be determined is counted apart, engine/ir/measure_steps.py)
    t0 = time.perf_counter()
    fetched = con.execute("SELECT practice, deceased, fired FROM fired WHERE run = ? AND protocol = ? AND version = ?",
                          [run, proto.id, proto.version]).fetchall()
    t1 = time.perf_counter()
    m = next(x for x in proto.measures if x.id == measure)
    k = f"measure:{measure}:"
    py: dict[str, list[int]] = {}
    und = proto.undetermined

    def blocked(f: set) -> bool:  # as engine.evaluation.evaluator._measure_blocked (DM020 needs no declared cluster)
        if f"measure:{measure}" not in und:
            return False
        for step in ("ip", "den"):
            if k + step in und:
                return True
            if k + step not in f:
                return False
        return True

    for practice, deceased, fired in fetched:
        f = set(fired)
        c = py.setdefault(practice, [0, 0, 0, 0, 0])
        if blocked(f):
            c[4] += not deceased
            continue
        den = not deceased and k + "ip" in f and k + "den" in f
        met = den and k + "num" in f
        excl = den and k + "excl" in f and not (m.achievers_kept and met)
        exc = den and not excl and not met and k + "exc" in f
        c[0] += den
        c[1] += excl
        c[2] += exc
        c[3] += met and not excl
    t2 = time.perf_counter()
    con.close()
    agree = agree and {p: tuple(v) for p, v in py.items()} == stored
    total = {x: sum(r[x] for r in rows) for x in counted}
    log(f"P4 {proto.id} {measure} by practice: {min(times) * 1000:.0f} ms best, {max(times) * 1000:.0f} ms worst; "
        f"{len(rows)} practices, {total['numerator']} / {total['denominator']} ({total['exceptions']} exceptions)")
    return {"protocol": proto.key, "measure": measure, "practices": len(rows), "patients_rows": len(fetched),
            "seconds_best": round(min(times), 3), "seconds_worst": round(max(times), 3), "target_seconds": 2.0,
            "denominator": total["denominator"], "numerator": total["numerator"], "exclusions": total["exclusions"],
            "exceptions": total["exceptions"], "cannot_determine": total["cannot_determine"],
            "agrees_with_stored_aggregates": agree,
            "reference_python_seconds": round(t2 - t1, 3), "reference_fetch_seconds": round(t1 - t0, 3)}


def run(patients: int = 750_000, seed: int = 1, as_of: dt.date = AS_OF, workers: int | None = None,
        chunk: int | None = None, scaling: tuple[int, ...] = (10_000, 100_000), reference_sample: int = 1000,
        measure: tuple[str, str] = ("t2dm-annual-care", "DM020"), write: bool = True, log=lambda m: None) -> dict:
    import shutil

    from engine.language.library import load_library

    workers = workers or os.cpu_count() or 1
    lib = load_library([ROOT / "protocols"])
    protocols = lib.in_force(as_of)
    data, gen_s = population_dir(patients, seed, as_of, workers, log)  # smaller runs read its first N
    out: dict = {"benchmark": "population", "patients": patients, "seed": seed, "as_of": as_of.isoformat(),
                 "protocols": [p.key for p in protocols], "generate_seconds": gen_s,
                 "targets": {"p1_seconds": 60, "p1_peak_rss_mib": 4096, "p4_seconds": 2.0}}
    out["scaling"] = []
    for n in sorted({n for n in scaling if n < patients}):
        r, tmp = p1(data, protocols, as_of, n, workers, chunk, log)
        r.pop("_results"), r.pop("_summary")
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"P1 at {n}: {r['seconds']} s, peak RSS {r['peak_rss_mib']} MiB")
        out["scaling"].append(r)
    r, tmp = p1(data, protocols, as_of, patients, workers, chunk, log)
    try:
        results, summary = r.pop("_results"), r.pop("_summary")
        log(f"P1 at {patients}: {r['seconds']} s, peak RSS {r['peak_rss_mib']} MiB")
        ref = reference(data, protocols, as_of, min(reference_sample, patients), results, summary["run"], seed, log)
        r["reference"] = ref
        r["ratio_to_reference"] = round(r["patients_per_second"] / ref["patients_per_second"], 1)
        out["p1"] = r
        out["scaling"].append({k: v for k, v in r.items() if k not in ("reference", "on_register", "errors")})
        proto = next(p for p in protocols if p.id == measure[0])
        out["p4"] = p4(results, summary["run"], proto, measure[1], log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = out["scaling"][0]
    for s in out["scaling"]:  # growth against the smallest run: linear means ratio ~ patients ratio
        s["time_ratio_to_smallest"] = round(s["seconds"] / base["seconds"], 2)
        s["patients_ratio_to_smallest"] = round(s["patients"] / base["patients"], 2)
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    return finish(out, f"population-{patients}", write)
