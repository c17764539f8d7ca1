"""durable-rules: one ruleset per protocol version, one fresh session per patient evaluation.

Each condition of a protocol (see lowering.py) becomes one durable-rules rule whose action only
records the condition's key. Per patient we assert one summary fact in a fresh session, read which
keys fired, and delete the session state. Traps of durable-rules 2.0.28 this module stays clear of
(each has a regression test in tests/unit/test_durable_traps.py):

- cross-fact joins segfault -> only one fact per session, conditions compare it with constants;
- `none()` and `post()` give wrong answers -> not used;
- a fact no rule matches raises -> a catch-all rule on the `pid` field;
- conditions that name `sid` / `id`, and `-m.field` inside `|`, hang -> never generated;
- `|` fires once per alternative -> keys are collected into a set;
- live session states cost ~1.1 MB and run out past ~1,024 -> delete_state after every patient;
- ruleset names are process-global -> `protocol@version#contenthash`, registered once;
- actions' exceptions are swallowed -> actions only append to a list;
- it never releases the GIL -> parallel work uses processes (engine/engines/durable/pool.py);
- the host's timer thread may start a session's pending action itself, between the C-level assert
  and `do_actions` -> our rulesets' background dispatch is switched off (actions run in assert_fact).
"""
from __future__ import annotations

import itertools
import operator
import threading
from functools import reduce

from durable.lang import assert_fact, delete_state, get_host, m, ruleset, when_all

from engine.ir.lowering import All, AnyOf, Cmp, Lowered


class _SafeJson:
    """durable-rules 2.0.28's JSON reader rejects a number written with an exponent and no decimal point
    (Python writes 1e-05, 1e+300): "Could not assert fact, error code: 204" (found by the generative test,
    tests/spec/test_generative_language.py: exp / ln / power give such values). The engine serialises the
    fact itself with json.dumps, so its json module is replaced by this one, which writes such numbers
    with a decimal point (1.0e-05: the same double) and leaves everything else as json does."""

    import json as _json

    loads = staticmethod(_json.loads)

    _SCALARS = (str, int, bool, type(None))

    @classmethod
    def dumps(cls, obj, **kw):
        if isinstance(obj, dict):
            if cls._plain(obj, kw):  # what the loop below writes, in one call (a summary fact: ~100 fields)
                return cls._json.dumps(obj, **kw)
            return "{" + ", ".join(f"{cls._json.dumps(str(k), **kw)}: {cls._value(v, kw)}" for k, v in obj.items()) + "}"
        return cls._json.dumps(obj, **kw)

    @classmethod
    def _plain(cls, obj: dict, kw) -> bool:
        """json.dumps(obj) writes exactly what `dumps` would: string keys, scalar values, no float in exponent
        form, default separators."""
        if not kw.keys() <= {"ensure_ascii"}:
            return False
        for k, v in obj.items():
            if type(k) is not str:
                return False
            t = type(v)
            if t is float:
                if "e" in repr(v):
                    return False
            elif t not in cls._SCALARS:
                return False
        return True

    @classmethod
    def _value(cls, v, kw) -> str:
        if isinstance(v, float) and not isinstance(v, bool):
            text = repr(v)
            if "e" in text and "." not in text.split("e")[0]:
                mantissa, exp = text.split("e")
                return f"{mantissa}.0e{exp}"
            return cls._json.dumps(v)
        if isinstance(v, dict):
            return cls.dumps(v, **kw)
        return cls._json.dumps(v, **kw)


import durable.engine as _durable_engine  # noqa: E402

_durable_engine.json = _SafeJson

_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_lock = threading.Lock()  # the durable-rules host is process-global and not thread-safe
_registered: dict[str, list[str]] = {}
_fired: list[str] = []
_session = itertools.count()
CATCH_ALL = "__matched__"


class RuleEngineError(RuntimeError):
    pass


def _expr(t):
    if isinstance(t, Cmp):
        return _OPS[t.op](getattr(m, t.field), t.value)
    if isinstance(t, All):
        if not t.items:
            return +m.pid
        return reduce(operator.and_, (_expr(i) for i in t.items)) if len(t.items) > 1 else _expr(t.items[0])
    if isinstance(t, AnyOf):
        if not t.items:
            return m.pid == "\x00never"
        return reduce(operator.or_, (_expr(i) for i in t.items)) if len(t.items) > 1 else _expr(t.items[0])
    raise TypeError(t)


def _recorder(key: str):
    def action(c):
        _fired.append(key)
    action.__name__ = "r_" + "".join(ch if ch.isalnum() else "_" for ch in key)
    return action


def ensure_ruleset(name: str, lowered: Lowered) -> None:
    """Register the ruleset once per process (names cannot be unregistered)."""
    with _lock:
        if name in _registered:
            return
        with ruleset(name):
            for key, tree in lowered.conditions.items():
                when_all(_expr(tree))(_recorder(key))
            when_all(+m.pid)(_recorder(CATCH_ALL))
        _quiet_background_dispatch(name)
        _registered[name] = list(lowered.conditions)


def _quiet_background_dispatch(name: str) -> None:
    """Stop the host's timer thread from running this ruleset's actions.

    durable-rules' host polls every ruleset on a daemon thread (`dispatch()` every ~0.2 s). If it
    polls between the C-level assert and `do_actions` in `assert_fact`, it starts the pending
    action itself, on its own thread: the key is recorded after (or without) our read. Our rules
    have no timers and nothing queued across calls, so all their actions belong inside
    `assert_fact`, on the calling thread, under our lock.
    """
    rs = get_host().get_ruleset(name)
    rs.dispatch = lambda: None
    rs.dispatch_timers = lambda: None


def run(name: str, fact: dict, pid: str) -> set[str]:
    """Assert one summary fact in a fresh session; return the keys of the conditions that held."""
    with _lock:
        sid = f"s{next(_session)}"
        _fired.clear()
        try:
            assert_fact(name, {**fact, "sid": sid, "id": "summary", "pid": pid})
            fired = set(_fired)
        except BaseException:
            try:  # a fact it could not take (e.g. not JSON-serialisable) leaves no state: deleting raises 309
                delete_state(name, sid)
            except Exception:
                pass
            raise  # the cause, not the failed clean-up
        else:
            delete_state(name, sid)
        finally:
            _fired.clear()
    if CATCH_ALL not in fired:
        raise RuleEngineError(f"rule engine did not process the summary fact for {pid} in {name}")
    fired.discard(CATCH_ALL)
    return fired
