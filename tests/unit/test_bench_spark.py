"""The pure parts of `carepath bench spark` (benchmarks/bench_spark.py): the projection from the first K chunks to
the whole population, and the process-tree accounting that has to see the JVM (a child of this process)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_population import TreeRss
from benchmarks.bench_spark import project, tree_cpu_seconds


def test_projection_scales_by_chunks_and_pays_the_fixed_cost_once():
    # Spark: one chunk after another; 120 s measured over 1 of 24 chunks, 20 s of it the session start
    assert project(120.0, 1, 24, parallel=1, fixed=20.0) == 20.0 + 100.0 * 24
    # DuckDB, 2 workers: 2 chunks measured ran side by side (one wave); 24 chunks are 12 waves
    assert project(30.0, 2, 24, parallel=2) == 30.0 * 12
    # one chunk on 2 workers is a wave too (one worker idle): the projection does not halve it
    assert project(30.0, 1, 24, parallel=2) == 30.0 * 12
    assert project(30.0, 3, 24, parallel=2) == 30.0 * 12 / 2
    assert project(50.0, 24, 24, parallel=2, fixed=5.0) == 50.0  # everything ran: nothing projected


CHILD = """
import sys, time
ballast = bytearray(b"\\x01") * (96 * 2**20)   # pages touched: resident
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("ready", flush=True)
sys.stdin.readline()
"""


# Run in a fresh process whose only child is the one started here: in a test worker the tree also holds whatever
# else the worker started (Spark's JVM, whose resident set shrinks and grows by tens of MiB between two samples).
MEASURE = """
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_population import TreeRss
from benchmarks.bench_spark import tree_cpu_seconds

own_cpu, own_rss = tree_cpu_seconds(), TreeRss().sample()
child = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
try:
    ready = child.stdout.readline().strip() == "ready"
    rss_added, alive = TreeRss().sample() - own_rss, tree_cpu_seconds() - own_cpu
finally:
    child.communicate("\\n", timeout=30)
time.sleep(0.05)
print(json.dumps({"ready": ready, "rss_added": rss_added, "alive": alive, "after": tree_cpu_seconds() - own_cpu,
                  "returncode": child.returncode}))
"""


def test_tree_cpu_and_rss_include_a_child_process_alive_and_after_it_ended():
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", MEASURE, root, CHILD], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    assert m["ready"] and m["returncode"] == 0
    assert m["rss_added"] >= 90              # the child's 96 MiB are in the tree's RSS
    assert m["alive"] >= 0.3                 # its CPU while it runs (as the JVM's)
    assert m["after"] >= m["alive"]          # reaped: counted in the measuring process's children times
