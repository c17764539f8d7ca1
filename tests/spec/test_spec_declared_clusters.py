"""Declared clusters: a value set with no codes shipped (`{cluster: FOOTEXAM_COD, ...}`). Until a site supplies it,
everything that depends on it cannot be determined — on every engine, never evaluated as false."""
from __future__ import annotations

import pytest
from spec_support import REF, fact, record, run_one as run, undetermined_ids as ids

from engine.evaluation.evaluator import fired_conditions
from engine.engines.derive import Context

DECLARED = {"cluster": "FOOTEXAM_COD", "refset": "999001011000230105", "publisher": "PCD"}


pytestmark = pytest.mark.usefixtures("no_site_codelists")  # a site folder from the environment must not supply them


def test_rule_on_a_missing_cluster_is_undetermined_not_false(spec, engine_name):
    proto = spec(valuesets={"dx": ["d1"], "foot": DECLARED},
                 define={"examined": "latest(foot) within 12 months"},
                 rules={"no_exam": "not examined", "plain": "latest(dx) exists"})
    assert "rule:no_exam" not in proto.conditions  # removed from what engines evaluate
    assert proto.undetermined["rule:no_exam"] == ("FOOTEXAM_COD",)
    assert proto.undetermined["define:examined"] == ("FOOTEXAM_COD",)
    rec = record(fact("d1", "2024-01-01"))
    fired, _ = fired_conditions(rec, proto, Context.as_of(REF, proto.period), engine_name)
    assert "rule:plain" in fired and "rule:no_exam" not in fired
    res = run(proto, rec, engine_name)
    assert [t.title for t in res.tasks] == ["Review plain"]  # no task from the undetermined rule
    assert [f.code for f in res.flags] == ["plain"]
    assert ids(res) == ["no_exam"]
    assert res.cannot_determine[0].why == "Review no_exam: cannot determine — codelist FOOTEXAM_COD not supplied."
    assert res.cannot_determine[0].clusters == ["FOOTEXAM_COD"]


def test_supplied_site_file_makes_it_determined(spec, tmp_path, engine_name):
    site = tmp_path / "valuesets" / "site"
    site.mkdir(parents=True)
    (site / "footexam_cod.csv").write_text("code,term,source\nf1,Foot exam,TEST:FOOTEXAM_COD:1\n", encoding="utf-8")
    proto = spec(valuesets={"dx": ["d1"], "foot": DECLARED},
                 rules={"no_exam": "not latest(foot) within 12 months"})
    assert proto.undetermined == {} and "rule:no_exam" in proto.conditions
    assert proto.clusters["foot"].supplied.endswith("footexam_cod.csv")
    res = run(proto, record(fact("d1", "2024-01-01")), engine_name)
    assert ids(res) == [] and [t.title for t in res.tasks] == ["Review no_exam"]
    res = run(proto, record(fact("d1", "2024-01-01"), fact("f1", "2025-01-01")), engine_name)
    assert res.tasks == []


def test_env_names_the_site_folder(spec, tmp_path, monkeypatch, engine_name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "footexam_cod.csv").write_text("code,term,source\nf1,Foot exam,TEST:FOOTEXAM_COD:1\n", encoding="utf-8")
    monkeypatch.setenv("CAREPATH_SITE_CODELISTS", str(elsewhere))
    proto = spec(valuesets={"foot": DECLARED}, rules={"examined": "latest(foot) exists"})
    assert proto.missing_clusters == []
    assert run(proto, record(fact("f1", "2025-01-01")), engine_name).tasks[0].title == "Review examined"


def test_activity_not_done_and_exception_undetermined_is_unknown_but_done_is_met(spec, engine_name):
    acts = """\
  - id: review
    title: Annual review
    every: 12 months
    done_by: latest(rv)
    excepted_when: latest(foot) exists
    role: nurse
"""
    proto = spec(valuesets={"rv": ["r1"], "foot": DECLARED}, activities=acts)
    done = run(proto, record(fact("r1", "2025-03-01")), engine_name)
    assert done.care_plan[0].status == "met" and ids(done) == []
    not_done = run(proto, record(), engine_name)
    item = not_done.care_plan[0]
    assert item.status == "unknown" and "cannot determine — codelist FOOTEXAM_COD not supplied" in item.provenance.why
    assert not_done.tasks == [] and not_done.flags == []  # never "overdue", no task, no compliance flag
    assert ids(not_done) == ["review"]


def test_activity_when_on_a_missing_cluster(spec, engine_name):
    acts = """\
  - id: podiatry
    title: Podiatry review
    when: latest(foot) exists
    every: 12 months
    done_by: latest(rv)
    role: podiatrist
"""
    proto = spec(valuesets={"rv": ["r1"], "foot": DECLARED}, activities=acts)
    res = run(proto, record(fact("r1", "2025-03-01")), engine_name)
    assert [(i.activity, i.status) for i in res.care_plan] == [("podiatry", "unknown")]


