"""The architecture rules of issue 12, read from .importlinter (one source of truth) and checked on the real
import graph (grimp, the library import-linter uses): layers, independent engines, no engine -> adapter
import, no import cycles. Each rule is also shown to fail when the edge it forbids is added to the graph."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / ".importlinter")
PACKAGES = CONFIG["importlinter"]["root_packages"].split()


def _lines(section: str, key: str) -> list[str]:
    return [x.strip() for x in CONFIG[section][key].strip().splitlines() if x.strip()]


LAYERS = [[m.strip() for m in layer.split("|")] for layer in _lines("importlinter:contract:layers", "layers")]
ENGINES = _lines("importlinter:contract:engines-independent", "modules")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def layer_violations(g) -> list[str]:
    out = []
    for i, upper in enumerate(LAYERS):
        for lower in LAYERS[i + 1:]:
            for low in lower:
                for up in upper:
                    if g.chain_exists(importer=low, imported=up, as_packages=True):
                        out.append(f"{low} -> {up}")
    for layer in LAYERS:  # siblings on one layer (`a | b`) are independent
        for a in layer:
            for b in layer:
                if a != b and g.chain_exists(importer=a, imported=b, as_packages=True):
                    out.append(f"{a} -> {b}")
    return out


def engine_violations(g) -> list[str]:
    return [f"{a} -> {b}" for a in ENGINES for b in ENGINES
            if a != b and g.chain_exists(importer=a, imported=b, as_packages=True)]


def adapter_violations(g) -> list[str]:
    return [f"engine -> {x}" for x in ("api", "cli", "benchmarks") if g.chain_exists(importer="engine", imported=x, as_packages=True)]


def cycles(g) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for m in sorted(g.modules):
            if m not in index:
                visit(m)
    finally:
        sys.setrecursionlimit(limit)
    return out


def test_the_code_keeps_every_rule(graph):
    assert layer_violations(graph) == []
    assert engine_violations(graph) == []
    assert adapter_violations(graph) == []
    assert cycles(graph) == []


# The edges issue 12 found on main (dff520e), each added back to a copy of today's graph: each must break a rule.
FORBIDDEN = [
    ("engine.language.loader", "engine.engines.durable.rules", layer_violations),      # language -> an engine
    ("engine.language.checks", "engine.evaluation.evaluator", layer_violations),
    ("engine.engines.duckdb.batch", "engine.evaluation.evaluator", layer_violations),   # an engine -> the outputs layer
    ("engine.engines.duckdb.batch", "engine.engines.durable.rules", engine_violations),  # engines -> each other
    ("engine.engines.durable.pool", "engine.engines.duckdb.columnar", engine_violations),
    ("engine.app.service", "api.deps", adapter_violations),                           # engine -> api
    ("engine.app.registry_load", "benchmarks.bench_batch", adapter_violations),
    ("engine.app.audit", "api.schemas", layer_violations),
    ("engine.ir.lowering", "engine.engines.derive", layer_violations),                 # IR -> an engine
]


@pytest.mark.parametrize("importer,imported,rule", FORBIDDEN, ids=[f"{a}->{b}" for a, b, _ in FORBIDDEN])
def test_each_forbidden_edge_breaks_a_rule(graph, importer, imported, rule):
    g = graph.copy() if hasattr(graph, "copy") else grimp.build_graph(*PACKAGES, cache_dir=None)
    g.add_import(importer=importer, imported=imported)
    assert rule(g), f"adding {importer} -> {imported} broke no rule"


@pytest.mark.parametrize("a,b", [("api.routers.audit", "api.app"), ("engine.language.checks", "engine.language.library")])
def test_a_cycle_is_found(graph, a, b):
    g = graph.copy() if hasattr(graph, "copy") else grimp.build_graph(*PACKAGES, cache_dir=None)
    g.add_import(importer=a, imported=b)
    g.add_import(importer=b, imported=a)
    assert any(a in c and b in c for c in cycles(g))


def test_import_linter_agrees():
    """The same contracts through the import-linter tool itself (what `lint-imports` runs)."""
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout
