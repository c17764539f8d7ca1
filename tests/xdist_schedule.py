"""How `make test` shares the modules between its two pytest-xdist workers.

`--dist loadfile` keeps a module on one worker (module and session fixtures are set up once) but hands the
modules out in collection order, so a costly module drawn last ran alone on one core for minutes. Here the
modules are handed out costliest first (longest-processing-time first, measured seconds per module in
tests/module_seconds.json), and the Spark modules go to one worker as one unit: a Spark session is per
process, so two workers would start two JVMs.

Refresh the costs after adding slow tests: `make test-costs` (a full run that writes the file)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from xdist.scheduler import LoadFileScheduling

COSTS_FILE = Path(__file__).with_name("module_seconds.json")
SPARK_UNIT = "tests/spec/test_spark_*"
UNKNOWN_TEST_SECONDS = 0.5  # a module not yet measured: its tests counted at this


def unit_of(module: str) -> str:
    return SPARK_UNIT if module.startswith("tests/spec/test_spark_") else module


def load_costs() -> dict[str, float]:
    try:
        return json.loads(COSTS_FILE.read_text())
    except (OSError, ValueError):
        return {}


class CostliestFirstScheduling(LoadFileScheduling):
    def __init__(self, config, log=None):
        super().__init__(config, log)
        self._costs = load_costs()
        self._ordered = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(super()._split_scope(nodeid))

    def _cost(self, unit: str, nodeids: dict) -> float:
        if unit == SPARK_UNIT:
            known = sum(v for k, v in self._costs.items() if unit_of(k) == SPARK_UNIT)
        else:
            known = self._costs.get(unit)
        return known if known is not None and known > 0 else UNKNOWN_TEST_SECONDS * len(nodeids)

    def _assign_work_unit(self, node) -> None:
        if not self._ordered:  # the queue is complete before the first unit is handed out
            units = sorted(self.workqueue.items(), key=lambda kv: -self._cost(*kv))
            self.workqueue.clear()
            self.workqueue.update(units)
            self._ordered = True
        super()._assign_work_unit(node)


class ModuleSeconds:
    """`--module-seconds-out FILE`: seconds per module (setup + call + teardown of its tests), written at the end."""

    def __init__(self, out: Path):
        self.out = out
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report) -> None:
        self.seconds[report.nodeid.split("::", 1)[0]] += report.duration

    def pytest_sessionfinish(self, session) -> None:
        self.out.write_text(json.dumps({k: round(v, 1) for k, v in sorted(self.seconds.items())}, indent=1) + "\n")
