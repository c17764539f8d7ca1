"""Web page latency benchmark (not part of the test run): see engine/population/bench_pages.py.

    python benchmarks/bench_pages.py                          # the demo registry; prints one JSON object
    python benchmarks/bench_pages.py --patients 20000         # a generated registry (built once, cached)
    carepath bench pages --patients 20000 --json              # the same through the CLI
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.population.bench_pages import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=0, help="0: the demo registry")
    ap.add_argument("--requests", type=int, default=50, help="Requests per page and user")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="Profile the audit page in-process too")
    a = ap.parse_args()
    out = run(a.patients, a.requests, a.seed, workers=a.workers, profile=a.profile,
              log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
