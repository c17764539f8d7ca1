"""`carepath validate` on where codes come from (issue 13 item 2): a warning per declared cluster not supplied,
naming what it blocks; the synthetic code system refused in a protocol not marked demo_only (published history
excepted: warned, never failing); LOCAL (unverified) rows warned."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.language.checks import record_publication

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "declared-cluster"
runner = CliRunner()
SYN = "https://carepath.example/CodeSystem/synthetic"


pytestmark = pytest.mark.usefixtures("no_site_codelists")  # a site folder from the environment must not supply them


def validate(path: Path):
    r = runner.invoke(app, ["validate", str(path), "--format", "json"])
    return r.exit_code, json.loads(r.output)["problems"]


def protocol(version: str, valuesets: str, status: str = "active", extra: str = "", effective: str = "2026-01-01") -> str:
    return f"""protocol: codes-check
version: {version}
title: Codes check
status: {status}
effective: {effective}
owner: tests
evidence: ["NICE NG28"]
{extra}valuesets:
  diabetes: {{codelist: dm_cod.csv}}
{valuesets}
population: latest(diabetes) exists
rules:
  - id: r
    when: latest(thing) exists
    then: {{flag: {{code: R, level: info}}}}
    because: "NICE NG28"
"""


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "protocols"
    (r / "valuesets").mkdir(parents=True)
    shutil.copy(ROOT / "protocols" / "valuesets" / "dm_cod.csv", r / "valuesets")
    (r / "valuesets" / "made_up.csv").write_text("code,term,source\nx1,Made up,SYNTHETIC:carepath\n", encoding="utf-8")
    (r / "valuesets" / "hand.csv").write_text("code,term,source\n401191002,Diabetic foot examination,LOCAL:unverified\n"
                                              "134388005,Monofilament foot sensation test,PCD:FOOTEXAM_COD:x\n", encoding="utf-8")
    return r


SYNTHETIC_VS = f'  thing: {{codelist: made_up.csv, system: "{SYN}"}}'


def test_missing_cluster_is_a_warning_naming_what_it_blocks():
    code, problems = validate(FIXTURE)
    assert code == 0
    msgs = [p for p in problems if "declared but not supplied" in p["message"]]
    foot = next(p for p in msgs if "FOOTEXAM_COD" in p["message"])
    assert foot["severity"] == "warning" and foot["line"] == 17 and foot["file"].endswith("footcare.yaml")
    assert ("cannot determine activity 'foot-exam', goal 'feet-examined', measure 'DMFOOT', rule 'foot-exam-overdue'"
            in foot["message"])
    assert "carepath codelists import" in foot["expected"] and "--cluster FOOTEXAM_COD" in foot["expected"]
    frc = next(p for p in msgs if "FRC_COD" in p["message"])
    assert "the register itself" in frc["message"]


def test_supplied_cluster_is_not_warned(tmp_path, monkeypatch):
    (tmp_path / "footexam_cod.csv").write_text("code,term,source\n401191002,Diabetic foot examination,TEST:FOOTEXAM_COD:1\n",
                                               encoding="utf-8")
    monkeypatch.setenv("CAREPATH_SITE_CODELISTS", str(tmp_path))
    _, problems = validate(FIXTURE / "footcare.yaml")
    assert not [p for p in problems if "declared but not supplied" in p["message"]]


def test_synthetic_codes_in_a_protocol_not_marked_demo_only_is_an_error(root):
    (root / "p.yaml").write_text(protocol("1.0.0", SYNTHETIC_VS, status="draft"), encoding="utf-8")
    code, problems = validate(root)
    errors = [p for p in problems if p["severity"] == "error"]
    assert code == 1 and len(errors) == 1 and "value set 'thing' uses the synthetic code system" in errors[0]["message"]
    assert errors[0]["line"] == 10
    (root / "p.yaml").write_text(protocol("1.0.0", SYNTHETIC_VS, status="draft", extra="demo_only: true\n"), encoding="utf-8")
    code, problems = validate(root)
    assert code == 0 and not [p for p in problems if "synthetic" in p["message"]]


def test_publish_refuses_made_up_codes(root):
    """`carepath publish` makes the draft active before checking the library, where an active version's made-up
    codes are only a warning (published history): publish itself applies the draft's check to the version it
    publishes (the API's publish too: tests/api/test_api_protocols.py)."""
    (root / "p.yaml").write_text(protocol("1.0.0", SYNTHETIC_VS, status="draft"), encoding="utf-8")
    (root / "p.tests.yaml").write_text("protocol: p.yaml\ndefaults: {as_of: 2026-11-20, patient: {birth_date: 1960-05-01}}\n"
                                       "cases:\n  - name: no diabetes\n    facts: []\n    expect: {on_register: false}\n",
                                       encoding="utf-8")
    r = runner.invoke(app, ["publish", str(root / "p.yaml"), "--effective", "2026-01-01", "--approved-by", "dr.second"])
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "not published: codes-check@1.0.0 uses made-up codes" in out
    assert "value set 'thing' uses the synthetic code system (1 of 1 codes are made up)" in out
    assert "status: draft" in (root / "p.yaml").read_text(encoding="utf-8") and not (root / "published.lock").exists()
    (root / "p.yaml").write_text(protocol("1.0.0", SYNTHETIC_VS, status="draft", extra="demo_only: true\n"), encoding="utf-8")
    r = runner.invoke(app, ["publish", str(root / "p.yaml"), "--effective", "2026-01-01", "--approved-by", "dr.second"])
    assert r.exit_code == 0, r.output


def test_demo_only_must_be_yes_or_no(root):
    (root / "p.yaml").write_text(protocol("1.0.0", SYNTHETIC_VS, extra="demo_only: perhaps\n"), encoding="utf-8")
    code, problems = validate(root)
    assert code == 1 and any("demo_only should be true or false" in p["message"] for p in problems)


def test_local_rows_are_a_warning(root):
    (root / "p.yaml").write_text(protocol("1.0.0", "  thing: {codelist: hand.csv}"), encoding="utf-8")
    code, problems = validate(root)
    assert code == 0
    [w] = [p for p in problems if "LOCAL" in p["message"]]
    assert w["severity"] == "warning" and "value set 'thing' has 1 of 2 codes from a LOCAL: source" in w["message"]


def test_published_history_keeps_synthetic_codes_without_failing(root):
    old = root / "p.yaml"
    old.write_text(protocol("1.0.0", SYNTHETIC_VS), encoding="utf-8")
    record_publication(root, "codes-check@1.0.0", old, "2026-01-01")
    code, problems = validate(root)  # the version in force: warned, with the fix (a new version)
    assert code == 0
    [w] = [p for p in problems if "synthetic" in p["message"]]
    assert w["severity"] == "warning" and "published version in force" in w["message"] and "carepath draft" in w["expected"]
    new = root / "p@1.1.0.yaml"
    new.write_text(protocol("1.1.0", "  thing: {codelist: hand.csv}", effective="2027-04-01"), encoding="utf-8")
    code, problems = validate(root)  # superseded (even by a version taking effect later): one history warning
    assert code == 0
    history = [p for p in problems if "published history" in p["message"]]
    assert len(history) == 1 and "superseded by codes-check@1.1.0 from 2027-04-01" in history[0]["message"]
    assert "superseded versions may keep them" in history[0]["message"]
    assert not [p for p in problems if "published version in force" in p["message"]]
    # an unpublished draft with made-up codes is still refused
    new.write_text(protocol("1.1.0", SYNTHETIC_VS, status="draft", effective="2027-04-01"), encoding="utf-8")
    code, problems = validate(root)
    assert code == 1


def test_a_version_never_in_force_gets_one_warning_for_its_missing_clusters(root):
    """A version re-issued earlier as a patch (1.1.1 from 2026-12-07 before 1.1.0's 2027-04-01) pre-empts 1.1.0 on
    every date: 1.1.0's missing clusters are named in one line, the version in force keeps a warning per cluster."""
    declared = '  thing: {cluster: FOOTEXAM_COD, refset: "999001011000230105", publisher: PCD}'
    (root / "p@1.1.0.yaml").write_text(protocol("1.1.0", declared, effective="2027-04-01"), encoding="utf-8")
    code, problems = validate(root)
    assert code == 0 and len([p for p in problems if "declared but not supplied" in p["message"]]) == 1
    (root / "p@1.1.1.yaml").write_text(protocol("1.1.1", declared, effective="2026-12-07"), encoding="utf-8")
    code, problems = validate(root)
    assert code == 0
    [per_cluster] = [p for p in problems if "declared but not supplied" in p["message"]]
    assert per_cluster["message"].startswith("codes-check@1.1.1: codelist FOOTEXAM_COD")
    [never] = [p for p in problems if "is never in force (" in p["message"]]
    assert never["file"].endswith("p@1.1.0.yaml") and never["severity"] == "warning"
    assert ("codes-check@1.1.0 is never in force (codes-check@1.1.1 from 2026-12-07): its 1 declared codelist not "
            "supplied (FOOTEXAM_COD) is not listed one by one") == never["message"]
    [order] = [p for p in problems if "takes effect" in p["message"]]
    assert order["file"].endswith("p@1.1.1.yaml") and "so codes-check@1.1.0 is never in force" in order["message"]
