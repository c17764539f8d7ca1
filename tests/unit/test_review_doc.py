"""`carepath docs`: each protocol as a clinical review document a GP can sign off (issue 13 item 9)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from engine.app.review_doc import provenance, render_review, thresholds
from engine.language.loader import load_protocol

ROOT = Path(__file__).resolve().parents[2]
NEW = ["t2dm-annual-care@1.4.0", "hypertension@1.3.0", "heart-failure@1.1.0", "asthma@1.1.0", "copd@1.2.0",
       "depression@1.1.0", "frailty@1.1.0", "risk-stratification@1.1.0", "ckd", "atrial-fibrillation"]


def _load(name):
    return load_protocol(ROOT / "protocols" / f"{name}.yaml")


@pytest.mark.parametrize("name", NEW)
def test_review_document_of_each_new_version(name):
    p = _load(name)
    text = render_review(p)
    review = text[text.index("## Clinical review"):]
    # the sign-off block names the version and the content it signs
    assert "### Sign-off" in review and f"| Version reviewed | {p.version} |" in review
    assert p.content_hash[:16] in review
    # every rule in words, with its reference
    for r in p.rules:
        assert f"**{r.title}** — when " in review, r.id
        assert r.because and r.because in review, r.id
    # every codelist with provenance (the CSV's source column) and size; nothing unverified in a new version
    assert "**unverified or made-up codes**" not in review
    for vs_name, vs in p.valuesets.items():
        if vs_name in p.clusters or vs.any_code:
            continue
        with open(vs.source, newline="", encoding="utf-8-sig") as fh:
            sources = {r["source"] for r in csv.DictReader(fh) if r["code"] in {c for _, c in vs.codes}}
        row = next(line for line in review.splitlines() if line.startswith(f"| {vs_name.replace('_', ' ')} | "))
        assert f"{len(vs)} from {Path(vs.source).name}" in row
        assert any(s in row for s in sources), (vs_name, row)
    # every declared-but-missing cluster, with what it blocks
    for c in p.missing_clusters:
        line = next(x for x in review.splitlines() if x.startswith(f"- {c.publisher or ''} {c.cluster}"))
        assert "cannot determine" in line


def test_thresholds_carry_the_guideline_reference():
    p = _load("t2dm-annual-care@1.2.0")
    review = render_review(p)
    row = next(x for x in review.splitlines() if x.startswith("| Rule: HbA1c 58 mmol/mol or more"))
    assert "latest HbA1c in the last 12 months value ≥ 58 mmol/mol" in row and "NG28 §1.6" in row
    # a threshold inside a definition is found through the definition that holds it
    found = thresholds(p.all_conditions["rule:bp-above-target-under-80"])
    assert ("latest home systolic in the last 12 months value ≥ 135 mmHg", "home_above_under_80") in found


def test_old_version_with_unverified_codes_is_flagged():
    p = _load("t2dm-annual-care@1.1.0")
    review = render_review(p)
    assert "**unverified or made-up codes**" in review
    assert "**Not from a published list:**" in review and "education referral" in review
    prov = dict(provenance(p.valuesets["education_referral"]))
    assert any(s.startswith("LOCAL:unverified") for s in prov)


def test_cli_docs_writes_review_documents(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path / "docs"
    res = CliRunner().invoke(app, ["docs", str(ROOT / "protocols" / "ckd.yaml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "ckd@1.0.0.md").read_text(encoding="utf-8")
    assert "## Clinical review" in text and "### Sign-off" in text
    assert "NHSDRUG:ACE_COD:04ed58af" in text  # the ACE inhibitor list's provenance
