"""The pure parts of `carepath bench spark` (benchmarks/bench_spark.py): the projection from the first K chunks to
the whole population, and the process-tree accounting that has to see the JVM (a child of this process)."""
from __future__ import annotations

import subprocess
import sys
import time

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


def test_tree_cpu_and_rss_include_a_child_process_alive_and_after_it_ended():
    own_cpu, own_rss = tree_cpu_seconds(), TreeRss().sample()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert TreeRss().sample() - own_rss >= 90        # the child's 96 MiB are in the tree's RSS
        alive = tree_cpu_seconds() - own_cpu
        assert alive >= 0.3                              # its CPU while it runs (as the JVM's)
    finally:
        child.communicate("\n", timeout=30)
    assert child.returncode == 0
    time.sleep(0.05)
    assert tree_cpu_seconds() - own_cpu >= alive         # reaped: counted in this process's children times
