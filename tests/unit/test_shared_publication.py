"""Shared definitions files are published like protocols (published.lock), and a published protocol only
uses published shared definitions: `carepath publish` / `carepath validate` through the CLI, on a small
library in tmp_path (engine/language/shared.py)."""
from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()

SHARED = """\
shared: idx
version: 1.0.0
title: A small index
owner: tests
evidence: [tests]
valuesets:
  marker: {codes: ["1912002"]}
define:
  marked: latest(marker) exists
"""

PROTOCOL = """\
protocol: mini
version: 1.0.0
title: Mini
status: draft
effective: 2027-04-01
owner: tests
evidence: [tests]
uses: [idx@1.0.0]
valuesets:
  other: {codes: ["161898004"]}
population: age >= 0
rules:
  - id: marked
    when: idx.marked
    then: {flag: {code: marked, level: info}}
    because: tests
"""

CASES = """\
protocol: mini@1.0.0
defaults: {as_of: 2027-05-01, patient: {birth_date: 1950-01-01}}
cases:
  - name: marked
    facts: [{code: idx.marker, date: 2027-01-01}]
    expect: {rules_fired: [marked], flags: {marked: info}}
  - name: not marked
    expect: {rules_not_fired: [marked], flags: {}}
"""


def cli(*args) -> tuple[int, str]:
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, re.sub(r"\s+", " ", r.output)


def library(tmp_path: Path) -> Path:
    root = tmp_path / "protocols"
    (root / "shared").mkdir(parents=True)
    (root / "shared" / "idx@1.0.0.yaml").write_text(SHARED, encoding="utf-8")
    (root / "mini.yaml").write_text(PROTOCOL, encoding="utf-8")
    (root / "mini.tests.yaml").write_text(CASES, encoding="utf-8")
    (root / "published.lock").write_text("# published\n", encoding="utf-8")
    return root


def test_publish_the_shared_file_first_then_the_protocol(tmp_path):
    root = library(tmp_path)
    code, out = cli("validate", root)
    assert code == 0, out
    assert "1 protocol(s)" in out
    # the protocol cannot be published while the definitions it pins can still change
    code, out = cli("publish", root / "mini.yaml", "--approved-by", "dr.second", "--today", "2027-03-01")
    assert code == 1 and "not published: mini@1.0.0 uses idx@1.0.0, which is not published" in out, out
    assert "status: draft" in (root / "mini.yaml").read_text(encoding="utf-8")
    code, out = cli("publish", root / "shared" / "idx@1.0.0.yaml", "--approved-by", "dr.second", "--today", "2027-03-01")
    assert code == 0 and "published shared/idx@1.0.0" in out and "uses: [idx@1.0.0]" in out, out
    lock = (root / "published.lock").read_text(encoding="utf-8")
    assert "shared/idx@1.0.0: {file: shared/idx@1.0.0.yaml, sha256:" in lock
    assert cli("publish", root / "shared" / "idx@1.0.0.yaml", "--approved-by", "dr.second")[0] == 1  # already published
    code, out = cli("publish", root / "mini.yaml", "--approved-by", "dr.second", "--today", "2027-03-01")
    assert code == 0 and "published mini@1.0.0 (effective 2027-04-01)" in out, out
    assert cli("validate", root)[0] == 0


def test_a_published_shared_file_never_changes(tmp_path):
    root = library(tmp_path)
    assert cli("publish", root / "shared" / "idx@1.0.0.yaml", "--approved-by", "dr.second", "--today", "2027-03-01")[0] == 0
    path = root / "shared" / "idx@1.0.0.yaml"
    path.write_text(SHARED.replace('"1912002"', '"1912002", "161898004"'), encoding="utf-8")
    code, out = cli("validate", root)
    assert code == 1 and "shared/idx@1.0.0 was published on 2027-03-01 and its content has changed since" in out, out
    path.unlink()
    code, out = cli("validate", root)
    assert code == 1 and "published version shared/idx@1.0.0 is missing" in out, out


def test_validate_reports_a_published_protocol_using_unpublished_definitions(tmp_path):
    root = library(tmp_path)
    from engine.language.checks import record_publication
    (root / "mini.yaml").write_text(PROTOCOL.replace("status: draft", "status: active"), encoding="utf-8")
    record_publication(root, "mini@1.0.0", root / "mini.yaml", "2027-03-01")  # as if published by hand
    code, out = cli("validate", root)
    assert code == 1 and "mini@1.0.0 is published but uses idx@1.0.0, which is not" in out, out
    assert re.search(r"mini\.yaml:8:\d+: error", out), out  # at the `uses:` line


def test_a_shared_file_with_errors_is_reported_once(tmp_path):
    root = library(tmp_path)
    (root / "shared" / "idx@1.0.0.yaml").write_text(SHARED.replace("latest(marker)", "latest(markr)"), encoding="utf-8")
    code, out = cli("validate", root)
    assert code == 1
    assert out.count("unknown name 'markr'") == 1, out
    assert "uses: idx@1.0.0 has errors" in out
