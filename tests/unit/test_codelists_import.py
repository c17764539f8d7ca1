"""`carepath codelists import` and `list` (issue 13 item 2): OpenCodelists and PCD refset portal files become
<site dir>/<cluster>.csv with provenance per row; every SNOMED CT id's Verhoeff check digit is checked; a bad
file is refused whole with line numbers; once imported, the declared cluster is determined."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.language.codelist_import import ImportRefused, read_codelist
from engine.language.site_codelists import sctid_problem, verhoeff_digit, verhoeff_valid

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "declared-cluster"
runner = CliRunner()
# real SNOMED CT concepts (test input; the real FOOTEXAM_COD release is not in the reference pack)
GOOD = "code,term\n401191002,Diabetic foot examination\n134388005,Monofilament foot sensation test\n"


pytestmark = pytest.mark.usefixtures("no_site_codelists")  # a site folder from the environment must not supply them


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_verhoeff():
    assert verhoeff_valid("401191002") and not verhoeff_valid("401191003")
    assert verhoeff_digit("40119100") == 2 and verhoeff_digit("99979100000010") == 6
    assert sctid_problem("999791000000106") is None  # an extension concept id (partition 10)
    assert sctid_problem("102611000001100") is None  # a dm+d AMP id
    assert sctid_problem("401191003") == "check digit wrong (Verhoeff)"
    assert sctid_problem("12345") .startswith("5 digits")
    assert sctid_problem("0401191002") == "starts with 0"
    assert "partition" in sctid_problem("1234567" + "01" + str(verhoeff_digit("123456701")))  # a description id


def test_import_opencodelists_download_then_the_cluster_is_determined(tmp_path):
    src = tmp_path / "nhsd-primary-care-domain-refsets-footexam_cod-20241205.csv"
    src.write_text(GOOD, encoding="utf-8")
    site = tmp_path / "site"
    r = cli("codelists", "import", src, "--cluster", "FOOTEXAM_COD", "--refset", "999001011000230105",
            "--protocols", FIXTURE, "--site-dir", site)
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "imported FOOTEXAM_COD (OpenCodelists; PCD refset 999001011000230105, version 20241205): 2 codes" in out
    assert "supplies: footcare-fixture@1.0.0 (foot_exam)" in out
    assert rows(site / "footexam_cod.csv") == [
        {"code": "401191002", "term": "Diabetic foot examination", "source": "PCD:FOOTEXAM_COD:20241205"},
        {"code": "134388005", "term": "Monofilament foot sensation test", "source": "PCD:FOOTEXAM_COD:20241205"}]
    listed = json.loads(runner.invoke(app, ["codelists", "list", "--protocols", str(FIXTURE), "--format", "json"],
                                      env={"CAREPATH_SITE_CODELISTS": str(site)}).output)
    foot = next(x for x in listed if x["cluster"] == "FOOTEXAM_COD")
    assert foot["supplied"].endswith("footexam_cod.csv") and foot["codes"] == 2 and foot["blocks"] == []
    # the protocol now evaluates the foot examination like any codelist
    import os
    os.environ["CAREPATH_SITE_CODELISTS"] = str(site)
    try:
        from engine.language.loader import load_protocol
        proto = load_protocol(FIXTURE / "footcare.yaml")
    finally:
        del os.environ["CAREPATH_SITE_CODELISTS"]
    assert proto.missing_clusters == [] and len(proto.valuesets["foot_exam"].codes) == 2


def test_list_shows_missing_clusters_and_what_they_block():
    r = cli("codelists", "list", "--protocols", FIXTURE, "--format", "json")
    assert r.exit_code == 0, r.output
    listed = {x["cluster"]: x for x in json.loads(r.output)}
    assert set(listed) == {"FOOTEXAM_COD", "FRC_COD"}
    assert listed["FOOTEXAM_COD"]["supplied"] is None and listed["FOOTEXAM_COD"]["refset"] == "999001011000230105"
    assert listed["FOOTEXAM_COD"]["blocks"] == [
        "footcare-fixture@1.0.0: activity foot-exam, goal feet-examined, measure DMFOOT, rule foot-exam-overdue"]
    assert "population" in listed["FRC_COD"]["blocks"][0]
    text = " ".join(cli("codelists", "list", "--protocols", FIXTURE).output.split())
    assert "2 declared cluster(s): 0 supplied, 2 missing" in text


def test_bad_file_is_refused_with_line_numbers_and_nothing_written(tmp_path):
    src = tmp_path / "foot.csv"
    src.write_text("code,term\n401191002,Diabetic foot examination\n401191003,typo\n\n,blank\n4.01191E+08,excel\n",
                   encoding="utf-8")
    site = tmp_path / "site"
    r = cli("codelists", "import", src, "--cluster", "FOOTEXAM_COD", "--version", "1", "--protocols", FIXTURE,
            "--site-dir", site)
    assert r.exit_code == 1
    out = r.output
    assert f"{src}:3: '401191003' is not a SNOMED CT id: check digit wrong (Verhoeff)" in out
    assert f"{src}:5: empty code" in out
    assert f"{src}:6: '4.01191E+08' is not a SNOMED CT id: not all digits" in out
    assert "not imported: 3 problem(s); nothing was written" in out
    assert not site.exists()


def test_no_code_column_and_no_version(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("concept,label\n401191002,x\n", encoding="utf-8")
    with pytest.raises(ImportRefused, match=r"x.csv:1: no code column"):
        read_codelist(src, "FOOTEXAM_COD", version="1")
    src.write_text(GOOD, encoding="utf-8")
    with pytest.raises(ImportRefused, match="no version: give --version"):
        read_codelist(src, "FOOTEXAM_COD")


def test_dmd_download(tmp_path):
    src = tmp_path / "ace.csv"  # an OpenCodelists dm+d download (rows of NHS drug refset ACE_COD as published)
    src.write_text("dmd_type,dmd_id,dmd_name\nAMP,102611000001100,Enalapril 2.5mg tablets (Zentiva Pharma UK Ltd) (AMP)\n"
                   "AMP,10290011000001104,Lisinopril 10mg tablets (Relonchem Ltd) (AMP)\n", encoding="utf-8")
    got = read_codelist(src, "ACE_COD", publisher="NHSDRUG", version="04ed58af")
    assert got.rows == [("102611000001100", "Enalapril 2.5mg tablets (Zentiva Pharma UK Ltd) (AMP)"),
                        ("10290011000001104", "Lisinopril 10mg tablets (Relonchem Ltd) (AMP)")]


def test_pcd_refset_portal_file(tmp_path):
    """The PCD refset content file: several clusters, tab-separated, a code repeated once per output."""
    src = tmp_path / "PCD_Refset_Content_by_Output.txt"
    src.write_text(
        "Output_ID\tCluster_ID\tCluster_Description\tSNOMED_code\tSNOMED_code_description\tPCD_Refset_ID\tService_and_Ruleset\n"
        "DM017\tFOOTEXAM_COD\tFoot examination codes\t401191002\tDiabetic foot examination\t999001011000230105\tQOF DM\n"
        "DM999\tFOOTEXAM_COD\tFoot examination codes\t401191002\tDiabetic foot examination\t999001011000230105\tNDA\n"
        "DM017\tFOOTEXAM_COD\tFoot examination codes\t134388005\tMonofilament foot sensation test\t999001011000230105\tQOF DM\n"
        "DM017\tDM_COD\tDiabetes codes\t111552007\tDiabetes mellitus without complication\t999004691000230108\tQOF DM\n",
        encoding="utf-8")
    got = read_codelist(src, "footexam_cod", version="20241205")
    assert got.source_format == "PCD refset portal" and got.refset == "999001011000230105"
    assert [c for c, _ in got.rows] == ["401191002", "134388005"] and got.repeats == 1 and got.other_clusters == ["DM_COD"]
    with pytest.raises(ImportRefused, match="has refset 999001011000230105 in this file, not 999008851000230109"):
        read_codelist(src, "FOOTEXAM_COD", refset="999008851000230109", version="1")
    with pytest.raises(ImportRefused, match=r"no rows for cluster FRC_COD \(clusters in the file: DM_COD, FOOTEXAM_COD\)"):
        read_codelist(src, "FRC_COD", version="1")


def test_refset_differing_from_the_protocols_declaration_is_refused(tmp_path):
    src = tmp_path / "f.csv"
    src.write_text(GOOD, encoding="utf-8")
    r = cli("codelists", "import", src, "--cluster", "FOOTEXAM_COD", "--refset", "999008851000230109", "--version", "1",
            "--protocols", FIXTURE, "--site-dir", tmp_path / "site")
    assert r.exit_code == 1 and "the protocols declare FOOTEXAM_COD as refset 999001011000230105" in " ".join(r.output.split())
    assert not (tmp_path / "site").exists()
