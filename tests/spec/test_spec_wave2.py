"""Language wave 2, on every engine: denominator exceptions, episode-based measures, index events and
windows relative to an event, body site / laterality, open-ended intervals, "has a result", scalar
functions, birth / death dates, measures counted after death. Each construct's meaning is one or more
tests here (documented in docs/protocol-language.md)."""
from __future__ import annotations

import pytest
from spec_support import fact, holds, protocol_text, record, run, write_protocol

from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol

SNOMED = "http://snomed.info/sct"
VS = {"x": ["x1"], "y": ["y1"], "visit": {"codes": ["v1"], "kind": "encounter"},
      "bp": {"codes": ["b1"], "unit": "mm[Hg]"}, "lab": {"codes": ["l1"], "unit": "mmol/L"},
      "right": {"codes": ["24028007"]}, "left": {"codes": ["7771000"]}, "mastectomy": ["248802009"],
      "reasons": {"codes": ["r1"]}}


def _site(code: str) -> list[dict]:
    return [{"system": SNOMED, "code": code}]


# ---- body site / laterality -------------------------------------------------------------------------
def test_body_site_filters_left_and_right(spec, engine_name):
    p = spec(valuesets=VS, rules={
        "bilateral": "mastectomy where body_site in right exists and mastectomy where body_site in left exists",
        "right_only": "mastectomy where body_site in right exists and not (mastectomy where body_site in left exists)",
        "any_site": "mastectomy where body_site exists",
        "no_site": "mastectomy where body_site is missing"})
    both = record(fact("248802009", "2024-01-01", kind="condition", body_site=_site("24028007")),
                  fact("248802009", "2024-06-01", kind="condition", body_site=_site("7771000")))
    assert holds(p, both, "2025-06-15", engine_name) == {"bilateral", "any_site"}
    right = record(fact("248802009", "2024-01-01", kind="procedure", body_site=_site("24028007")))
    assert holds(p, right, "2025-06-15", engine_name) == {"right_only", "any_site"}
    unsited = record(fact("248802009", "2024-01-01", kind="condition"))
    assert holds(p, unsited, "2025-06-15", engine_name) == {"no_site"}


def test_importer_keeps_body_site_of_conditions_and_procedures():
    from engine.records.fhir.bundle import import_bundle
    site = {"coding": [{"system": SNOMED, "code": "24028007"}]}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p", "birthDate": "1960-01-01"}},
        {"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Condition", "id": "c", "subject": {"reference": "urn:uuid:p"},
                                               "code": {"coding": [{"system": SNOMED, "code": "248802009"}]},
                                               "bodySite": [site], "onsetDateTime": "2024-01-01"}},
        {"fullUrl": "urn:uuid:pr", "resource": {"resourceType": "Procedure", "id": "pr", "status": "completed",
                                                "subject": {"reference": "urn:uuid:p"}, "bodySite": [site],
                                                "code": {"coding": [{"system": SNOMED, "code": "172043006"}]},
                                                "performedDateTime": "2024-01-01"}}]}
    facts = import_bundle(bundle).records[0].facts
    assert [f.attrs.get("body_site") for f in facts] == [[{"system": SNOMED, "code": "24028007"}]] * 2


# ---- open-ended intervals ----------------------------------------------------------------------------
@pytest.mark.parametrize("when,expect", [
    ("1950-01-01", {"until", "ends_by", "starts_by"}),
    ("2025-06-15", {"until", "ends_by", "starts_by", "from"}),
    ("2025-06-16", {"from"}),
])
def test_open_ended_ranges(spec, engine_name, when, expect):
    p = spec(valuesets=VS, rules={"until": "x during [, 2025-06-15] exists",
                                  "from": "x during [2025-06-15, ] exists",
                                  "ends_by": "x ends on or before 2025-06-15 exists",
                                  "starts_by": "x starts on or before 2025-06-15 exists"})
    assert holds(p, record(fact("x1", when)), "2025-06-20", engine_name) == expect


def test_open_range_with_a_missing_end_holds_nothing(spec, engine_name):
    p = spec(valuesets=VS, rules={"r": "x during [, latest(y).date] exists"})
    assert holds(p, record(fact("x1", "2025-01-01")), "2025-06-20", engine_name) == set()
    assert holds(p, record(fact("x1", "2025-01-01"), fact("y1", "2025-02-01")), "2025-06-20", engine_name) == {"r"}


