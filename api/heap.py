"""The service's long-lived objects kept out of the garbage collector's full passes (issue 17, P2).

A running service holds a few hundred thousand objects that live as long as it does: the protocol
library (IR nodes, value sets, lowered conditions), SQLAlchemy's and pydantic's compiled schemas, the
routes. CPython's full (oldest-generation) collection walks every one of them; with a request making
tens of thousands of short-lived objects, one ran every ~100 requests and cost ~150-190 ms, ~2 ms of
CPU per request on average. `gc.freeze()` at the start of the app's lifespan moves what exists then
into the permanent generation, which collections skip; `thaw()` when the last app serving stops gives
them back (a test process starts and stops many apps). Nothing else changes: objects still die by reference counting,
and a later collection still finds cycles made after the freeze. What was already garbage in a cycle
when frozen is kept until `thaw()` (bounded: once per start). When the library is reloaded (a changed
protocol or codelist file), `after_reload` returns the old one to the collector, collects and freezes
again, so reloads do not pile up frozen libraries.
"""
from __future__ import annotations

import gc
import os
import threading

ENV = "CAREPATH_GC_FREEZE"  # 0: never freeze


def _enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


_serving = 0  # apps between freeze_long_lived and thaw (a test process may run several at once)
_lock = threading.Lock()


def freeze_long_lived() -> None:
    global _serving
    with _lock:
        _serving += 1
        if _enabled():
            gc.freeze()


def thaw() -> None:
    """The last app serving stopped: everything frozen goes back to the collector."""
    global _serving
    with _lock:
        _serving = max(0, _serving - 1)
        if not _serving:
            gc.unfreeze()


def after_reload() -> None:
    """A new library replaced a frozen one: let the old one be collected, then freeze again."""
    with _lock:
        if gc.get_freeze_count():
            gc.unfreeze()
            gc.collect()
            gc.freeze()
