"""Shared definitions (`uses: [efi@1.0.0]`, engine/language/shared.py), on every engine.

    shared/<id>@<version>.yaml      shared: <id>, version, title, owner, evidence, valuesets, define
    uses: [<id>@<version>]          a protocol pins the exact version it uses
    <id>.<name>                     what the file defines, in the protocol's expressions (also after
                                    `where code in` and in `count(distinct <column> of ...)`)

The file is compiled on its own (it sees only its own names) and expanded into the protocol's IR at load
time under the prefixed names: each engine runs the expanded protocol, and it means exactly what the same
definitions written inline mean.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from spec_support import fact, holds, protocol_text, record

from engine.ir import nodes as ir
from engine.language.errors import ProtocolError
from engine.language.loader import load_protocol

DEFICITS = """code,term,deficit,source
d1,Falls 1,falls,spec
d2,Falls 2,falls,spec
d3,Two deficits,ckd,spec
d3,Two deficits,diabetes,spec
"""

SCORE = """\
shared: idx
version: {version}
title: A small index
owner: spec tests
evidence: [spec]
valuesets:
  deficit_code: {{codelist: deficits.csv}}
  medicine: {{kind: medication}}
  vaccine: {{codes: [vac1, vac2]}}
define:
  medicines_12m: medicine where code not in vaccine within 12 months
  deficits:
    sum:
      - count(distinct deficit of deficit_code)
      - {{points: 1, when: count(distinct code of medicines_12m) >= 2}}
  score: deficits / 4
  high: score >= {cut}
"""


def write_shared(folder: Path, version: str = "1.0.0", cut: str = "0.75", text: str | None = None,
                 sid: str = "idx") -> Path:
    d = folder / "shared"
    d.mkdir(exist_ok=True)
    (folder / "valuesets").mkdir(exist_ok=True)
    (folder / "valuesets" / "deficits.csv").write_text(DEFICITS, encoding="utf-8")
    path = d / f"{sid}@{version}.yaml"
    path.write_text(text if text is not None else SCORE.format(version=version, cut=cut), encoding="utf-8")
    return path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, name: str = "p.yaml", uses: str = "uses: [idx@1.0.0]", **parts):
    parts.setdefault("valuesets", {"other": ["x1"]})
    return load_protocol(write(folder, name, protocol_text(extra=uses, **parts)))


def errors(folder: Path, name: str = "p.yaml", **kw) -> list[str]:
    with pytest.raises(ProtocolError) as e:
        load(folder, name, **kw)
    return [str(p) for p in e.value.problems]


MEDS = [fact("m1", "2025-03-01", kind="medication"), fact("m2", "2025-04-01", kind="medication")]


# ---- meaning: the same on every engine, and the same as written inline ---------------------------------
def test_prefixed_names_from_a_shared_file(tmp_path, engine_name):
    write_shared(tmp_path)
    p = load(tmp_path, rules={
        "high": "idx.high",                                          # a definition using the file's own names
        "score_half": "idx.score = 0.5",
        "deficit_coded": "latest(idx.deficit_code) exists",         # a value set of the file
        "three_columns": "count(distinct deficit of idx.deficit_code) = 3",
        "meds_not_vaccine": "count(distinct code of idx.medicine where code not in idx.vaccine within 12 months) = 2",
    })
    rec = record(fact("d1", "2020-01-01"), fact("d3", "2021-01-01"), *MEDS, fact("vac1", "2025-05-01", kind="medication"))
    assert holds(p, rec, engine=engine_name) == {"high", "deficit_coded", "three_columns", "meds_not_vaccine"}
    rec = record(fact("d3", "2020-01-01"), MEDS[0], fact("vac1", "2025-05-01", kind="medication"))  # 2 of 4
    assert holds(p, rec, engine=engine_name) == {"score_half", "deficit_coded"}


INLINE_DEFINE = {
    "medicines_12m": "medicine where code not in vaccine within 12 months",
    "deficits": {"sum": ["count(distinct deficit of deficit_code)",
                         {"points": 1, "when": "count(distinct code of medicines_12m) >= 2"}]},
    "score": "deficits / 4",
    "high": "score >= 0.75",
}


@pytest.mark.parametrize("facts", [
    [],
    ["d1", "d2"],
    ["d1", "d3", "m1", "m2"],
    ["d3", "m1", "vac1", "vac2"],
    ["d1", "d3", "m1", "m2", "vac1"],
])
def test_the_same_as_writing_it_inline(tmp_path, engine_name, facts):
    """The expanded protocol decides exactly what the inline protocol decides."""
    write_shared(tmp_path)
    shared = load(tmp_path, rules={"high": "idx.high", "some": "idx.score > 0", "none": "idx.score = 0"})
    (tmp_path / "deficits.csv").write_text(DEFICITS, encoding="utf-8")
    inline = load_protocol(write(tmp_path, "inline.yaml", protocol_text(
        pid="inline", valuesets={"deficit_code": {"codelist": "deficits.csv"}, "medicine": {"kind": "medication"},
                                 "vaccine": ["vac1", "vac2"]},
        define=INLINE_DEFINE, rules={"high": "high", "some": "score > 0", "none": "score = 0"})))
    rec = record(*[fact(c, "2025-03-01", kind="medication" if c[0] in "mv" else "observation") for c in facts])
    assert holds(shared, rec, engine=engine_name) == holds(inline, rec, engine=engine_name)


def test_expanded_into_the_protocol_ir(tmp_path):
    """Engines need nothing new: the prefixed value sets and definitions are the protocol's own."""
    write_shared(tmp_path)
    p = load(tmp_path, rules={"high": "idx.high"})
    assert {"idx.deficit_code", "idx.medicine", "idx.vaccine", "other"} == set(p.valuesets)
    assert {"idx.medicines_12m", "idx.deficits", "idx.score", "idx.high"} <= set(p.definitions)
    assert p.valuesets["idx.deficit_code"].name == "idx.deficit_code"
    names = {n.name for n in ir.walk(p.conditions["rule:high"]) if isinstance(n, (ir.Named, ir.ValueSetRef))}
    assert names == {"idx.high", "idx.score", "idx.deficits", "idx.deficit_code", "idx.medicines_12m", "idx.medicine"}
    assert {n.value for n in ir.walk(p.conditions["rule:high"]) if isinstance(n, ir.Where)} == {"idx.vaccine"}
    assert [(u.id, u.version, Path(u.source).name) for u in p.uses] == [("idx", "1.0.0", "idx@1.0.0.yaml")]
    assert "idx high" in ir.describe(p.conditions["rule:high"]).replace(".", " ")


