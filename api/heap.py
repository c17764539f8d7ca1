"""The service's long-lived objects kept out of the garbage collector's full passes, and its young
generation collected less often (issue 17, P2).

A running service holds a few hundred thousand objects that live as long as it does: the protocol
library (IR nodes, value sets, lowered conditions), SQLAlchemy's and pydantic's compiled schemas, the
routes. CPython's full (oldest-generation) collection walks every one of them; with a request making
tens of thousands of short-lived objects, one ran every ~100 requests and cost ~150-190 ms, ~2 ms of
CPU per request on average. `gc.freeze()` at the start of the app's lifespan moves what exists then
into the permanent generation, which collections skip; `thaw()` when the last app serving stops gives
them back (a test process starts and stops many apps). Nothing else changes: objects still die by reference counting,
and a later collection still finds cycles made after the freeze. What was already garbage in a cycle
when frozen is kept until `thaw()` (bounded: once per start). A library reloaded later (a changed protocol
or codelist file) is not frozen: the old one is freed by reference counting as before (a Library is in no
reference cycle), the new one lives in the ordinary generations (freezing again would also freeze whatever
cyclic garbage is waiting then, and collecting first costs ~0.3 s a reload).
"""
from __future__ import annotations

import gc
import os
import threading

ENV = "CAREPATH_GC_FREEZE"  # 0: never freeze


def _enabled() -> bool:
    return os.environ.get(ENV, "1").strip() != "0"


# The youngest generation is collected after this many new container objects, not CPython's 700: a request
# makes tens of thousands, most freed by reference counting within the request; collecting every 700 made
# ~4 young and ~0.4 middle collections a request and moved request objects into the older generations,
# whose collections then ran every ~25 requests (~1 ms a request in all at 2,000 people on SQLite).
YOUNG_THRESHOLD = 5000
_serving = 0  # apps between freeze_long_lived and thaw (a test process may run several at once)
_saved_threshold: tuple | None = None
_lock = threading.Lock()


def freeze_long_lived() -> None:
    """The first app to start serving freezes what exists; one starting while another serves changes nothing
    (freezing again would also freeze the garbage cycles of apps that stopped since: a test process would keep
    them all)."""
    global _serving, _saved_threshold
    with _lock:
        _serving += 1
        if _serving == 1 and _enabled():
            gc.freeze()
            if _saved_threshold is None:
                _saved_threshold = gc.get_threshold()
                t0, t1, t2 = _saved_threshold
                gc.set_threshold(max(t0, YOUNG_THRESHOLD), t1, t2)


def thaw() -> None:
    """The last app serving stopped: everything frozen goes back to the collector, its thresholds as they were."""
    global _serving, _saved_threshold
    with _lock:
        _serving = max(0, _serving - 1)
        if not _serving:
            gc.unfreeze()
            if _saved_threshold is not None:
                gc.set_threshold(*_saved_threshold)
                _saved_threshold = None
