"""Declared clusters end to end on the fixture protocol (tests/fixtures/declared-cluster/): missing -> cannot
determine on every engine; supplied by the site -> the same output as a shipped codelist; `carepath test`
expectations (`cannot_determine:`) and unknown keys."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from engine.evaluation.evaluator import Options, evaluate
from engine.app.cases import CaseFileError, load_cases, run_file
from engine.language.loader import load_protocol
from engine.records.model import Fact, Patient, PatientRecord

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "declared-cluster"
AS_OF = dt.date(2026, 6, 1)
# real SNOMED CT concepts (test data for a site file: the real FOOTEXAM_COD content is not in the reference pack)
SITE_CSV = ("code,term,source\n"
            "401191002,Diabetic foot examination,TEST:FOOTEXAM_COD:fixture\n"
            "134388005,Monofilament foot sensation test,TEST:FOOTEXAM_COD:fixture\n")
ENGINES = ("durable", "python", "batch")


@pytest.fixture(autouse=True)
def _no_site_env(monkeypatch):
    monkeypatch.delenv("CAREPATH_SITE_CODELISTS", raising=False)


def patients() -> list[PatientRecord]:
    def f(i, code, date, **kw):
        return Fact(id=f"f{i}", kind=kw.pop("kind", "observation"), codes=[{"system": "snomed", "code": code}], start=date,
                    care_setting="gp", source_system="t", **kw)

    dm = lambda i: f(i, "111552007", "2015-01-01", kind="condition")  # noqa: E731  (DM_COD)
    return [
        PatientRecord(patient=Patient(nhs_number="9434765919", birth_date=dt.date(1960, 1, 1)), facts=[
            dm(1), f(2, "999791000000106", "2026-01-01", value=80, unit="mmol/mol")]),
        PatientRecord(patient=Patient(nhs_number="9434765870", birth_date=dt.date(1950, 1, 1)), facts=[
            dm(1), f(2, "401191002", "2025-11-01"), f(3, "999791000000106", "2024-01-01", value=50, unit="mmol/mol")]),
        PatientRecord(patient=Patient(nhs_number="9434765862", birth_date=dt.date(1970, 1, 1)), facts=[
            f(1, "401191002", "2025-11-01")]),
    ]


def dumps(proto, engine="python"):
    return [evaluate(r, [proto], [], as_of=AS_OF, options=Options(engine=engine)).model_dump(mode="json")
            for r in patients()]


def test_missing_cluster_fixture_loads_with_what_it_blocks():
    proto = load_protocol(FIXTURE / "footcare.yaml")
    c = proto.clusters["foot_exam"]
    assert (c.cluster, c.refset, c.publisher, c.supplied) == ("FOOTEXAM_COD", "999001011000230105", "PCD", None)
    assert c.expected_file.endswith("declared-cluster/valuesets/site/footexam_cod.csv")
    from engine.language.determinacy import blocked_by
    assert blocked_by(proto) == {"FOOTEXAM_COD": ["activity:foot-exam", "goal:feet-examined", "measure:DMFOOT",
                                                  "rule:foot-exam-overdue"]}
    assert "foot_exam" not in proto.valuesets
    assert "activity:foot-exam:recent" in proto.all_conditions and "activity:foot-exam:recent" not in proto.conditions


def test_engines_agree_on_undetermined_elements():
    proto = load_protocol(FIXTURE / "footcare.yaml")
    ref = dumps(proto, "python")
    for engine in ENGINES:
        assert dumps(proto, engine) == ref, engine
    first = ref[0]["protocols"][0]
    assert {i["activity"]: i["status"] for i in first["care_plan"]} == {"hba1c": "met", "foot-exam": "unknown"}


def test_supplied_site_file_gives_the_same_output_as_a_shipped_codelist(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "footexam_cod.csv").write_text(SITE_CSV, encoding="utf-8")
    monkeypatch.setenv("CAREPATH_SITE_CODELISTS", str(site))
    supplied = load_protocol(FIXTURE / "footcare.yaml")
    assert supplied.missing_clusters == [] and supplied.undetermined == {}
    assert supplied.valuesets["foot_exam"].terms  # loaded like any codelist
    monkeypatch.delenv("CAREPATH_SITE_CODELISTS")
    # the same protocol with the same codes as an ordinary shipped codelist
    shipped = tmp_path / "shipped"
    shutil.copytree(FIXTURE / "valuesets", shipped / "valuesets")
    (shipped / "valuesets" / "footexam_shipped.csv").write_text(SITE_CSV, encoding="utf-8")
    text = (FIXTURE / "footcare.yaml").read_text(encoding="utf-8").replace(
        'foot_exam: {cluster: FOOTEXAM_COD, refset: "999001011000230105", publisher: PCD}',
        "foot_exam: {codelist: footexam_shipped.csv}")
    (shipped / "footcare.yaml").write_text(text, encoding="utf-8")
    normal = load_protocol(shipped / "footcare.yaml")
    assert normal.clusters == {}
    for engine in ENGINES:
        got = dumps(supplied, engine)
        assert got == dumps(normal, engine), engine
    plan = {i["activity"]: i["status"] for i in got[1]["protocols"][0]["care_plan"]}
    assert plan == {"hba1c": "overdue", "foot-exam": "met"}
    assert got[0]["protocols"][0]["cannot_determine"] == []


def test_ruleset_names_differ_once_supplied(tmp_path, monkeypatch):
    """durable-rules rulesets are process-global by name: a supplied cluster must not reuse the missing one's."""
    missing = load_protocol(FIXTURE / "footcare.yaml")
    (tmp_path / "footexam_cod.csv").write_text(SITE_CSV, encoding="utf-8")
    monkeypatch.setenv("CAREPATH_SITE_CODELISTS", str(tmp_path))
    supplied = load_protocol(FIXTURE / "footcare.yaml")
    assert missing.content_hash == supplied.content_hash and missing.ruleset_name != supplied.ruleset_name
    durable = [evaluate(r, [p], [], as_of=AS_OF).protocols[0] for p in (missing, supplied) for r in patients()[:1]]
    assert [i.status for i in durable[0].care_plan] == ["met", "unknown"]
    assert [i.status for i in durable[1].care_plan] == ["met", "overdue"]