def test_ends_on_or_before_uses_the_end(spec, engine_name):
    p = spec(valuesets=VS, rules={"e": "x ends on or before 2025-01-31 exists", "s": "x starts on or before 2025-01-31 exists",
                                  "a": "x starts on or after 2025-01-31 exists"})
    rec = record(fact("x1", "2025-01-10", end="2025-02-10"))
    assert holds(p, rec, "2025-06-15", engine_name) == {"s"}


def test_on_or_before_a_list_of_events_is_up_to_each_ones_end(spec, engine_name):
    p = spec(valuesets=VS, rules={"before": "x starts on or before visit exists", "after": "x starts on or after visit exists"})
    visit = fact("v1", "2025-03-01T08:00", end="2025-03-01T08:30", kind="encounter")
    assert holds(p, record(visit, fact("x1", "2025-03-01T08:30")), "2025-06-15", engine_name) == {"before", "after"}
    assert holds(p, record(visit, fact("x1", "2025-03-01T08:31")), "2025-06-15", engine_name) == {"after"}
    assert holds(p, record(visit, fact("x1", "2025-03-01T07:59")), "2025-06-15", engine_name) == {"before"}


def test_within_a_window_of_any_event_of_a_list(spec, engine_name):
    p = spec(valuesets=VS, rules={"w": "x within 7 days before visit exists", "a": "x within 2 days after visit exists"})
    visits = [fact("v1", "2025-03-01", kind="encounter"), fact("v1", "2025-05-01", kind="encounter")]
    assert holds(p, record(*visits, fact("x1", "2025-04-24")), "2025-06-15", engine_name) == {"w"}
    assert holds(p, record(*visits, fact("x1", "2025-03-03")), "2025-06-15", engine_name) == {"a"}
    assert holds(p, record(*visits, fact("x1", "2025-04-01")), "2025-06-15", engine_name) == set()


# ---- "has a result" ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,has", [
    ({"value": 5.0, "unit": "mmol/L"}, True),
    ({"value_codes": ["c1"]}, True),
    ({"value_string": "positive"}, True),
    ({"value_text": "see letter"}, True),
    ({"value_boolean": False}, True),
    ({"value_string": ""}, False),
    ({"data_absent_reason": "unknown"}, False),
    ({}, False),
])
def test_where_result_exists_for_every_result_type(spec, engine_name, kw, has):
    p = spec(valuesets=VS, rules={"has": "lab where result exists", "none": "lab where result is missing",
                                  "latest_has": "latest(lab).result exists"})
    kw = dict(kw)
    value, unit = kw.pop("value", None), kw.pop("unit", None)
    got = holds(p, record(fact("l1", "2025-01-01", value, unit, **kw)), "2025-06-15", engine_name)
    assert got == ({"has", "latest_has"} if has else {"none"})


def test_where_value_exists_and_start_end_exist(spec, engine_name):
    p = spec(valuesets=VS, rules={"v": "lab where value exists", "e": "x where end exists", "s": "x where start exists"})
    rec = record(fact("l1", "2025-01-01", 4.0, "mmol/L"), fact("x1", "2025-01-01", end="2025-01-02"))
    assert holds(p, rec, "2025-06-15", engine_name) == {"v", "e", "s"}
    rec2 = record(fact("l1", "2025-01-01"), fact("x1", "2025-01-01", start_unknown=True))
    assert holds(p, rec2, "2025-06-15", engine_name) == set()


@pytest.mark.parametrize("text,words", [
    ("lab where value is not null", ["there is no null", "where value exists"]),
    ("latest(lab).value is null", ["there is no null", "is missing"]),
    ("lab where result > 5", ["where result exists"]),
])
def test_null_and_result_errors_say_what_is_possible(tmp_path, text, words):
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, protocol_text(valuesets=VS, rules={"r": text})))
    for w in words:
        assert w in str(e.value)


