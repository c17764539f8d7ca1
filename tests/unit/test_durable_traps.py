"""durable-rules 2.0.28 traps (engine/engines/durable/rules.py docstring, docs/design.md): each hazard shown raw,
and our code shown to stay clear of it.

The raw hazards hang, crash or leak, so they only ever run in a child process with a timeout; this
test process never calls durable.lang in an unsafe way.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.engines.durable import rules as dr
from engine.engines.derive import Context
from engine.evaluation.evaluator import Options, evaluate, fired_conditions
from engine.ir.lowering import lowered_for
from engine.ir.lowering import All, AnyOf, Cmp, Lowered
from tests.unit.cached import shipped_library
from engine.language.loader import load_protocol
from engine.records.model import Fact, Patient, PatientRecord
from engine.records.nhs_number import check_digit

ROOT = Path(__file__).resolve().parents[2]
HANG_TIMEOUT = 4.0  # seconds: a safe rule set answers in milliseconds


def child(script: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh interpreter (raises subprocess.TimeoutExpired if it hangs)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def nhs(n: int) -> str:
    k = n
    while True:
        nine = f"{100000000 + k:09d}"
        c = check_digit(nine)
        if c is not None:
            return nine + str(c)
        k += 1


def patient(n: int = 0, *facts: Fact) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=nhs(n), birth_date="1960-01-01"), facts=list(facts))


def obs(code: str, day: str, value=None, unit=None, fid: str = "o1") -> Fact:
    return Fact(id=fid, kind="observation", codes=[{"system": "snomed", "code": code}], start=day, value=value, unit=unit)


TEMPLATE = """\
protocol: {pid}
version: {version}
title: Durable traps
status: draft
effective: 2020-01-01
owner: tests
evidence: [tests]
valuesets:
  a: {{codes: [a1], unit: mmol/L}}
  b: {{codes: [b1]}}
population: '{population}'
rules:
  - id: either
    when: '{when}'
    then: {{task: {{title: Review, role: gp}}, flag: {{code: either, level: amber}}}}
    because: tests
"""


def protocol(tmp_path: Path, when: str, pid: str = "traps", version: str = "1.0.0", name: str = "p.yaml",
             population: str = "age >= 0"):
    path = tmp_path / name
    path.write_text(TEMPLATE.format(pid=pid, version=version, when=when, population=population))
    return load_protocol(path)


def keys(proto, rec, as_of="2025-06-15") -> set[str]:
    import datetime as dt
    return fired_conditions(rec, proto, Context.as_of(dt.date.fromisoformat(as_of), proto.period), "durable")[0]


# ---- a fact that no rule matches raises -> catch-all rule ------------------------------------------------------------------
def test_raw_unmatched_fact_raises_message_not_handled():
    out = child("""
        from durable.lang import ruleset, when_all, m, assert_fact
        with ruleset('raw_unmatched'):
            @when_all(m.x > 5)
            def r(c): pass
        try:
            assert_fact('raw_unmatched', {'x': 1, 'sid': 's1', 'id': 'f1'})
            print('no error')
        except Exception as e:
            print(type(e).__name__)
    """)
    assert out.stdout.strip() == "MessageNotHandledException"


def test_catch_all_lets_a_patient_match_no_condition(tmp_path):
    p = protocol(tmp_path, "latest(a).value > 5 mmol/L", pid="traps-nothing", population="age >= 200")
    assert keys(p, patient(1)) == set()  # no condition held, and no MessageNotHandledException


def test_a_ruleset_whose_only_condition_can_never_hold():
    out = child("""
        from engine.engines.durable import rules as dr
        from engine.ir.lowering import Lowered, FALSE
        dr.ensure_ruleset('only_false', Lowered(conditions={'never': FALSE}))
        print(sorted(dr.run('only_false', {}, 'p1')))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- `|` fires once per true branch -> keys collected into a set ---------------------------------------------------------
def test_raw_or_fires_once_per_true_branch():
    out = child("""
        from durable.lang import ruleset, when_all, m, assert_fact
        fired = []
        with ruleset('raw_or'):
            @when_all((m.a == 1) | (m.b == 1))
            def r(c): fired.append(1)
        assert_fact('raw_or', {'a': 1, 'b': 1, 'sid': 's1', 'id': 'f1'})
        print(len(fired))
    """)
    assert out.stdout.strip() == "2"


class _Recording(list):
    """Stands in for rules._fired and remembers every append, including the duplicates."""

    def __init__(self):
        super().__init__()
        self.raw: list[str] = []

    def append(self, item):
        self.raw.append(item)
        super().append(item)


def test_or_with_both_branches_true_is_reported_once(tmp_path, monkeypatch):
    p = protocol(tmp_path, "latest(a) exists or latest(b) exists")
    rec = patient(3, obs("a1", "2025-01-01", 4, "mmol/L", "o1"), obs("b1", "2025-01-02", fid="o2"))
    recording = _Recording()
    monkeypatch.setattr(dr, "_fired", recording)
    assert keys(p, rec) == {"population", "rule:either"}
    assert recording.raw.count("rule:either") == 2  # durable-rules did fire twice ...
    ev = evaluate(rec, [p], [], as_of=__import__("datetime").date(2025, 6, 15), options=Options(engine="durable"))
    res = ev.protocols[0]
    assert [t.title for t in res.tasks] == ["Review"]  # ... the task is raised once
    assert [f.code for f in res.flags] == ["either"]