def test_measure_steps_in_order(spec, engine_name):
    measures = """\
  - id: M1
    title: Foot exam measure
    denominator: latest(dx) exists
    numerator: latest(foot) within 12 months
"""
    proto = spec(valuesets={"dx": ["d1"], "foot": DECLARED}, measures=measures)
    out = run(proto, record(), engine_name).measures[0]  # not in the denominator: decided, whatever the numerator
    assert (out.denominator, out.cannot_determine) == (False, [])
    res = run(proto, record(fact("d1", "2024-01-01")), engine_name)
    m = res.measures[0]
    assert m.cannot_determine == ["FOOTEXAM_COD"] and not m.denominator and not m.numerator
    assert ids(res) == ["M1"]


def test_tiers_after_an_undetermined_tier_are_undetermined(spec, engine_name):
    tiers = """\
tiers:
  - {id: top, level: 3, title: Top, when: 'latest(a) exists', because: spec}
  - {id: mid, level: 2, title: Mid, when: 'latest(foot) exists', because: spec}
  - {id: low, level: 1, title: Low, when: 'age >= 0', because: spec}
"""
    proto = spec(valuesets={"a": ["a1"], "foot": DECLARED}, extra=tiers)
    assert "tier:top" in proto.conditions and "tier:low" not in proto.conditions
    assert run(proto, record(fact("a1", "2025-01-01")), engine_name).tier.tier == "top"
    res = run(proto, record(), engine_name)
    assert res.tier is None and ids(res) == ["low", "mid"]


def test_register_needing_a_missing_cluster_is_never_not_on_register(spec, engine_name):
    proto = spec(valuesets={"foot": DECLARED}, population="latest(foot) exists", rules={"r": "age > 0"},
                 measures="  - {id: M, title: M, numerator: 'age > 0'}\n")
    assert proto.conditions == {}
    res = run(proto, record(), engine_name)
    assert res.register_undetermined and not res.on_register
    assert "cannot determine — codelist FOOTEXAM_COD not supplied" in res.register_why
    assert ids(res) == ["population"] and res.tasks == [] and res.measures[0].cannot_determine == ["FOOTEXAM_COD"]


def test_score_on_a_missing_cluster(spec, engine_name):
    proto = spec(valuesets={"a": ["a1"], "foot": DECLARED},
                 define={"risk": {"sum": [{"points": 1, "when": "latest(a) exists"}, {"points": 2, "when": "latest(foot) exists"}]}},
                 extra="score: risk\n")
    res = run(proto, record(fact("a1", "2025-01-01")), engine_name)
    assert res.score.value is None and "cannot determine" in res.score.provenance.why and ids(res) == ["risk"]


def test_where_in_a_missing_value_set(spec, engine_name):
    proto = spec(valuesets={"a": ["a1", "a2"], "foot": DECLARED}, rules={"hit": "latest(a where code in foot) exists",
                                                                         "any": "latest(a) exists"})
    assert proto.undetermined.get("rule:hit") == ("FOOTEXAM_COD",)
    res = run(proto, record(fact("a1", "2025-01-01")), engine_name)
    assert [t.title for t in res.tasks] == ["Review any"] and ids(res) == ["hit"]


def test_definition_labels_in_why_lines(spec, engine_name):
    """Why-lines say a definition's `label:` (words a clinician reads), not its identifier."""
    proto = spec(valuesets={"dx": ["d1"], "ref": ["r1"]},
                 define={"referred": {"label": "renal referral in the last 12 months", "is": "latest(ref) within 12 months"},
                         "needs_review": {"label": "kidney review needed", "all": ["latest(dx) exists", "not referred"]},
                         "plain_name": "latest(ref) within 12 months"},
                 rules={"labelled": "needs_review", "unlabelled": "latest(dx) exists and not plain_name"})
    assert proto.labels == {"referred": "renal referral in the last 12 months", "needs_review": "kidney review needed"}
    res = run(proto, record(fact("d1", "2024-01-01")), engine_name)
    whys = {t.title: t.provenance.why for t in res.tasks}
    assert "kidney review needed: yes" in whys["Review labelled"]
    assert "no renal referral in the last 12 months recorded" in whys["Review labelled"]
    assert "no plain name recorded" in whys["Review unlabelled"]  # no label: the name, as before


def test_label_needs_one_body(tmp_path):
    from engine.language.errors import ProtocolError
    from spec_support import load_spec
    with pytest.raises(ProtocolError, match="with a label, give the definition under exactly one of is:"):
        load_spec(tmp_path, valuesets={"a": ["a1"]}, define={"x": {"label": "words", "when": "latest(a) exists"}},
                  rules={"r": "x"})