def test_a_local_name_and_a_shared_name_do_not_clash(tmp_path, engine_name):
    write_shared(tmp_path)
    p = load(tmp_path, define={"high": "latest(other) exists", "score": "count(other)"},
             rules={"local": "high", "shared": "idx.high", "local_score": "score = 1"})
    rec = record(fact("x1", "2025-01-01"))
    assert holds(p, rec, engine=engine_name) == {"local", "local_score"}


def test_the_pinned_version_decides_the_meaning(tmp_path, engine_name):
    write_shared(tmp_path, "1.0.0", cut="0.75")
    write_shared(tmp_path, "1.1.0", cut="0.5")
    old = load(tmp_path, "old.yaml", uses="uses: [idx@1.0.0]", pid="old", rules={"high": "idx.high"})
    new = load(tmp_path, "new.yaml", uses="uses: [idx@1.1.0]", pid="new", rules={"high": "idx.high"})
    rec = record(fact("d1", "2020-01-01"), fact("d2", "2020-01-01"), *MEDS)  # 2 of 4: 0.5
    assert holds(old, rec, engine=engine_name) == set()
    assert holds(new, rec, engine=engine_name) == {"high"}


def test_a_protocol_in_a_subfolder_finds_the_library_shared_folder(tmp_path):
    write_shared(tmp_path)
    sub = tmp_path / "ecqm"
    sub.mkdir()
    p = load(sub, rules={"high": "idx.high"})
    assert p.uses[0].source == str(tmp_path / "shared" / "idx@1.0.0.yaml")


def test_a_shared_file_sees_only_its_own_names(tmp_path):
    text = SCORE.format(version="1.0.0", cut="0.75") + "  uses_protocol: latest(other) exists\n"
    path = write_shared(tmp_path, text=text)
    got = errors(tmp_path, rules={"high": "idx.high"})
    line = text.splitlines().index("  uses_protocol: latest(other) exists") + 1
    assert any(e.startswith(f"{path}:{line}:") and "unknown name 'other'" in e for e in got), got
    assert any("p.yaml:" in e and "uses: idx@1.0.0 has errors" in e for e in got), got


# ---- errors, with the line of the `uses:` item ---------------------------------------------------------
def _uses_line(folder: Path, name: str = "p.yaml") -> int:
    return next(i for i, line in enumerate((folder / name).read_text().splitlines(), 1) if line.startswith("uses:"))


def test_unknown_shared_file(tmp_path):
    write_shared(tmp_path)
    got = errors(tmp_path, uses="uses: [ixd@1.0.0]", rules={"r": "latest(other) exists"})
    assert len(got) == 1
    assert got[0].startswith(f"{tmp_path / 'p.yaml'}:{_uses_line(tmp_path)}:")
    assert "unknown shared definitions 'ixd'" in got[0] and "did you mean 'idx'" in got[0]