def test_site_file_without_provenance_is_refused(tmp_path, monkeypatch):
    from engine.language.errors import ProtocolError
    (tmp_path / "footexam_cod.csv").write_text("code,term\n401191002,Diabetic foot examination\n", encoding="utf-8")
    monkeypatch.setenv("CAREPATH_SITE_CODELISTS", str(tmp_path))
    with pytest.raises(ProtocolError, match="no 'source' column"):
        load_protocol(FIXTURE / "footcare.yaml")


def test_fixture_cases_pass_on_every_engine():
    for name in ("footcare.tests.yaml", "register-needs-cluster.tests.yaml"):
        for engine in ENGINES:
            _, outcomes = run_file(FIXTURE / name, engine)
            assert outcomes and all(o.passed for o in outcomes), [o.problems for o in outcomes]


def _case_file(tmp_path: Path, body: str) -> Path:
    shutil.copy(FIXTURE / "footcare.yaml", tmp_path / "footcare.yaml")
    shutil.copytree(FIXTURE / "valuesets", tmp_path / "valuesets")
    path = tmp_path / "x.tests.yaml"
    path.write_text("protocol: footcare.yaml\ndefaults: {as_of: 2026-06-01, patient: {birth_date: 1960-01-01}}\n"
                    "cases:\n" + body, encoding="utf-8")
    return path


def test_wrong_cannot_determine_expectation_fails(tmp_path):
    path = _case_file(tmp_path, """\
  - name: listed too few
    facts: [{code: diabetes, date: 2015-01-01, kind: condition}]
    expect: {cannot_determine: [foot-exam]}
  - name: listed exactly
    facts: [{code: diabetes, date: 2015-01-01, kind: condition}]
    expect: {cannot_determine: [activity:foot-exam, feet-examined, foot-exam-overdue, measure:DMFOOT]}
  - name: an undetermined rule named as not fired
    facts: [{code: diabetes, date: 2015-01-01, kind: condition}]
    expect: {rules_not_fired: [foot-exam-overdue]}
""")
    _, (few, exact, rule) = run_file(path, "python")
    assert few.problems == ["cannot_determine: expected ['foot-exam'], got ['DMFOOT', 'feet-examined', 'foot-exam', "
                            "'foot-exam-overdue']"]
    assert exact.passed
    assert any("cannot be determined" in p for p in rule.problems)


@pytest.mark.parametrize("body, where, key", [
    ("  - name: a\n    facts: []\n    expct: {on_register: true}\n", 6, "expct"),
    ("  - name: a\n    facts: []\n    expect:\n      on_registr: true\n", 7, "on_registr"),
    ("  - name: a\n    facts: [{code: hba1c, date: 2026-01-01, vaule: 50}]\n    expect: {}\n", 5, "vaule"),
    ("  - name: a\n    facts: []\n    expect:\n      care_plan: {hba1c: {stauts: met}}\n", 7, "stauts"),
    ("  - name: a\n    facts: []\n    expect:\n      tasks: [{title: x, priorty: high}]\n", 7, "priorty"),
    ("  - name: a\n    facts: []\n    expect:\n      measures: {DMFOOT: {numerater: true}}\n", 7, "numerater"),
])
def test_unknown_keys_are_refused_with_file_and_line(tmp_path, body, where, key):
    path = _case_file(tmp_path, body)
    with pytest.raises(CaseFileError) as e:
        load_cases(path)
    assert str(e.value).startswith(f"{path}:{where}: unknown key {key!r}")


def test_unknown_top_level_key(tmp_path):
    path = _case_file(tmp_path, "  - name: a\n    facts: []\n    expect: {}\n")
    path.write_text(path.read_text(encoding="utf-8") + "agreement: [x.yaml]\n", encoding="utf-8")
    with pytest.raises(CaseFileError, match=r"x.tests.yaml:7: unknown key 'agreement' in the case file; did you mean 'agreements'"):
        load_cases(path)


def test_population_run_counts_undetermined_results_apart():
    """The DuckDB population run counts measures in SQL: a measure resting on a codelist not supplied counts the
    patients it leaves undecided in cannot_determine only, never as not met (0 %); a determined one has none."""
    from engine.engines.sql.measures import measure_sql
    proto = load_protocol(FIXTURE / "footcare.yaml")
    sql = {m.measure: m.counts for m in measure_sql(proto)}
    assert set(sql) == {"DMHBA1C", "DMFOOT"}
    assert sql["DMHBA1C"]["cannot_determine"] == "0"
    assert sql["DMFOOT"]["cannot_determine"] != "0"
    assert all(v.startswith("(CASE WHEN ") and " THEN 0 ELSE " in v
               for c, v in sql["DMFOOT"].items() if c != "cannot_determine")


def test_docs_list_codelists_not_supplied():
    from engine.app.docs import clinical_words, render
    proto = load_protocol(FIXTURE / "footcare.yaml")
    text = render(proto)
    assert "**Codelists not supplied**" in text
    assert ("foot exam: PCD FOOTEXAM_COD (refset 999001011000230105) — cannot determine activity foot-exam, "
            "goal feet-examined, measure DMFOOT, rule foot-exam-overdue") in text
    assert "rule:foot-exam-overdue" in clinical_words(proto)  # documents show every condition, undetermined or not
