"""Loader guards added after review: built-in names cannot be shadowed; deadlines may be working days."""
from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from engine.calendar import ResponseTime
from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol

HEAD = """\
protocol: guards
version: 1.0.0
title: Guards
status: active
effective: 2026-01-01
owner: test
evidence: [test]
valuesets:
  dm: {codes: ["44054006"]}
"""


def write(tmp_path, body: str):
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + textwrap.dedent(body))
    return p


def test_a_definition_cannot_hide_a_built_in_name(tmp_path):
    p = write(tmp_path, """\
        population: {all: [latest(dm) exists]}
        define:
          age: count(dm)
        """)
    with pytest.raises(ProtocolError) as e:
        load_protocol(p)
    (problem,) = e.value.problems
    assert (problem.location.line, "built-in name") == (12, "built-in name") and "'age'" in problem.message


def test_rule_deadline_in_working_days(tmp_path):
    p = write(tmp_path, """\
        population: {all: [latest(dm) exists]}
        rules:
          - id: r
            when: latest(dm) exists
            then: {task: {title: Refer, role: podiatrist, within: 1 working day, priority: urgent}}
            because: test
        """)
    proto = load_protocol(p)
    within = proto.rules[0].task.within
    assert within == ResponseTime(1, "working days")
    # Christmas Eve 2026 is a Thursday: one working day later skips Christmas and Boxing Day (Mon 28th is the substitute)
    assert within.due_from(dt.datetime(2026, 12, 24, 9)) == dt.datetime(2026, 12, 29, 9)


def test_rule_deadline_typo_is_located(tmp_path):
    p = write(tmp_path, """\
        population: {all: [latest(dm) exists]}
        rules:
          - id: r
            when: latest(dm) exists
            then: {task: {title: Refer, role: podiatrist, within: 1 workday}}
            because: test
        """)
    with pytest.raises(ProtocolError) as e:
        load_protocol(p)
    (problem,) = e.value.problems
    assert problem.location.line == 14 and "task deadline '1 workday'" in problem.message


def test_control_character_is_a_located_problem_not_a_crash(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_bytes(b'protocol: x\nversion: 1.0.0\ntitle: "a\x01b"\n')
    with pytest.raises(ProtocolError) as e:
        load_protocol(p)
    (problem,) = e.value.problems
    assert (problem.location.line, problem.location.column) == (3, 10)
    assert "character YAML does not allow" in problem.message


def test_ir_node_hashes_are_computed_once_and_never_shipped_to_another_process():
    """Nodes are dictionary keys in every evaluation; their recursive dataclass hash was most of an
    episode measure's cost (CMS22: 68 -> 21 ms a patient). The cached hash must not travel in a pickle:
    str hashes differ between processes (population workers unpickle protocols)."""
    import pickle
    from pathlib import Path

    from engine.language.library import load_library

    lib = load_library([Path(__file__).resolve().parents[2] / "protocols"])
    node = next(iter(lib.protocols[0].conditions.values()))
    first = hash(node)
    assert node.__dict__.get("_hash") == first == hash(node)
    back = pickle.loads(pickle.dumps(node))
    assert "_hash" not in back.__dict__ and back == node and hash(back) == first