def test_unknown_version(tmp_path):
    write_shared(tmp_path, "1.0.0")
    write_shared(tmp_path, "1.1.0")
    got = errors(tmp_path, uses="uses: [idx@1.2.0]", rules={"r": "latest(other) exists"})
    assert len(got) == 1 and f"p.yaml:{_uses_line(tmp_path)}:" in got[0]
    assert "idx has no version 1.2.0 (expected one of 1.0.0, 1.1.0)" in got[0]


def test_a_version_is_required(tmp_path):
    write_shared(tmp_path)
    got = errors(tmp_path, uses="uses: [idx]", rules={"r": "latest(other) exists"})
    assert len(got) == 1 and "needs the exact version it pins" in got[0] and "idx@1.0.0" in got[0]


def test_used_twice(tmp_path):
    write_shared(tmp_path, "1.0.0")
    write_shared(tmp_path, "1.1.0")
    got = errors(tmp_path, uses="uses: [idx@1.0.0, idx@1.1.0]", rules={"r": "idx.high"})
    assert len(got) == 1 and "idx is used twice (idx@1.0.0" in got[0]


@pytest.mark.parametrize("section", ["valuesets", "define"])
def test_name_clash_with_the_prefix(tmp_path, section):
    write_shared(tmp_path)
    parts = {"valuesets": {"other": ["x1"], "idx": ["x2"]}} if section == "valuesets" else \
        {"define": {"idx": "latest(other) exists"}}
    got = errors(tmp_path, rules={"r": "idx.high"}, **parts)
    clash = [e for e in got if "name clash" in e]
    assert len(clash) == 1 and f"p.yaml:{_uses_line(tmp_path)}:" in clash[0]
    assert f"'idx' is also a {'value set' if section == 'valuesets' else 'definition'} of this protocol" in clash[0]


def test_unknown_name_in_a_shared_file(tmp_path):
    write_shared(tmp_path)
    got = errors(tmp_path, rules={"r": "idx.hihg"})
    assert len(got) == 1 and "the shared definitions 'idx' have no 'hihg'" in got[0] and "did you mean 'idx.high'" in got[0]
    rule_line = next(i for i, line in enumerate((tmp_path / "p.yaml").read_text().splitlines(), 1)
                     if "idx.hihg" in line)
    assert f"p.yaml:{rule_line}:" in got[0]


def test_the_prefix_alone_is_not_a_name(tmp_path):
    write_shared(tmp_path)
    got = errors(tmp_path, rules={"r": "idx exists"})
    assert len(got) == 1 and "'idx' is a shared definitions file this protocol uses" in got[0]


def test_names_without_the_prefix_are_not_visible(tmp_path):
    write_shared(tmp_path)
    got = errors(tmp_path, rules={"r": "high"})
    assert len(got) == 1 and "unknown name 'high'" in got[0]


def test_a_shared_file_named_for_another_version(tmp_path):
    write_shared(tmp_path, "1.1.0", text=SCORE.format(version="1.0.0", cut="0.75"))
    got = errors(tmp_path, uses="uses: [idx@1.1.0]", rules={"r": "idx.high"})
    assert any("a shared definitions file is named <id>@<version>.yaml; this one says idx 1.0.0" in e for e in got), got


# ---- a declared cluster in a shared file (supplied by the site, like a protocol's) -------------------
CLUSTERED = SCORE.format(version="1.0.0", cut="0.75").replace(
    "valuesets:\n", 'valuesets:\n  assessed: {cluster: FRAILASS_COD, refset: "999019851000230102", publisher: PCD}\n', 1) + \
    "  assessed_recently: latest(assessed) within 12 months\n"


def test_a_declared_cluster_in_a_shared_file_cannot_be_determined_until_supplied(tmp_path, monkeypatch):
    monkeypatch.delenv("CAREPATH_SITE_CODELISTS", raising=False)
    write_shared(tmp_path, text=CLUSTERED)
    p = load(tmp_path, rules={"assessed": "idx.assessed_recently", "high": "idx.high"})
    assert [c.cluster for c in p.missing_clusters] == ["FRAILASS_COD"]
    assert p.clusters["idx.assessed"].valueset == "idx.assessed"
    assert "rule:assessed" in p.undetermined and "rule:high" not in p.undetermined
    # the site supplies it in the library's valuesets/site/ (not in shared/valuesets/site/)
    site = tmp_path / "valuesets" / "site"
    site.mkdir(parents=True)
    (site / "frailass_cod.csv").write_text("code,term,source\n763264000,Clinical Frailty Scale score,PCD:FRAILASS_COD:20250912\n",
                                           encoding="utf-8")
    p = load(tmp_path, "p2.yaml", pid="spec2", rules={"assessed": "idx.assessed_recently", "high": "idx.high"})
    assert p.missing_clusters == [] and "rule:assessed" not in p.undetermined
    assert holds(p, record(fact("763264000", "2025-03-01"))) == {"assessed"}