# ---- live session states run out -> delete_state after every patient -----------------------------------------------------
def test_raw_sessions_without_delete_state_run_out_of_memory():
    out = child("""
        from durable.lang import ruleset, when_all, m, assert_fact
        with ruleset('raw_leak'):
            @when_all(+m.a)
            def r(c): pass
        n = 0
        try:
            for n in range(3000):
                assert_fact('raw_leak', {'a': 1, 'sid': f's{n}', 'id': 'f'})
            print('ok', n)
        except MemoryError:
            print('MemoryError', n)
    """)
    word, n = out.stdout.split()
    assert word == "MemoryError" and 1000 <= int(n) <= 1100


def test_two_thousand_patients_in_one_process(tmp_path):
    p = protocol(tmp_path, "latest(a).value > 5 mmol/L or exists(b)")
    import datetime as dt
    ctx = Context.as_of(dt.date(2025, 6, 15), p.period)
    high = obs("a1", "2025-01-01", 6, "mmol/L")
    low = obs("a1", "2025-01-01", 4, "mmol/L")
    counts = {True: 0, False: 0}
    for i in range(2000):
        rec = PatientRecord(patient=Patient(nhs_number=nhs(i), birth_date="1960-01-01"), facts=[high if i % 2 else low])
        fired, _ = fired_conditions(rec, p, ctx, "durable")
        counts["rule:either" in fired] += 1
    assert counts == {True: 1000, False: 1000}


# ---- ruleset names are process-global -> protocol@version#contenthash ------------------------------------------------------
def test_raw_reregistering_a_name_silently_replaces_the_rules():
    out = child("""
        from durable.lang import ruleset, when_all, m, assert_fact
        fired = []
        def recorder(version):
            def action(c):
                fired.append(version)
            return action
        for version, value in (('draft-1', 1), ('draft-2', 2)):
            with ruleset('same-name'):
                when_all(m.a == value)(recorder(version))
                @when_all(+m.a)
                def catch(c): pass
        assert_fact('same-name', {'a': 1, 'sid': 's1', 'id': 'f'})
        assert_fact('same-name', {'a': 2, 'sid': 's2', 'id': 'f'})
        print(fired)
    """)
    assert out.stdout.strip() == "['draft-2']"  # draft 1's rule is gone, without any error


def test_two_drafts_of_one_version_evaluate_independently(tmp_path):
    d1 = protocol(tmp_path, "latest(a).value > 5 mmol/L", pid="drafty", version="0.1.0", name="d1.yaml")
    d2 = protocol(tmp_path, "latest(a).value > 7 mmol/L", pid="drafty", version="0.1.0", name="d2.yaml")
    assert d1.key == d2.key == "drafty@0.1.0"
    assert d1.ruleset_name != d2.ruleset_name
    assert d1.ruleset_name.startswith("drafty@0.1.0#") and d1.ruleset_name[len("drafty@0.1.0#"):] == d1.content_hash[:10]
    rec = patient(4, obs("a1", "2025-01-01", 6, "mmol/L"))
    for _ in range(2):  # interleaved, in one process, each keeps its own rules
        assert "rule:either" in keys(d1, rec)
        assert "rule:either" not in keys(d2, rec)


def test_same_content_shares_one_ruleset(tmp_path):
    a = protocol(tmp_path, "exists(b)", pid="shared", name="a.yaml")
    b = protocol(tmp_path, "exists(b)", pid="shared", name="b.yaml")
    assert a.ruleset_name == b.ruleset_name
    assert keys(a, patient(5, obs("b1", "2025-01-01"))) == keys(b, patient(5, obs("b1", "2025-01-01")))


# ---- conditions naming sid / id, and field-absent tests inside `|`, hang -> never generated ------------------------------
def test_raw_condition_on_sid_hangs():
    with pytest.raises(subprocess.TimeoutExpired):
        child("""
            from durable.lang import ruleset, when_all, m, assert_fact
            with ruleset('raw_sid'):
                @when_all(m.sid == 's1')
                def r(c): pass
            assert_fact('raw_sid', {'a': 1, 'sid': 's1', 'id': 'f1'})
            print('returned')
        """, timeout=HANG_TIMEOUT)


def test_raw_field_absent_inside_or_hangs():
    with pytest.raises(subprocess.TimeoutExpired):
        child("""
            from durable.lang import ruleset, when_all, m, assert_fact
            with ruleset('raw_absent'):
                @when_all((-m.x) | (m.a == 2))
                def r(c): pass
                @when_all(+m.a)
                def catch(c): pass
            assert_fact('raw_absent', {'a': 1, 'sid': 's1', 'id': 'f1'})
            print('returned')
        """, timeout=HANG_TIMEOUT)


