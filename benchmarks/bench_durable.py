"""durable-rules memory benchmark (not part of the test run): see engine/population/bench_durable.py.

    python benchmarks/bench_durable.py --evaluations 1000000          # prints one JSON object
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.population.bench_durable import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=1_000_000)
    ap.add_argument("--patients", type=int, default=750_000, help="population size (generated once, then reused)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--as-of", default="2026-11-20")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--protocol", action="append", help="protocol id (repeatable; default: every protocol in force)")
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    out = run(a.evaluations, a.patients, a.seed, dt.date.fromisoformat(a.as_of), a.workers, a.protocol, a.chunk_size,
              write=not a.no_write, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