# ---- scalar functions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("expr,holds_", [
    ("exp(latest(lab).value / (1 mmol/L)) > 7.38", True),       # e^2 = 7.389
    ("exp(latest(lab).value / (1 mmol/L)) > 7.39", False),
    ("ln(latest(lab).value / (1 mmol/L)) < 0.6932", True),      # ln 2 = 0.693147
    ("power(latest(lab).value / (1 mmol/L), 10) = 1024", True),
    ("power(0 - 8, 0.5) exists", False),                         # not a real number: missing
    ("ln(0) exists", False),
    ("least(latest(lab).value, 1 mmol/L, 3 mmol/L) = 1 mmol/L", True),
    ("greatest(latest(lab).value, 1 mmol/L) = 2 mmol/L", True),
    ("greatest(latest(lab).value, latest(x).value) exists", False),   # a missing argument: missing
    ("abs(1 - latest(lab).value / (1 mmol/L)) = 1", True),
    ("not (exp(latest(x).value) > 1)", True),                     # missing compares false; not -> true
])
def test_scalar_functions(spec, engine_name, expr, holds_):
    vs = {**VS, "x": {"codes": ["x1"]}}
    p = spec(valuesets=vs, rules={"f": expr})
    got = holds(p, record(fact("l1", "2025-01-01", 2.0, "mmol/L")), "2025-06-15", engine_name)
    assert got == ({"f"} if holds_ else set())


def test_function_unit_errors(tmp_path):
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, protocol_text(valuesets=VS, rules={"r": "exp(latest(lab).value) > 1"})))
    assert "needs a plain number" in str(e.value)


# ---- index events, windows relative to an event, birth / death dates ----------------------------------
def test_index_event_and_window_relative_to_it(spec, engine_name):
    p = spec(valuesets=VS, define={"index_event": "earliest(lab where value > 9 mmol/L)",
                                   "window_start": "index_event + 12 months - 60 days",
                                   "window_end": "index_event + 12 months + 60 days",
                                   "follow_up": "latest(lab during [window_start, window_end])"},
             rules={"remission": "follow_up.value < 5 mmol/L", "aged_12_at_index": "birth_date + 12 years <= index_event.date"})
    base = [fact("l1", "2024-02-25", 10.0, "mmol/L"), fact("l1", "2024-03-25", 3.0, "mmol/L")]
    assert holds(p, record(*base, fact("l1", "2025-02-19", 3.0, "mmol/L"), birth="2012-02-25"),
                 "2025-06-15", engine_name) == {"remission", "aged_12_at_index"}
    # the last score before the window (2024-12-26 is 61 days early) does not count; born a day late: 11 at the index
    assert holds(p, record(*base, fact("l1", "2024-12-26", 3.0, "mmol/L"), birth="2012-02-26"),
                 "2025-06-15", engine_name) == set()


def test_death_date_is_missing_until_it_happens(spec, engine_name):
    p = spec(valuesets=VS, rules={"died_2025": "death_date >= 2025-01-01", "alive": "death_date is missing"})
    assert holds(p, record(death="2025-03-01"), "2025-06-15", engine_name) == {"died_2025"}
    assert holds(p, record(death="2025-07-01"), "2025-06-15", engine_name) == {"alive"}


# ---- measure steps: exceptions, episodes, counted after death --------------------------------------------
EXC_MEASURE = """  - id: m
    title: M
    initial_population: latest(x) exists
    denominator: latest(x) exists
    exclusions: [latest(y) exists]
    exceptions: [reasons where do_not_perform = true exists]
    numerator: latest(lab).value < 5 mmol/L
"""


@pytest.mark.parametrize("facts,pops", [
    ([], (1, 1, 0, 0, 0)),
    (["reason"], (1, 1, 0, 1, 0)),
    (["reason", "low"], (1, 1, 0, 0, 1)),          # the numerator wins over an exception
    (["reason", "excluded"], (1, 1, 1, 0, 0)),     # an exclusion wins over an exception
    (["excluded", "low"], (1, 1, 1, 0, 0)),
])
def test_denominator_exceptions_cascade(spec, engine_name, facts, pops):
    p = spec(valuesets=VS, measures=EXC_MEASURE)
    fs = [fact("x1", "2025-01-01")]
    fs += [fact("r1", "2025-01-02", do_not_perform=True)] if "reason" in facts else []
    fs += [fact("l1", "2025-01-03", 4.0, "mmol/L")] if "low" in facts else []
    fs += [fact("y1", "2025-01-04")] if "excluded" in facts else []
    _, pr = run(p, record(*fs), "2025-06-15", engine_name)
    m = pr.measures[0]
    assert (m.initial_population, m.denominator, m.exclusion, m.exception, m.numerator) == tuple(map(bool, pops))
    assert set(m.why_steps) >= {"ip", "den", "num"}


