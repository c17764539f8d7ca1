"""`A and B` where only B needs a missing declared cluster: a patient for whom A is false is decided (the
condition is false whatever B is), not "cannot determine" (engine/language/determinacy_guard.py). Rules,
segments and an activity's `when`; on every engine."""
from __future__ import annotations

import pytest
from spec_support import fact, record, run_one as run, undetermined_ids as ids


DECLARED = {"cluster": "FALLSREF_COD", "refset": "999019891000230107", "publisher": "PCD"}


pytestmark = pytest.mark.usefixtures("no_site_codelists")  # a site folder from the environment must not supply them


def test_a_false_determined_part_decides_an_and(spec, engine_name):
    proto = spec(valuesets={"fall": ["f1"], "frail": ["s1"], "ref": DECLARED},
                 define={"last_fall": "latest(fall) within 12 months",
                         "referred": "latest(ref) after last_fall",
                         "frail_fall": {"all": ["latest(frail) exists", "last_fall exists"]}},
                 rules={"not_referred": "last_fall exists and not referred",
                        "nested": {"all": ["frail_fall", "not referred"]},
                        "either": "last_fall exists or latest(ref) exists"})
    assert {"rule:not_referred", "rule:nested", "rule:either"} <= set(proto.undetermined)
    # no fall: the rules that need a fall are decided (not fired, not undetermined); `or` stays undetermined
    res = run(proto, record(fact("s1", "2024-01-01")), engine_name)
    assert ids(res) == ["either"] and res.tasks == []
    # frail, no fall: the nested `and` is decided too
    assert ids(run(proto, record(), engine_name)) == ["either"]
    # a fall: whether it was referred cannot be told
    res = run(proto, record(fact("s1", "2024-01-01"), fact("f1", "2025-03-01")), engine_name)
    assert ids(res) == ["either", "nested", "not_referred"] and res.tasks == []


def test_an_activity_for_part_of_the_register(spec, engine_name):
    acts = """\
  - id: falls-review
    title: Falls review
    when: latest(fall) within 12 months
    every: 12 months
    done_by: latest(ref)
    role: nurse
"""
    proto = spec(valuesets={"fall": ["f1"], "ref": DECLARED}, activities=acts)
    res = run(proto, record(), engine_name)  # no fall: not for this patient, nothing unknown
    assert res.care_plan == [] and ids(res) == []
    res = run(proto, record(fact("f1", "2025-03-01")), engine_name)
    assert [(c.activity, c.status) for c in res.care_plan] == [("falls-review", "unknown")]
    assert ids(res) == ["falls-review"]