def shipped_protocols():
    lib = shipped_library()
    assert not lib.errors, [str(e) for e in lib.errors]
    assert any(p.id == "t2dm-annual-care" for p in lib.protocols)
    return lib.protocols


def _cmps(t):
    if isinstance(t, Cmp):
        yield t
    else:
        for i in t.items:
            yield from _cmps(i)


def _keys_and_ops(defn):
    """Every operator and field name in a durable-rules condition definition (its JSON form)."""
    if isinstance(defn, dict):
        for k, v in defn.items():
            yield k
            yield from _keys_and_ops(v)
    elif isinstance(defn, list):
        for v in defn:
            yield from _keys_and_ops(v)


@pytest.mark.parametrize("proto", shipped_protocols(), ids=lambda p: p.key)
def test_shipped_protocols_lower_to_the_safe_subset(proto):
    lowered = lowered_for(proto)
    assert lowered.conditions
    import re
    for key, tree in lowered.conditions.items():
        for c in _cmps(tree):
            assert re.fullmatch(r"f\d+(__p)?", c.field), (key, c.field)
            assert c.field not in ("sid", "id", "pid")
            assert c.op in ("==", "!=", "<", "<=", ">", ">=")
            assert isinstance(c.value, (bool, int, float, str)), (key, c)
            assert not (isinstance(c.value, float) and c.value != c.value)  # never NaN
        definition = dr._expr(tree).define()
        words = set(_keys_and_ops(definition))
        assert "$nex" not in words, key          # no field-absent test (-m.x)
        assert not {"sid", "id"} & words, key    # no condition on the session / fact id
        json.dumps(definition)                    # plain JSON, nothing exotic


@pytest.mark.parametrize("proto", shipped_protocols(), ids=lambda p: p.key)
def test_summary_facts_cross_the_json_boundary_cleanly(proto):
    """Every field is present (missing values made explicit), dates are day numbers, no NaN."""
    from engine.engines.derive import Deriver
    from engine.ir.lowering import summary_fact
    import datetime as dt
    lowered = lowered_for(proto)
    for rec in (patient(6), patient(7, obs("44054006", "2020-01-01"), obs("999791000000106", "2025-01-01", 7.5, "%", "o2"))):
        fact = summary_fact(lowered, Deriver(proto, rec, Context.as_of(dt.date(2025, 6, 15), proto.period)))
        assert set(fact) >= set(lowered.fields)
        assert not {"sid", "id", "pid"} & set(fact)
        for name, value in fact.items():
            assert isinstance(value, (bool, int, float, str)), (name, value)
            assert not (isinstance(value, float) and value != value)
        json.dumps(fact)


# ---- identical facts are rejected as duplicates -> a fresh session per evaluation -----------------------------------------
def test_raw_identical_fact_twice_in_one_session_is_rejected():
    out = child("""
        from durable.lang import ruleset, when_all, m, assert_fact
        with ruleset('raw_dup'):
            @when_all(+m.a)
            def r(c): pass
        assert_fact('raw_dup', {'a': 1, 'sid': 's1'})
        try:
            assert_fact('raw_dup', {'a': 1, 'sid': 's1'})
            print('accepted')
        except Exception as e:
            print(type(e).__name__)
    """)
    assert out.stdout.strip() == "MessageObservedException"


def test_the_same_patient_twice_gives_the_same_answer(tmp_path):
    p = protocol(tmp_path, "latest(a).value > 5 mmol/L")
    rec = patient(8, obs("a1", "2025-01-01", 6, "mmol/L"))
    assert keys(p, rec) == keys(p, rec) == {"population", "rule:either"}


# ---- exceptions inside actions are swallowed -> actions only record, and the catch-all is checked --------------------------
def test_raw_exception_in_an_action_is_swallowed():
    out = child("""
        from durable.lang import ruleset, when_all, m, assert_fact
        with ruleset('raw_swallow'):
            @when_all(m.a == 1)
            def r(c): raise ValueError('boom')
        try:
            assert_fact('raw_swallow', {'a': 1, 'sid': 's1', 'id': 'f'})
            print('swallowed')
        except Exception as e:
            print('raised', type(e).__name__)
    """)
    assert out.stdout.strip() == "swallowed"


def test_a_failed_action_is_detected_not_silently_ignored():
    # if the recording action ever failed, the catch-all key would be missing and run() raises
    out = child("""
        from engine.engines.durable import rules as dr
        from engine.ir.lowering import Lowered, Cmp
        def broken(key):
            def action(c):
                raise RuntimeError('action failed')
            action.__name__ = 'broken_' + ''.join(ch if ch.isalnum() else '_' for ch in key)
            return action
        dr._recorder = broken
        dr.ensure_ruleset('broken_actions', Lowered(conditions={'k': Cmp('f0', '==', True)}))
        try:
            dr.run('broken_actions', {'f0': True}, 'p1')
            print('no error')
        except dr.RuleEngineError as e:
            print('RuleEngineError')
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "RuleEngineError"