EPISODE_MEASURE = """  - id: e
    title: E
    episodes: visit where kind = "encounter" during period
    episodes_at_most: 3
    initial_population: age >= 18
    exclusions: [y starts on or before (episode - 1 day) exists]
    exceptions: [reasons within 0 days after episode exists]
    numerator: lab during episode exists
"""


def test_episode_based_measure_counts_per_episode(spec, engine_name):
    p = spec(valuesets=VS, measures=EPISODE_MEASURE, period="12 months")
    v1 = fact("v1", "2025-02-01T08:00", end="2025-02-01T09:00", kind="encounter")
    v2 = fact("v1", "2025-04-01T08:00", end="2025-04-01T09:00", kind="encounter")
    v3 = fact("v1", "2025-05-01T08:00", end="2025-05-01T09:00", kind="encounter")
    rec = record(v1, v2, v3, fact("l1", "2025-02-01T08:30", 1.0, "mmol/L"), fact("r1", "2025-04-01T10:00"),
                 fact("y1", "2025-04-15"))
    _, pr = run(p, rec, "2025-06-15", engine_name)
    m = pr.measures[0]
    assert m.basis == "episode"
    assert m.counts == {"initial_population": 3, "denominator": 3, "exclusion": 1, "exception": 1, "numerator": 1}
    assert [(e.episode, e.numerator, e.exception, e.exclusion) for e in m.episodes] == [
        (1, True, False, False), (2, False, True, False), (3, False, False, True)]


def test_more_episodes_than_counted_is_a_data_problem(spec, engine_name):
    p = spec(valuesets=VS, measures=EPISODE_MEASURE)
    visits = [fact("v1", f"2025-0{i}-01", kind="encounter") for i in range(1, 6)]
    _, pr = run(p, record(*visits), "2025-06-15", engine_name)
    assert pr.measures[0].counts["initial_population"] == 3
    assert any("more than 3 episodes" in d for d in pr.data_problems)


def test_episode_outside_an_episode_measure_is_an_error(tmp_path):
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, protocol_text(valuesets=VS, rules={"r": "lab during episode exists"})))
    assert "only meaningful in a measure counted per episode" in str(e.value)


def test_counts_deceased_measures_are_evaluated_after_death(spec, engine_name):
    m = EXC_MEASURE.replace("  - id: m\n", "  - id: m\n    counts_deceased: true\n").replace(
        "exclusions: [latest(y) exists]", "exclusions: [death_date <= period_end]")
    p = spec(valuesets=VS, measures=m)
    _, pr = run(p, record(fact("x1", "2025-01-01"), death="2025-03-01"), "2025-06-15", engine_name)
    got = pr.measures[0]
    assert (got.initial_population, got.exclusion) == (True, True)
    q = spec(valuesets=VS, measures=EXC_MEASURE)   # default: a patient who died is in no population
    _, pr2 = run(q, record(fact("x1", "2025-01-01"), death="2025-03-01"), "2025-06-15", engine_name)
    assert not pr2.measures[0].initial_population


def test_truncated_value_set_warns_unless_declared(tmp_path):
    import json
    vs = {"resourceType": "ValueSet", "expansion": {"total": 3, "contains": [{"system": SNOMED, "code": "a"}]}}
    (tmp_path / "t.json").write_text(json.dumps(vs))
    warned = load_protocol(write_protocol(tmp_path, protocol_text(valuesets={"t": {"fhir": "t.json"}}, rules={"r": "t exists"})))
    assert any("truncated expansion (1 of 3 codes)" in str(w) for w in warned.warnings)
    ok = load_protocol(write_protocol(tmp_path, protocol_text(
        valuesets={"t": {"fhir": "t.json", "incomplete": "only the first code; others not matched"}}, rules={"r": "t exists"})))
    assert not ok.warnings


def test_a_broken_definition_is_reported_once(tmp_path):
    text = protocol_text(valuesets=VS, define={"broken": "latest(xx) exists", "a": "broken and age > 1"},
                         population="broken", rules={"r": "a and broken"})
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, text))
    assert len(e.value.problems) == 1 and "unknown name 'xx'" in str(e.value)
