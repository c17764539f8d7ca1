"""The author's tools, through the CLI: validate's checks, draft -> test -> impact -> publish, versions
"as of" a date, and docs. Each test works on a copy of part of the shipped library in tmp_path."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli(*args: str, cwd: Path | None = None):
    import os
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def lib(tmp_path) -> Path:
    """protocols/ with hypertension 1.0.0 (+ cases), the area agreement, value sets and the publication record."""
    root = tmp_path / "protocols"
    root.mkdir()
    shutil.copytree(ROOT / "protocols" / "valuesets", root / "valuesets")
    (root / "agreements").mkdir()
    shutil.copy(ROOT / "protocols" / "agreements" / "pilot-area-roles.yaml", root / "agreements")
    for f in ("hypertension.yaml", "hypertension.tests.yaml"):
        shutil.copy(ROOT / "protocols" / f, root / f)
    from engine.language.checks import record_publication
    record_publication(root, "hypertension@1.0.0", root / "hypertension.yaml", "2026-10-26")
    record_publication(root, "pilot-area-roles@1.0.0", root / "agreements" / "pilot-area-roles.yaml", "2026-10-26")
    return root


def write(root: Path, name: str, text: str) -> Path:
    p = root / name
    p.write_text(text, encoding="utf-8")
    return p


MINI = """\
protocol: mini
version: 1.0.0
title: Mini
status: active
effective: 2026-01-01
owner: tests
evidence: [test]
valuesets:
  dx: {codes: [d1]}
  hba1c: {codes: [h1], unit: mmol/mol}
population:
  all:
    - latest(dx) exists
    - age >= 17
define:
  last_hba1c: latest(hba1c) within 12 months
activities:
  - {id: check, title: Check, every: 12 months, done_by: latest(hba1c), role: practice-nurse}
