"""Value sets: which codes mean a concept. Loaded from CSV codelists or FHIR ValueSet expansions.

CSV codelists (OpenCodelists / NHS PCD style) have a header with a `code` column (and usually
`term`); the code system is declared by the protocol (snomed by default). An optional filter picks
rows by another column (e.g. `severity: moderate,severe` in frailty_cod.csv). FHIR ValueSet JSON
files carry their systems in `expansion.contains`. QOF semantics: exact membership, no hierarchy.

Two further forms:
- `kind: medication` (alone) is every fact of that kind, whatever its code (e.g. all prescriptions, to
  count distinct medicines); with a codelist it narrows the codelist to facts of that kind.
- Extra CSV columns (besides code / term / source) are the codes' *properties*, e.g. the `deficit`
  column of efi_deficits_snomed.csv: `count(distinct deficit of efi_deficit)` counts the different
  deficits. A code listed on several rows has every value given on them.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.records.model import Coding, canonical_system
from engine.language.valueset_words import source_cluster


@dataclass(frozen=True)
class ValueSet:
    name: str
    source: str  # file it came from, for provenance
    codes: frozenset[tuple[str, str]]  # (system, code)
    terms: dict = field(default_factory=dict, compare=False, hash=False)
    unit: str | None = None
    analyte: str | None = None
    any_system: bool = False  # match on code alone (for codelists whose system is unknown)
    kinds: frozenset[str] = frozenset()  # only facts of these kinds (empty: any kind)
    any_code: bool = False  # every fact (of `kinds`) matches, whatever its code
    properties: dict = field(default_factory=dict, compare=False, hash=False)  # (system, code) -> {column: (values)}
    columns: tuple[str, ...] = ()  # the property columns the codelist has
    # FHIR expansion.total when the file holds fewer entries than that (a truncated expansion), else None
    expansion_total: int | None = field(default=None, compare=False, hash=False)
    # the clusters its codes come from (the `source` column's PUBLISHER:CLUSTER:VERSION): its words in why-lines
    clusters: frozenset[str] = field(default=frozenset(), compare=False, hash=False)

    def matches(self, codings: list[Coding]) -> Coding | None:
        if self.any_code:
            return codings[0] if codings else None
        for c in codings:
            if (c.system, c.code) in self.codes or (self.any_system and ("", c.code) in self.codes):
                return c
        return None

    def matches_fact(self, fact) -> Coding | None:
        """The coding by which a fact is in this value set (its first matching coding), or None."""
        if self.kinds and fact.kind.value not in self.kinds:
            return None
        return self.matches(fact.codes)

    def key_values(self, coding: Coding, key: str) -> tuple[str, ...]:
        """The values of `key` for a matching coding: 'code' -> system|code; a property column -> its values."""
        if key == "code":
            return (f"{coding.system}|{coding.code}",)
        return tuple(self.properties.get((coding.system, coding.code), {}).get(key, ()))

    def with_options(self, unit: str | None = None, analyte: str | None = None,
                     kinds: frozenset[str] = frozenset()) -> "ValueSet":
        from dataclasses import replace
        return replace(self, unit=unit, analyte=analyte, kinds=kinds or self.kinds)

    def __len__(self) -> int:
        return len(self.codes)


class ValueSetIndex:
    """Which of a set of value sets each fact is in, by one dictionary lookup per coding: `names(fact)` is
    exactly `{name for name, vs in valuesets.items() if vs.matches_fact(fact) is not None}` (a record's
    facts times a protocol's value sets `matches_fact` calls was the largest part of deriving; issue 17, P2)."""

    def __init__(self, valuesets: dict[str, "ValueSet"]):
        self.exact: dict[tuple[str, str], list[str]] = {}  # (system, code) -> the value sets listing it
        self.bare: dict[str, list[str]] = {}  # code -> the value sets matching it in any system (`any_system`)
        self.any_code: list[str] = []  # value sets every coded fact is in (`any_code`)
        self.kinds = {name: vs.kinds for name, vs in valuesets.items() if vs.kinds}  # only facts of these kinds
        for name, vs in valuesets.items():
            if vs.any_code:
                self.any_code.append(name)
                continue
            for key in vs.codes:
                self.exact.setdefault(key, []).append(name)
                if vs.any_system and key[0] == "":
                    self.bare.setdefault(key[1], []).append(name)

    def names(self, fact) -> set[str]:
        if not fact.codes:
            return set()
        out = set(self.any_code)
        exact, bare = self.exact, self.bare
        for c in fact.codes:
            got = exact.get((c.system, c.code))
            if got:
                out.update(got)
            got = bare.get(c.code)
            if got:
                out.update(got)
        if out and self.kinds:
            kind = fact.kind.value
            out = {name for name in out if name not in self.kinds or kind in self.kinds[name]}
        return out


class ValueSetFileError(ValueError):
    pass


def _cell_in(cell: str, wanted: list[str]) -> bool:
    """A `where` filter value matches a cell exactly, or by prefix when it ends in `*`
    (`bnf_code: ["020202*"]`: every BNF code in section 2.2.2, the loop diuretics)."""
    return any(cell.startswith(w[:-1]) if w.endswith("*") else cell == w for w in wanted)


def load_csv(path: Path, name: str, system: str = "snomed", column: str = "code",
             where: dict[str, list[str]] | None = None, require_source: bool = False) -> ValueSet:
    codes, terms, props, clusters = set(), {}, {}, set()
    sysuri = canonical_system(system)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueSetFileError(f"{path}: no {column!r} column (columns: {', '.join(reader.fieldnames or [])})")
        if require_source and "source" not in reader.fieldnames:
            raise ValueSetFileError(f"{path}: no 'source' column (each row's provenance, PUBLISHER:CLUSTER:VERSION)")
        for k in (where or {}):
            if k not in reader.fieldnames:
                raise ValueSetFileError(f"{path}: no {k!r} column to filter on (columns: {', '.join(reader.fieldnames)})")
        extra = [c for c in reader.fieldnames if c not in (column, "term", "description", "display", "source")]
        for i, row in enumerate(reader, start=2):
            code = (row.get(column) or "").strip()
            if not code:
                raise ValueSetFileError(f"{path}:{i}: empty code")
            if require_source and not (row.get("source") or "").strip():
                raise ValueSetFileError(f"{path}:{i}: code {code} has no source (PUBLISHER:CLUSTER:VERSION)")
            if where and not all(_cell_in((row.get(k) or "").strip(), v) for k, v in where.items()):
                continue
            codes.add((sysuri, code))
            cluster = source_cluster(row.get("source") or "")
            if cluster:
                clusters.add(cluster)
            term = row.get("term") or row.get("description") or row.get("display")
            if term:
                terms[(sysuri, code)] = term
            mine = props.setdefault((sysuri, code), {})
            for col in extra:
                v = (row.get(col) or "").strip()
                if v and v not in mine.get(col, ()):
                    mine[col] = mine.get(col, ()) + (v,)
    if not codes:
        raise ValueSetFileError(f"{path}: no codes selected")
    return ValueSet(name, str(path), frozenset(codes), terms, properties=props, columns=tuple(extra),
                    clusters=frozenset(clusters))


def load_fhir_valueset(path: Path, name: str) -> ValueSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueSetFileError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    if data.get("resourceType") != "ValueSet":
        raise ValueSetFileError(f"{path}: not a FHIR ValueSet (resourceType {data.get('resourceType')!r})")
    contains = (data.get("expansion") or {}).get("contains")
    if not contains:
        raise ValueSetFileError(f"{path}: ValueSet has no expansion.contains (only expanded value sets are supported)")
    codes, terms = set(), {}
    n_items = [0]

    def add(items):
        for c in items:
            n_items[0] += 1
            if "code" in c:
                key = (canonical_system(c.get("system")), c["code"])
                codes.add(key)
                if c.get("display"):
                    terms[key] = c["display"]
            add(c.get("contains", []))

    add(contains)
    total = (data.get("expansion") or {}).get("total")
    truncated = isinstance(total, int) and not isinstance(total, bool) and total > n_items[0]
    return ValueSet(name, str(path), frozenset(codes), terms, expansion_total=total if truncated else None)


def inline(name: str, codes: list[tuple[str, str]], source: str) -> ValueSet:
    return ValueSet(name, source, frozenset((canonical_system(s), c) for s, c in codes))


def any_code_of_kind(name: str, kinds: frozenset[str], source: str) -> ValueSet:
    """Every fact of the given kinds, whatever its code (`kind: medication` with no codelist)."""
    return ValueSet(name, source, frozenset(), kinds=kinds, any_code=True)
