"""frailty 1.1.0 once a site supplies the clusters it declares (FALLSREF_COD, FALRISKASS_COD, FRAILASS_COD,
PCSPAGRE_COD, RVWPCSP_COD, FALLSDISC_COD): what is "cannot determine" in the shipped library is decided, and
the falls assessment rule fires. The site files here are test fixtures with placeholder codes (not SNOMED CT:
the real cluster contents come from the NHS PCD refsets, `carepath codelists import`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.app.cases import load_cases, run_case

ROOT = Path(__file__).resolve().parents[2]
CLUSTERS = ["FALLSREF_COD", "FALRISKASS_COD", "FRAILASS_COD", "PCSPAGRE_COD", "RVWPCSP_COD", "FALLSDISC_COD"]

CASES = """\
protocol: {protocol}
agreements: [{agreement}]
defaults:
  as_of: 2026-11-20
  patient: {{birth_date: 1940-03-01, sex: female, practice: G07098, locality: south, mdt: south-1}}
codes:
  falls_referral: fixture-fallsref_cod
  falls_risk_assessment: fixture-falriskass_cod
  frailty_assessment: fixture-frailass_cod
  plan_agreed: fixture-pcspagre_cod
  plan_reviewed: fixture-rvwpcsp_cod
  falls_discussed: fixture-fallsdisc_cod
  moderate_code: 925831000000107
  severe_code: 925861000000102
cases:
  - name: A fall 3 months ago, no assessment since - falls service assessment
    facts:
      - {{code: fall, date: 2026-08-15}}
    expect:
      rules_fired: [falls-assessment]
      tasks:
        - {{title: Multifactorial falls risk assessment, provider: falls-service, role: falls-practitioner, priority: high,
           response: 15 working days, due: 2026-12-11T09:00}}
      flags: {{fall-in-12-months: amber}}
      cannot_determine: []
  - name: A fall referred to the falls service the same day - nothing to do
    facts:
      - {{code: fall, date: 2026-08-15}}
      - {{code: falls_referral, date: 2026-08-15}}
    expect:
      rules_not_fired: [falls-assessment]
      no_flags: [fall-in-12-months]
  - name: A falls risk assessment after the fall - nothing to do; one before it does not count
    facts:
      - {{code: falls_risk_assessment, date: 2026-03-01}}
      - {{code: fall, date: 2026-08-15}}
      - {{code: falls_risk_assessment, date: 2026-09-01}}
    expect:
      rules_not_fired: [falls-assessment]
  - name: An assessment only before the fall - assess again
    facts:
      - {{code: falls_risk_assessment, date: 2026-03-01}}
      - {{code: fall, date: 2026-08-15}}
    expect:
      rules_fired: [falls-assessment]
  - name: Moderate frailty reviewed 11 months ago, plan reviewed - review due, plan met
    facts:
      - {{code: moderate_code, date: 2025-06-01}}
      - {{code: frailty_assessment, date: 2025-12-10}}
      - {{code: plan_agreed, date: 2025-01-01}}
      - {{code: plan_reviewed, date: 2026-03-01}}
    expect:
      care_plan:
        frailty-review: {{status: due, next_due: 2026-12-10}}
        care-support-plan: met
      measures: {{FRAIL-PCSP: numerator}}
      cannot_determine: []
  - name: Severe frailty with falls discussed this year - falls question met
    facts:
      - {{code: severe_code, date: 2025-06-01}}
      - {{code: falls_discussed, date: 2026-03-01}}
    expect:
      care_plan: {{falls-enquiry: met}}
      measures: {{FRAIL-SEV-FALLS: numerator, FRAIL-PCSP: {{denominator: true, numerator: false}}}}
"""


@pytest.fixture
def cases(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    for c in CLUSTERS:
        (site / f"{c.lower()}.csv").write_text(
            f"code,term,source\nfixture-{c.lower()},{c} test fixture,TEST:{c}:fixture\n", encoding="utf-8")
    monkeypatch.setenv("CAREPATH_SITE_CODELISTS", str(site))
    path = tmp_path / "frailty.tests.yaml"
    path.write_text(CASES.format(protocol=ROOT / "protocols" / "frailty@1.1.0.yaml",
                                 agreement=ROOT / "protocols" / "agreements" / "pilot-area-roles.yaml"), encoding="utf-8")
    cf = load_cases(path)
    assert cf.protocol.key == "frailty@1.1.0" and cf.protocol.missing_clusters == []
    return cf


@pytest.mark.parametrize("engine", ["durable", "python", "batch"])
def test_frailty_cases_with_the_clusters_supplied(cases, engine):
    for case in cases.cases:
        out = run_case(cases, case, engine)
        assert out.passed, f"{case.name} [{engine}]\n  " + "\n  ".join(out.problems) + "\n  " + "\n  ".join(out.why)
