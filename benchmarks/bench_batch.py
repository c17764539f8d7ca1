"""Batch-engine benchmark (not part of the test run): see engine/population/bench.py.

    python benchmarks/bench_batch.py --patients 100000          # prints one JSON object
    carepath bench batch --patients 100000 --json                # the same through the CLI
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.population.bench import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--as-of", default="2026-04-30")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--protocol", default="t2dm-annual-care")
    ap.add_argument("--durable-sample", type=int, default=2000)
    ap.add_argument("--no-reference", action="store_true")
    a = ap.parse_args()
    out = run(a.patients, a.seed, dt.date.fromisoformat(a.as_of), a.workers, a.protocol, a.durable_sample,
              not a.no_reference, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
