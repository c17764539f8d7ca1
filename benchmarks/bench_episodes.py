"""Measures counted per episode: one query over (patient, episode) rows vs one query per episode (issue 18).

    carepath bench episodes --patients 20000 [--rounds 2] [--protocol ecqm-cms22-bp-screening]

One chunk of the generated population (the first N people), loaded into memory once; the shared value-set
matching pass made once; then the population run's own step for one protocol (run._evaluate_chunk: its
condition columns, fired lists, registers and measures written to Parquet) timed both ways, alternating
(per-episode, rows, per-episode, rows, ...) so both see the same machine load. CPU is this process's CPU
time (DuckDB's threads included), wall the elapsed time; the machine is shared, so CPU is the figure to
compare. Every round's fired / measures / registers rows are checked identical between the two ways.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
import time
from pathlib import Path

from benchmarks.bench_batch import DATA, ROOT, finish

AS_OF = dt.date(2026, 11, 20)


def _rows(con, files: dict) -> dict:
    """Each output table's rows (sorted, the run-specific leading columns dropped) as a hash."""
    out = {}
    for table, path in sorted(files.items()):
        rows = con.execute(f"SELECT * FROM read_parquet('{path}')").fetchall()
        out[table] = hashlib.sha1(repr(sorted(repr(r[4:]) for r in rows)).encode()).hexdigest()[:16]
    return out


def run(patients: int = 20000, seed: int = 1, protocol_id: str = "ecqm-cms22-bp-screening", rounds: int = 2,
        threads: int = 1, data_dir: Path | None = None, write: bool = True, log=lambda m: None) -> dict:
    from engine.engines.duckdb import batch, run as prun
    from engine.engines.duckdb.columnar import has_population
    from engine.language.library import load_library
    from engine.synthetic.generate import write_population
    import engine.synthetic.generate as gen_module

    lib = load_library([ROOT / "protocols"])
    proto = lib.find(protocol_id)
    if proto is None:
        raise SystemExit(f"no protocol {protocol_id!r} under {ROOT / 'protocols'}")
    version = hashlib.sha1(Path(gen_module.__file__).read_bytes()).hexdigest()[:8]
    data = Path(data_dir) if data_dir else DATA / f"pop-{patients}-s{seed}-{AS_OF.isoformat()}-g{version}"
    if not has_population(data):
        log(f"generating {patients} patients into {data} ...")
        write_population(data, patients, seed=seed, as_of=AS_OF, workers=1)
    con = prun.open_population(data, threads=threads, first=patients)
    n = prun.load_chunk(con, 0, patients)
    tables = batch.default_tables(prun.CHUNK_PREFIX)
    t0 = time.perf_counter()
    shared = batch.create_shared(con, [proto], AS_OF, None, tables)
    out: dict = {"benchmark": "episodes", "protocol": proto.key, "patients": n, "seed": seed, "as_of": AS_OF.isoformat(),
                 "threads": threads, "rounds": rounds, "shared_matching_seconds": round(time.perf_counter() - t0, 3),
                 "command": f"carepath bench episodes --patients {patients} --rounds {rounds} --protocol {protocol_id}"}
    real_table = batch.episode_table
    ways = {"per_episode": lambda *a, **k: None, "episode_rows": real_table}
    times: dict = {w: {"cpu": [], "wall": []} for w in ways}
    outputs: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="carepath-bench-ep-") as tmp:
            for r in range(rounds):
                for way, fn in ways.items():
                    batch.episode_table = fn
                    w0, c0 = time.perf_counter(), time.process_time()
                    part = prun._evaluate_chunk(con, "bench", proto, 0, AS_OF, None, Path(tmp) / f"{way}-{r}", shared)
                    times[way]["wall"].append(round(time.perf_counter() - w0, 2))
                    times[way]["cpu"].append(round(time.process_time() - c0, 2))
                    got = _rows(con, part["files"])
                    if outputs.setdefault(r, got) != got:
                        raise AssertionError(f"round {r}: {way} differs from the other way: {got} vs {outputs[r]}")
                    log(f"round {r + 1} {way}: cpu {times[way]['cpu'][-1]} s, wall {times[way]['wall'][-1]} s")
    finally:
        batch.episode_table = real_table
        con.close()
    for way, t in times.items():
        out[way] = {"cpu_seconds": t["cpu"], "wall_seconds": t["wall"], "cpu_best": min(t["cpu"]), "wall_best": min(t["wall"])}
    out["queries"] = {"per_episode": len(batch.condition_groups(proto)), "episode_rows": 3}
    out["identical"] = True  # checked every round above (fired, measures, registers, measure_values)
    out["cpu_speedup"] = round(out["per_episode"]["cpu_best"] / max(out["episode_rows"]["cpu_best"], 1e-9), 2)
    out["wall_speedup"] = round(out["per_episode"]["wall_best"] / max(out["episode_rows"]["wall_best"], 1e-9), 2)
    return finish(out, f"episodes-{n}", write)


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--protocol", default="ecqm-cms22-bp-screening")
    ap.add_argument("--data", type=Path, default=None)
    a = ap.parse_args()
    print(json.dumps(run(a.patients, protocol_id=a.protocol, rounds=a.rounds, data_dir=a.data, log=print), indent=2))