rules:
{rules}
"""


def mini(root: Path, rules: str, name: str = "mini.yaml") -> Path:
    return write(root, name, MINI.replace("{rules}", rules))


# ---- validate ---------------------------------------------------------------------------------------------------
def test_shipped_library_validates_clean(shipped_library_once):
    """No errors; the only warnings are about where codes come from (issue 13: made-up and unverified codes in
    published versions, which are never edited, and declared clusters not supplied) and the versions re-issued to
    take effect earlier (test_protocol_library.py checks each re-issue is its predecessor's text), none of any
    other kind."""
    r = cli("validate", ROOT / "protocols", "--format", "json")
    assert r.exit_code == 0, r.output
    problems = json.loads(r.output)["problems"]
    assert not [p for p in problems if p["severity"] == "error"]
    other = [p["message"] for p in problems if not re.search(
        r"synthetic code system|from a LOCAL: source|published history|is declared but not supplied|is never in force",
        p["message"])]
    assert other == []


@pytest.mark.parametrize("rule, message", [
    ("when: last_hbac1.value > 58 mmol/mol", "unknown name 'last_hbac1' (expected a value set, a definition or age / sex); did you mean 'last_hba1c'?"),
    ("when: latest(hbaic) exists", "did you mean 'hba1c'?"),
    ("when: last_hba1c.date > 58", "cannot compare a date with a number"),
    ("when: last_hba1c.value > 7.5 %", "no clinically defined conversion from % to mmol/mol"),
    ("when: age < 16", "rule 'r' can never hold for anyone on the register: age >= 17 and age < 16 cannot all hold"),
    ("when: last_hba1c.value > 75 mmol/mol and last_hba1c.value <= 70 mmol/mol", "rule 'r' can never hold:"),
])
def test_validate_errors(lib, rule, message):
    mini(lib, f"  - id: r\n    {rule}\n    then: {{flag: {{code: x, level: red}}}}\n    because: t\n")
    r = cli("validate", lib)
    assert r.exit_code == 1
    assert message in flat(r.output), r.output


def test_validate_warns_about_conflicting_flags_always_firing_rules_and_shadowed_tiers(lib):
    rules = ("  - {id: a, when: last_hba1c.value >= 58 mmol/mol, then: {flag: {code: hba1c, level: amber}}, because: t}\n"
             "  - {id: b, when: last_hba1c.value > 75 mmol/mol, then: {flag: {code: hba1c, level: red}}, because: t}\n"
             "  - {id: c, when: age >= 10, then: {flag: {code: c, level: info}}, because: t}\n"
             "tiers:\n"
             "  - {id: any, level: 2, title: Any, when: age >= 17, because: t}\n"
             "  - {id: old, level: 1, title: Old, when: age >= 80, because: t}\n")
    mini(lib, rules)
    out = flat(cli("validate", lib).output)
    assert "rule a and rule b can fire for the same patient and set flag 'hba1c' to amber and to red" in out
    assert "rule 'c' fires for everyone on the register" in out
    assert "tier 'old' is never chosen: every patient it takes is taken by an earlier tier (any)" in out


def test_validate_finds_work_no_agreement_assigns_and_wildcard_roles(lib):
    mini(lib, "  - {id: r, when: last_hba1c.value > 75 mmol/mol, then: {task: {title: Specialist review, role: diabetes-specialist-nurse}}, because: t}\n")
    ag = lib / "agreements" / "pilot-area-roles.yaml"
    out = flat(cli("validate", lib).output)
    assert "activity 'check' of mini is not assigned by any role agreement" in out
    assert "the task of rule 'r' (Specialist review) of mini is not assigned by any role agreement" in out
    # a wildcard that names another role, and a locality left out
    extra = ("  - {activity: mini/*, where: {locality: [central, north, south, east]}, provider: gp-practices, "
             "role: practice-nurse, respond: {routine: 10 working days}}\n")
    shutil.copy(ag, lib.parent / "ag.bak")
    text = ag.read_text(encoding="utf-8") + extra
    write(lib / "agreements", "pilot-area-roles.yaml", text)
    out = flat(cli("validate", lib).output)
    assert "activity 'check' of mini is not assigned in MDT(s) west-1" in out
    assert ("the task of rule 'r' (Specialist review) of mini asks for a diabetes-specialist-nurse, but only the "
            "wildcard mini/* of pilot-area-roles@1.0.0 assigns it, to a practice-nurse") in out
    assert "pilot-area-roles@1.0.0 was published on 2026-10-26 and its content has changed since" in out


def test_validate_checks_where_against_the_area_and_duplicate_entries(lib):
    ag = lib / "agreements" / "pilot-area-roles.yaml"
    entry = ("  - {activity: hypertension/bp-check, where: {mdt: [nroth-1]}, provider: gp-practices, "
             "respond: {routine: 5 working days}}\n")
    write(lib / "agreements", "pilot-area-roles.yaml", ag.read_text(encoding="utf-8").replace("version: 1.0.0", "version: 1.1.0")
          + entry + entry)
    out = flat(cli("validate", lib).output)
    assert "where mdt 'nroth-1' is not a mdt of the area (expected an MDT listed under localities:); did you mean 'north-1'?" in out
    assert "this assign entry for hypertension/bp-check never applies" in out
    assert "published version pilot-area-roles@1.0.0 is missing" in out


def test_validate_duplicate_ids_and_versions(lib):
    mini(lib, "  - {id: r, when: age > 90, then: {flag: {code: x, level: red}}, because: t}\n"
              "  - {id: r, when: age > 95, then: {flag: {code: y, level: red}}, because: t}\n")
    out = flat(cli("validate", lib).output)
    assert "duplicate rule id 'r'" in out
    mini(lib, "  - {id: r, when: age > 90, then: {flag: {code: x, level: red}}, because: t}\n")
    mini(lib, "  - {id: r, when: age > 91, then: {flag: {code: x, level: red}}, because: t}\n", name="mini-copy.yaml")
    out = flat(cli("validate", lib).output)
    assert "mini version 1.0.0 also in" in out and "with different content" in out


def test_validate_content_changed_without_a_version_bump(lib):
    p = lib / "hypertension.yaml"
    assert cli("validate", lib).exit_code == 0
    p.write_text(p.read_text(encoding="utf-8").replace(">= 140 mmHg", ">= 135 mmHg", 1), encoding="utf-8")
    r = cli("validate", lib)
    assert r.exit_code == 1
    assert ("hypertension@1.0.0 was published on 2026-10-26 and its content has changed since (expected the published "
            "text back, and the change as a new version (carepath draft") in flat(r.output)


# ---- draft -> test -> impact -> publish ------------------------------------------------------------------------------
def test_newcomer_flow_draft_change_test_impact_publish(lib, tmp_path):
    r = cli("draft", lib / "hypertension.yaml")
    assert r.exit_code == 0, r.output
    new = lib / "hypertension@1.1.0.yaml"
    cases = lib / "hypertension@1.1.0.tests.yaml"
    assert new.exists() and cases.exists()
    text = new.read_text(encoding="utf-8")
    assert "version: 1.1.0" in text and "status: draft" in text
    assert "protocol: hypertension@1.1.0" in cases.read_text(encoding="utf-8")
    # a draft is never in force
    from engine.language.library import load_library
    assert [p.key for p in load_library([lib]).in_force(dt.date(2027, 6, 1))] == ["hypertension@1.0.0"]
    # 1.0.0's medicines are made up (synthetic code system): a new version cannot keep them (issue 13), so the
    # newcomer points the draft at the NHS drug refset (rows copied as published, with their provenance)
    r = cli("validate", lib)
    assert r.exit_code == 1 and "value set 'antihypertensive' uses the synthetic code system" in flat(r.output)
    (lib / "valuesets" / "ace_cod_rows.csv").write_text(ACE_COD_ROWS, encoding="utf-8")
    text = re.sub(r"antihypertensive: \{codelist: medicines_synthetic.csv.*\}\n",
                  "antihypertensive: {codelist: ace_cod_rows.csv, system: dmd, kind: medication}\n", text)
    new.write_text(text, encoding="utf-8")
    assert cli("validate", lib).exit_code == 0
    # change one threshold: the cases at the edge fail on the new version only
    new.write_text(text.replace("(last_clinic_sbp.value >= 140 mmHg", "(last_clinic_sbp.value >= 135 mmHg", 1), encoding="utf-8")
    r = cli("test", lib)
    assert r.exit_code == 1
    out = flat(r.output)
    assert "hypertension.tests.yaml (hypertension@1.0.0): 18 passed, 0 failed" in out
    assert "hypertension@1.1.0.tests.yaml (hypertension@1.1.0): 17 passed, 1 failed" in out
    assert "FAIL Under 80, clinic 139/89 on treatment" in out and "expected not to fire, fired" in out and "why:" in out
    # publishing refuses while a case fails, and leaves the draft as it was
    r = cli("publish", new, "--approved-by", "dr.second", "--effective", "2027-01-01")
    assert r.exit_code == 1 and "not published: 1 failing case(s)" in flat(r.output)
    assert "status: draft" in new.read_text(encoding="utf-8")
    # the impact on a small population (the demo bundles)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    _demo_bundles(bundles)
    r = cli("impact", lib / "hypertension.yaml", new, "--population", bundles, "--as-of", "2026-11-20",
            "--protocols", lib, "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert (rep["old"], rep["new"], rep["patients"]) == ("1.0.0", "1.1.0", 3)
    assert rep["tasks_added"] == {"Review blood pressure treatment (step up)": 1}
    assert rep["by_role"] == {"gp": {"added": 1, "removed": 0}}
    assert rep["by_practice"]["E96609"]["tasks_added"] == 1
    assert rep["examples"][0]["nhs_number"] == "9434765919" and "(at least 135 mmHg)" in rep["examples"][0]["why"]
    # update the case to the new threshold, then publish: active, effective date set, recorded
    c = cases.read_text(encoding="utf-8")
    cases.write_text(c.replace("rules_not_fired: [above-target, above-target-untreated]\n      no_tasks: [Review blood pressure treatment (step up)]",
                               "rules_fired: [above-target]", 1), encoding="utf-8")
    # two-person publish: a second person must approve, never the author; with a registry, a clinical lead there
    r = cli("publish", new, "--effective", "2027-01-01", "--today", "2026-12-01", "--author", "dr.first")
    assert r.exit_code == 2 and "needs a second person to approve" in flat(r.output)
    r = cli("publish", new, "--approved-by", "dr.first", "--author", "dr.first", "--effective", "2027-01-01")
    assert r.exit_code == 2 and "dr.first wrote this version and cannot approve it" in flat(r.output)
    from sqlmodel import Session, select

    from engine.app.users import ensure_demo_users
    from engine.registry.access import AccessLogRow
    from engine.registry.db import make_engine, upgrade
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    engine = make_engine(registry)
    upgrade(engine)
    with Session(engine) as s:
        ensure_demo_users(s)
    r = cli("publish", new, "--approved-by", "auditor", "--author", "dr.first", "--database-url", registry)
    assert r.exit_code == 2 and "only a clinical lead may approve" in flat(r.output)
    assert "status: draft" in new.read_text(encoding="utf-8")
    r = cli("publish", new, "--approved-by", "clinical.lead", "--author", "dr.first", "--effective", "2027-01-01",
            "--today", "2026-12-01", "--database-url", registry)
    assert r.exit_code == 0, r.output
    assert "author: dr.first, approved_by: clinical.lead}" in (lib / "published.lock").read_text(encoding="utf-8")
    with Session(engine) as s:
        logged = s.exec(select(AccessLogRow).where(AccessLogRow.resource == "protocol")).one()
    assert logged.username == "clinical.lead" and logged.detail == {
        "published": "hypertension@1.1.0", "file": "hypertension@1.1.0.yaml", "author": "dr.first",
        "approved_by": "clinical.lead", "via": "cli"}
    assert "published hypertension@1.1.0 (effective 2027-01-01)" in flat(r.output)
    assert "hypertension@1.0.0 stays on file: dates before 2027-01-01 are evaluated with it" in flat(r.output)
    text = new.read_text(encoding="utf-8")
    assert "status: active" in text and "effective: 2027-01-01" in text
    assert "hypertension@1.1.0: {file: hypertension@1.1.0.yaml" in (lib / "published.lock").read_text(encoding="utf-8")
    lib_ = load_library([lib])
    assert [p.key for p in lib_.in_force(dt.date(2026, 12, 31))] == ["hypertension@1.0.0"]
    assert [p.key for p in lib_.in_force(dt.date(2027, 1, 1))] == ["hypertension@1.1.0"]
    assert cli("publish", new, "--approved-by", "dr.second").exit_code == 1  # already published
    # and from now on the published text cannot change
    new.write_text(text + "# a comment\n", encoding="utf-8")
    assert "hypertension@1.1.0 was published on 2026-12-01" in flat(cli("validate", lib).output)
    new.write_text(text, encoding="utf-8")
    # a correction published with the same effective date supersedes 1.1.0 from that date (the highest version in
    # force wins): publish says so instead of claiming 1.1.0 is used before it
    assert cli("draft", new).exit_code == 0
    newer = lib / "hypertension@1.2.0.yaml"
    r = cli("publish", newer, "--effective", "2027-01-01", "--today", "2026-12-02", "--approved-by", "dr.second")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert ("hypertension@1.1.0 has the same effective date (2027-01-01): hypertension@1.2.0, the higher version, "
            "is in force from then, so hypertension@1.1.0 never is") in out
    assert "hypertension@1.0.0 stays on file: dates before 2027-01-01 are evaluated with it" in out
    lib_ = load_library([lib])
    assert [p.key for p in lib_.in_force(dt.date(2026, 12, 31))] == ["hypertension@1.0.0"]
    assert [p.key for p in lib_.in_force(dt.date(2027, 1, 1))] == ["hypertension@1.2.0"]


# the first rows of NHS drug refset ACE_COD as published (opensafely/nice_gout@2d906ec38d313e1e492c520f60539073d528f571
# codelists/nhs-drug-refsets-ace_cod.csv, via ../shared/reference/codes/pcd-2026-12/ace_cod.csv)
ACE_COD_ROWS = """code,term,source
102611000001100,Enalapril 2.5mg tablets (Zentiva Pharma UK Ltd) (AMP),NHSDRUG:ACE_COD:04ed58af
10290011000001104,Lisinopril 10mg tablets (Relonchem Ltd) (AMP),NHSDRUG:ACE_COD:04ed58af
10290411000001108,Lisinopril 2.5mg tablets (Relonchem Ltd) (AMP),NHSDRUG:ACE_COD:04ed58af
"""


def _demo_bundles(folder: Path) -> None:
    """Three hypertension patients as FHIR bundles: 139/85 (moves with a 135 threshold), 150/95, 128/76."""
    from engine.records.fhir.export import export_patient_bundle
    from engine.records.model import Fact, Patient, PatientRecord

    def person(nhs, sbp, dbp):
        f = [Fact(id=f"{nhs}-dx", kind="condition", codes=[{"system": "snomed", "code": "38341003"}], start="2015-01-01"),
             Fact(id=f"{nhs}-rx", kind="medication", codes=[{"system": "https://carepath.example/CodeSystem/synthetic",
                                                             "code": "ramipril"}, {"system": "dmd", "code": "102611000001100"}],
                  start="2026-10-01"),
             Fact(id=f"{nhs}-s", kind="observation", codes=[{"system": "snomed", "code": "72313002"}], start="2026-10-01",
                  value=sbp, unit="mm[Hg]"),
             Fact(id=f"{nhs}-d", kind="observation", codes=[{"system": "snomed", "code": "1091811000000102"}],
                  start="2026-10-01", value=dbp, unit="mm[Hg]")]
        return PatientRecord(patient=Patient(nhs_number=nhs, birth_date="1960-01-01", practice="E96609", locality="north",
                                             mdt="north-1"), facts=f)
    for rec in (person("9434765919", 139, 85), person("4010232137", 150, 95), person("9876543210", 128, 76)):
        (folder / f"{rec.patient.nhs_number}.json").write_text(json.dumps(export_patient_bundle(rec)), encoding="utf-8")


def test_impact_from_a_registry_and_for_a_new_pathway(tmp_path, lib, shipped_library_once):
    from engine.synthetic.demo import demo_records
    from engine.registry.db import make_engine, upgrade
    from engine.registry.ingest import ingest_records
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    engine = make_engine(url)
    upgrade(engine)
    ingest_records(engine, demo_records(dt.date(2026, 11, 20)), source="demo")
    r = cli("impact", "none", ROOT / "protocols" / "t2dm-annual-care@1.1.0.yaml", "--population", tmp_path / "reg.db",
            "--as-of", "2026-11-20", "--protocols", ROOT / "protocols", "--format", "json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["old"] is None and rep["patients"] == 6 and rep["entering"] == 6
    r = cli("impact", "t2dm-annual-care@1.0.0", "t2dm-annual-care@1.1.0", "--population", url, "--as-of", "2026-11-20",
            "--protocols", ROOT / "protocols")
    out = flat(r.output)
    assert r.exit_code == 0, r.output
    assert "Impact of t2dm-annual-care@1.1.0 against t2dm-annual-care@1.0.0, as of 2026-11-20: 6 patient(s)" in out
    assert "Cardiovascular risk assessment (QRISK3) overdue" in out and "Refer to diabetes structured education" in out
    assert "Examples (patient, practice: what changed - why)" in out
    # clinical and compliance flags are counted apart, and both shown (issue 12)
    assert re.search(r"clinical flags \+\d+ / -\d+; compliance flags \+\d+ / -\d+", out)
    assert rep["totals"]["compliance_flags_added"] == sum(rep["compliance_flags_added"].values()) > 0
    bad = cli("impact", "none", ROOT / "protocols" / "hypertension.yaml", "--population", tmp_path / "nowhere")
    assert bad.exit_code == 2 and "no such file or folder" in bad.output


# ---- versions "as of" a date ------------------------------------------------------------------------------------------
def test_as_of_a_past_date_uses_the_version_then_in_force_and_outputs_name_it(shipped_library_once):
    from engine.synthetic.demo import demo_records
    from engine.evaluation.evaluator import evaluate
    lib = shipped_library_once
    rec = next(r for r in demo_records(dt.date(2026, 11, 20)) if r.patient.nhs_number == "9990000026")
    before, after = dt.date(2026, 10, 31), dt.date(2026, 11, 20)
    old = evaluate(rec, lib.in_force(before), lib.agreements_in_force(before), as_of=before)
    new = evaluate(rec, lib.in_force(after), lib.agreements_in_force(after), as_of=after)
    t_old = next(p for p in old.protocols if p.protocol == "t2dm-annual-care")
    t_new = next(p for p in new.protocols if p.protocol == "t2dm-annual-care")
    assert (t_old.version, t_new.version) == ("1.0.0", "1.1.0")
    assert {p.protocol for p in old.protocols} == {"t2dm-annual-care", "ecqm-cms122-glycemic-status-poor-control",
                                                    "ecqm-cms165-controlling-high-blood-pressure",
                                                    "ecqm-cms135-hf-ace-arb-arni", "ecqm-cms144-hf-beta-blocker",
                                                    "ecqm-cms2-depression-screening", "ecqm-cms159-depression-remission",
                                                    "ecqm-cms69-bmi-screening", "ecqm-cms22-bp-screening",
                                                    "pilot-outcomes"}  # effective 2026-04-01 (issue 19)
    assert "Refer to diabetes structured education" not in {t.title for t in t_old.tasks}
    assert "Refer to diabetes structured education" in {t.title for t in t_new.tasks}
    for p in new.protocols:
        for item in [*p.tasks, *p.flags, *p.care_plan, *p.measures]:
            assert (item.provenance.protocol, item.provenance.version) == (p.protocol, p.version)
    # the past result is reproduced exactly by evaluating again as of the past date
    again = evaluate(rec, lib.in_force(before), lib.agreements_in_force(before), as_of=before)
    assert again.model_dump() == old.model_dump()


# ---- docs ------------------------------------------------------------------------------------------------------------
def test_docs_renders_a_readable_summary_with_who_does_what_by_locality(tmp_path, shipped_library_once):
    r = cli("docs", ROOT / "protocols", "--out", tmp_path / "docs", "--as-of", "2026-11-20")
    assert r.exit_code == 0, r.output
    index = (tmp_path / "docs" / "index.md").read_text(encoding="utf-8")
    # the latest version is documented: 1.4.1 is published, in force from 2026-12-07 (not yet on 2026-11-20)
    assert "| Type 2 diabetes annual care | 1.4.1 | active |" in index
    t2dm = (tmp_path / "docs" / "t2dm-annual-care@1.4.1.md").read_text(encoding="utf-8")
    for text in ("## Who is on it", "## What is due when, and who does it", "## What triggers action or escalation",
                 "## How it is audited", "**Evidence:** NICE NG28",
                 "### Diabetic eye screening (2-yearly, lowest risk) - only when retinal low risk",
                 "community-podiatry-north-east (routine 20 working days, urgent 2 working days) [pilot-area-roles@1.0.0]: "
                 "east-1, east-2, north-1, north-2",
                 "- escalation: **Active foot problem - discuss at MDT** to the patient's MDT case conference (urgent)",
                 "  - exceptions: "):  # since 1.3.0: QOF personalised care adjustments are denominator exceptions
        assert text in t2dm, text
    risk = (tmp_path / "docs" / "risk-stratification@1.1.1.md").read_text(encoding="utf-8")  # the latest version
    assert "- score: **risk score** = the sum of: + long-term condition count; +2 if number of emergency admissions in the last 12 months ≥ 1; +2 if number of emergency admissions in the last 12 months ≥ 2" in risk
    assert "- tier 3 **Case management (Kaiser level 3)** (the first tier that holds, in this order)" in risk
    assert "| north | north-1 | 12: E96609" in (tmp_path / "docs" / "agreement-pilot-area-roles@1.0.0.md").read_text(encoding="utf-8")
    one = cli("docs", ROOT / "protocols" / "frailty.yaml")
    assert one.exit_code == 0 and one.output.startswith("# Frailty (aged 75 or over)")


def test_validate_warns_when_words_quote_a_threshold_the_condition_no_longer_uses(lib):
    """Issue 16 item 9: after changing 58 -> 53 in a draft, the rule's title, flag text and because still said 58
    and validate warned of nothing."""
    for f in ("t2dm-annual-care.yaml", "t2dm-annual-care@1.1.0.yaml", "t2dm-annual-care@1.1.0.tests.yaml"):
        shutil.copy(ROOT / "protocols" / f, lib / f)
    shutil.copy(ROOT / "protocols" / "agreements" / "central-locality-roles.yaml", lib / "agreements")
    assert "says" not in flat(cli("validate", lib).output)  # the shipped words agree with their conditions
    r = cli("draft", lib / "t2dm-annual-care@1.1.0.yaml")
    assert r.exit_code == 0, r.output
    draft = lib / "t2dm-annual-care@1.2.0.yaml"
    text = draft.read_text(encoding="utf-8")
    assert ">= 58 mmol/mol" in text
    draft.write_text(text.replace(">= 58 mmol/mol", ">= 53 mmol/mol", 1), encoding="utf-8")
    out = flat(cli("validate", lib).output)
    assert "warning: rule 'hba1c-above-individual-target': its title says 58 mmol/mol but its condition uses 53 mmol/mol" in out
    assert "its flag text says 58 mmol/mol" in out
    # the same words fixed: no warning
    fixed = draft.read_text(encoding="utf-8").replace("58 mmol/mol", "53 mmol/mol")
    draft.write_text(fixed, encoding="utf-8")
    assert "its title says" not in flat(cli("validate", lib).output)


def test_draft_of_a_role_agreement_is_the_next_version_and_never_older(lib):
    """`carepath draft` on a role agreement writes the next version beside it, status draft, and refuses a
    version that is not newer than the one on file (the same draft step as for protocols)."""
    src = lib / "agreements" / "pilot-area-roles.yaml"
    r = cli("draft", src)
    assert r.exit_code == 0, r.output
    new = lib / "agreements" / "pilot-area-roles@1.1.0.yaml"
    text = new.read_text(encoding="utf-8")
    assert "version: 1.1.0" in text and "status: draft" in text
    assert not list((lib / "agreements").glob("*.tests.yaml"))
    r = cli("draft", src, "--version", "1.0.0")
    assert r.exit_code == 2 and "is not newer than the latest version on file, 1.1.0" in flat(r.output)
    r = cli("draft", src, "--version", "two")
    assert r.exit_code == 2 and "is not a semantic version" in flat(r.output)
