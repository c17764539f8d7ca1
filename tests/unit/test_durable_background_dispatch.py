"""durable-rules trap: the host's timer thread can run a session's pending action on its own thread.

`Host.assert_fact` asserts in C, then runs the pending actions with `do_actions`. In between, the
host's daemon thread (which calls `ruleset.dispatch()` every ~0.2 s) may start that action itself:
the action then runs on the wrong thread, after the caller has read the results. Seen once as
"rule engine did not process the summary fact" in a long equivalence run. Here the race is made
deterministic by calling what the timer thread calls at the moment it would interfere.
"""
from __future__ import annotations

import itertools

from durable.lang import delete_state, get_host, m, ruleset, when_all

from engine.engines.durable import rules as dr
from engine.ir.lowering import Cmp, Lowered

_names = itertools.count()


def test_raw_hazard_background_dispatch_runs_a_pending_action():
    ran = []
    name = f"raw-background-{next(_names)}"
    with ruleset(name):
        @when_all(m.x > 1)
        def fired(c):
            ran.append(c.m.x)
    rs = get_host().get_ruleset(name)
    rs.assert_fact({"sid": "s1", "id": "f", "x": 5})  # the C-level assert: the action is now pending
    assert ran == []
    rs.dispatch()  # what the host's timer thread does every ~0.2 s
    assert ran == [5]  # ... and the action ran there, not in the caller's assert_fact
    delete_state(name, "s1")


def test_our_rulesets_keep_actions_for_the_calling_thread():
    name = f"quiet-background-{next(_names)}@1.0.0#test"
    dr.ensure_ruleset(name, Lowered(conditions={"k": Cmp("f0", ">", 1)}))
    rs = get_host().get_ruleset(name)
    dr._fired.clear()
    handle = rs.assert_fact({"sid": "q1", "id": "summary", "pid": "p", "f0": 5})
    rs.dispatch()  # the timer thread's poll now does nothing for this ruleset
    assert dr._fired == []
    done = []
    rs.do_actions(handle, lambda error, state: done.append(error))
    assert sorted(dr._fired) == ["__matched__", "k"] and done == [None]
    dr._fired.clear()
    delete_state(name, "q1")
    # and the public path still works end to end
    assert dr.run(name, {"f0": 5}, "p") == {"k"}
    assert dr.run(name, {"f0": 0}, "p") == set()
