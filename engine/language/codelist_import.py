"""Read a published codelist download and write it as a site-supplied cluster (`carepath codelists import`).

Accepted files (CSV, or tab-separated; a header row; column names matched without regard to case, spaces
or underscores):

- OpenCodelists downloads: `code,term` (SNOMED CT codelists), `id,name`, dm+d `dmd_id,dmd_name`
  (other columns are ignored).
- NHS Primary Care Domain refset portal cluster files (the "PCD refset content" release file, one row per
  cluster member): `Cluster_ID, Cluster_Description, SNOMED_code, SNOMED_code_description, PCD_Refset_ID`
  (+ `Service_and_Ruleset` in the by-output file, which repeats a code once per output: repeats are
  kept once). A file holding several clusters is filtered to the one asked for; a refset id given with
  --refset must match the file's PCD_Refset_ID.

Every code must be a SNOMED CT identifier (dm+d ids are too): digits, 6-18 long, a concept partition and a
valid Verhoeff check digit. Any bad row refuses the whole file, with its line number; nothing is written.
The output is `<site dir>/<cluster lowercased>.csv` with `code,term,source`, `source` = PUBLISHER:CLUSTER:VERSION.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.language.site_codelists import sctid_problem, site_file

CODE_COLUMNS = ("code", "snomedcode", "snomedconceptid", "conceptid", "dmdid", "id")
TERM_COLUMNS = ("term", "snomedcodedescription", "description", "dmdname", "name", "conceptname", "display")
CLUSTER_COLUMNS = ("clusterid",)
REFSET_COLUMNS = ("pcdrefsetid", "refsetid")


class ImportRefused(ValueError):
    """The file cannot be imported; `problems` are lines of `file:line: what is wrong`."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Imported:
    cluster: str
    publisher: str
    version: str
    refset: str | None
    rows: list[tuple[str, str]]  # (code, term)
    source_format: str  # "OpenCodelists" | "PCD refset portal"
    repeats: int = 0  # rows repeating a code already read (kept once)
    other_clusters: list[str] = field(default_factory=list)  # clusters of a PCD file that were left out


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", (name or "").strip().lower())


def _pick(fields: dict[str, str], wanted: tuple[str, ...]) -> str | None:
    for w in wanted:
        if w in fields:
            return fields[w]
    return None


def version_from_name(path: Path) -> str | None:
    """OpenCodelists downloads are named <owner>-<codelist>-<version>.csv; the version is a date (20200812) or
    a short hash (04ed58af)."""
    m = re.search(r"-(\d{8}|[0-9a-f]{8})$", path.stem)
    return m.group(1) if m else None


def read_codelist(path: Path, cluster: str, refset: str | None = None, publisher: str = "PCD",
                  version: str | None = None) -> Imported:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImportRefused([f"{path}: {e.strerror}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="strict") if _cp1252_ok(raw) else None
        if text is None:
            raise ImportRefused([f"{path}: not a text file (neither UTF-8 nor Windows-1252)"]) from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRefused([f"{path}: empty file"]) from None
    except csv.Error as e:
        raise ImportRefused([f"{path}:1: {e}"]) from None
    fields = {_norm(h): i for i, h in enumerate(header)}
    code_i, term_i = _pick(fields, CODE_COLUMNS), _pick(fields, TERM_COLUMNS)
    cluster_i, refset_i = _pick(fields, CLUSTER_COLUMNS), _pick(fields, REFSET_COLUMNS)
    if code_i is None:
        raise ImportRefused([f"{path}:1: no code column (columns: {', '.join(header)})"
                             f" — expected an OpenCodelists download (code,term / id,name / dmd_id,dmd_name) or a "
                             f"PCD refset portal file (Cluster_ID, SNOMED_code, SNOMED_code_description, PCD_Refset_ID)"])
    pcd = cluster_i is not None
    problems: list[str] = []
    rows: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    repeats = 0
    others: set[str] = set()
    file_refsets: set[str] = set()
    line = 1
    try:
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) < len(header):
                rec = rec + [""] * (len(header) - len(rec))
            if pcd:
                cid = rec[cluster_i].strip()
                if cid.upper() != cluster.upper():
                    others.add(cid)
                    continue
                if refset_i is not None and rec[refset_i].strip():
                    file_refsets.add(rec[refset_i].strip())
            code = rec[code_i].strip()
            term = rec[term_i].strip() if term_i is not None else ""
            if not code:
                problems.append(f"{path}:{line}: empty code")
                continue
            why = sctid_problem(code)
            if why is not None:
                problems.append(f"{path}:{line}: {code!r} is not a SNOMED CT id: {why}")
                continue
            if code in seen:
                repeats += 1
                continue
            seen[code] = term
            rows.append((code, term))
    except csv.Error as e:
        problems.append(f"{path}:{line}: {e}")
    if pcd and refset is not None and file_refsets and file_refsets != {refset}:
        problems.append(f"{path}: cluster {cluster} has refset {', '.join(sorted(file_refsets))} in this file, "
                        f"not {refset} as given")
    if not rows and not problems:
        what = (f"no rows for cluster {cluster} (clusters in the file: {', '.join(sorted(others)[:20])})"
                if pcd else "no codes")
        problems.append(f"{path}: {what}")
    if problems:
        raise ImportRefused(problems)
    if refset is None and len(file_refsets) == 1:
        refset = next(iter(file_refsets))
    version = version or version_from_name(path)
    if not version:
        raise ImportRefused([f"{path}: no version: give --version (the release, e.g. 20241205 or the OpenCodelists "
                             f"version id) — it is kept on every row as {publisher}:{cluster}:<version>"])
    if not re.fullmatch(r"[A-Za-z0-9._-]+", version) or not re.fullmatch(r"[A-Za-z0-9._-]+", publisher):
        raise ImportRefused([f"--publisher {publisher!r} / --version {version!r}: letters, digits, '.', '_' and '-' only"])
    return Imported(cluster.upper(), publisher, version, refset, rows,
                    "PCD refset portal" if pcd else "OpenCodelists", repeats, sorted(others))


def _cp1252_ok(raw: bytes) -> bool:
    try:
        raw.decode("cp1252")
        return True
    except UnicodeDecodeError:
        return False


def write_site_file(imported: Imported, directory: Path) -> tuple[Path, int | None]:
    """Write `<directory>/<cluster>.csv` (code,term,source); returns (path, codes in the file it replaced or None)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = site_file(directory, imported.cluster)
    before = None
    if target.is_file():
        with target.open(newline="", encoding="utf-8-sig") as fh:
            before = sum(1 for _ in csv.DictReader(fh))
    source = f"{imported.publisher}:{imported.cluster}:{imported.version}"
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["code", "term", "source"])
        for code, term in imported.rows:
            w.writerow([code, term, source])
    os.replace(tmp, target)
    return target, before


def declared_clusters(protocols) -> dict[str, list]:
    """Cluster name -> [(protocol, DeclaredCluster)] over the protocols given."""
    out: dict[str, list] = {}
    for p in protocols:
        for c in p.clusters.values():
            out.setdefault(c.cluster.upper(), []).append((p, c))
    return out
