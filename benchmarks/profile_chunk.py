"""Profile one chunk of a population run (issue 18 item 4): CPU seconds and peak RSS of each step a worker takes.

    python -m benchmarks.profile_chunk --data benchmarks/.data/pop-100000-s1-2026-11-20-g063f2f30 --chunk 31250

One process, one DuckDB thread, as a worker of engine/engines/duckdb/run.py: load the chunk, the shared value-set
matching pass, then each protocol in force (its compiled query, the result rows written to Parquet), the shared
pass dropped. Each step: CPU seconds of this process, resident memory after it, and the highest resident memory
while it ran (sampled every 20 ms). A second, tiny chunk (--fixed, default 500 people) gives the fixed cost per
(protocol, chunk): planning and statements that do not grow with the people. Not a test; the result goes to
benchmarks/results/profile-chunk-<chunk>-<time>.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import threading
from pathlib import Path

from benchmarks.bench_batch import ROOT, finish

AS_OF = dt.date(2026, 11, 20)


class _Rss:
    def __init__(self):
        self.peak, self._stop = 0.0, threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    @staticmethod
    def now() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _loop(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def take(self) -> float:
        p, self.peak = max(self.peak, self.now()), self.now()
        return round(p, 1)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def profile(data: Path, people: int, as_of: dt.date = AS_OF, log=print) -> dict:
    from engine.engines.duckdb import batch, run
    from engine.language.library import load_library

    protocols = load_library([ROOT / "protocols"]).in_force(as_of)
    con = run.open_population(data, threads=1)
    rss = _Rss()
    steps: list[dict] = []
    out = Path(tempfile.mkdtemp(prefix="carepath-profile-"))

    def step(name: str, fn):
        rss.take()
        c0 = _cpu()
        fn()
        steps.append({"step": name, "cpu_seconds": round(_cpu() - c0, 3), "peak_rss_mib": rss.take(),
                      "rss_after_mib": round(rss.now(), 1)})
        log(f"{name:52s} {steps[-1]['cpu_seconds']:7.2f} s  peak {steps[-1]['peak_rss_mib']:7.0f} MiB")

    try:
        step("load chunk", lambda: run.load_chunk(con, 0, people))
        tables = batch.default_tables(run.CHUNK_PREFIX)
        shared = []
        step("shared matching pass", lambda: shared.append(batch.create_shared(con, protocols, as_of, None, tables)))
        rows = con.execute(f"SELECT count(*) FROM {shared[0].vsm_table}").fetchone()[0]
        for proto in protocols:
            step(proto.key, lambda p=proto: run._evaluate_chunk(con, "profile", p, 0, as_of, None,
                                                               out / p.key.replace("@", "_"), shared[0]))
        step("drop shared pass", lambda: batch.drop_shared(con, shared[0]))
    finally:
        con.close()
        shutil.rmtree(out, ignore_errors=True)
    return {"people": people, "shared_rows": rows, "steps": steps,
            "protocols_cpu_seconds": round(sum(s["cpu_seconds"] for s in steps if "@" in s["step"]), 2),
            "total_cpu_seconds": round(sum(s["cpu_seconds"] for s in steps), 2),
            "peak_rss_mib": max(s["peak_rss_mib"] for s in steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a population folder (carepath generate)")
    ap.add_argument("--chunk", type=int, default=31_250)
    ap.add_argument("--fixed", type=int, default=500, help="a tiny chunk for the fixed cost (0: skip)")
    a = ap.parse_args()
    result = {"benchmark": "profile-chunk", "as_of": AS_OF.isoformat(), "data": str(a.data),
              "chunk": profile(a.data, a.chunk)}
    if a.fixed:  # a fresh process would be cleaner; the second profile reuses nothing from the first but the imports
        result["fixed"] = profile(a.data, a.fixed)
        big, small = result["chunk"], result["fixed"]
        per = (big["protocols_cpu_seconds"] - small["protocols_cpu_seconds"]) / (a.chunk - a.fixed)
        fixed = small["protocols_cpu_seconds"] - per * a.fixed
        result["model"] = {"protocols_cpu_seconds_per_1000_people": round(per * 1000, 3),
                           "protocols_fixed_cpu_seconds_per_chunk": round(fixed, 2)}
        print(f"all protocols: {per * 1000:.3f} CPU s per 1,000 people + {fixed:.2f} CPU s per chunk")
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(finish(result, f"profile-chunk-{a.chunk}")["written"])


if __name__ == "__main__":
    main()
