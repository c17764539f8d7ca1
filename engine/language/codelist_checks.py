"""`carepath validate`: where a protocol's codes come from.

- A declared cluster the site has not supplied: a warning per (protocol version, cluster) naming what it
  blocks — those activities, goals, rules and measures evaluate as "cannot determine" until
  `carepath codelists import FILE --cluster NAME` supplies it. A published version that no date puts in force
  (a higher version takes effect on or before its date) gets one warning naming its missing clusters.
- The synthetic code system (https://carepath.example/CodeSystem/synthetic, made-up codes for the demo):
  an ERROR in any protocol that is not marked `demo_only: true` — with one exception, published history.
  A published file can never be edited (a change is a new version), so a published version that uses
  made-up codes cannot be fixed in place and must not make validate fail:
    * superseded (a newer active version of the protocol exists, even one taking effect later): one warning
      per version, "published history: superseded versions may keep them";
    * the newest published version (the one in force): a warning per value set saying the version in force
      uses made-up codes and the fix is a new version with published codes (`carepath draft`).
  Drafts get the error (`made_up_code_problems`), and `carepath publish` and the API's publish refuse a
  version with it (they apply the same function to the version being published, which is active by then),
  so a new version can never be published with made-up codes.
- Rows whose `source` starts with `LOCAL:` (unverified codes written by hand): a warning per value set
  (folded into the one published-history warning for superseded versions).
"""
from __future__ import annotations

import csv
from pathlib import Path

from engine.language.errors import Location, Problem

SYNTHETIC = "https://carepath.example/CodeSystem/synthetic"


def _label(key: str) -> str:
    kind, _, ident = key.partition(":")
    return f"{kind} {ident!r}" if ident else key


def _sources(path: str, cache: dict) -> dict[str, set[str]]:
    """code -> the `source` values of its rows in a CSV codelist ({} for other files)."""
    if path in cache:
        return cache[path]
    out: dict[str, set[str]] = {}
    p = Path(path)
    if p.suffix.lower() == ".csv" and p.is_file():
        try:
            with p.open(newline="", encoding="utf-8-sig") as fh:
                for row in csv.DictReader(fh):
                    code = (row.get("code") or "").strip()
                    if code:
                        out.setdefault(code, set()).add((row.get("source") or "").strip())
        except (OSError, UnicodeDecodeError, csv.Error):
            out = {}
    cache[path] = out
    return out


def _published(proto) -> bool:
    """An active version is a published one (`carepath publish` makes a draft active and records it in
    published.lock, whose check refuses any later change); a draft is not."""
    return proto.status == "active"


def codelist_findings(proto, cache: dict | None = None) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """([(value set, synthetic codes, codes)], [(value set, LOCAL codes, codes)]) of one protocol."""
    cache = {} if cache is None else cache
    synthetic, local = [], []
    for name, vs in sorted(proto.valuesets.items()):
        n = len(vs.codes)
        syn = sum(1 for system, _ in vs.codes if system == SYNTHETIC)
        if syn:
            synthetic.append((name, syn, n))
        rows = _sources(vs.source, cache)
        loc = sum(1 for _, code in vs.codes if any(s.upper().startswith("LOCAL") for s in rows.get(code, ())))
        if loc:
            local.append((name, loc, n))
    return synthetic, local


def made_up_code_problems(proto, cache: dict | None = None) -> list[Problem]:
    """Errors that refuse publishing `proto`: a value set using the synthetic code system (made-up codes) in a
    protocol not marked `demo_only: true`. The one check `carepath validate` (drafts), `carepath publish` and the
    API's publish (engine.app.protocol_store.check) apply, so no route publishes made-up codes."""
    if proto.demo_only:
        return []
    synthetic, _ = codelist_findings(proto, cache)
    return [Problem(proto.valueset_locations.get(name) or Location(proto.source, 1, 1),
                    f"{proto.key}: value set {name!r} uses the synthetic code system ({syn} of {n} codes are made up) "
                    f"in a protocol that is not marked demo_only",
                    expected="codes from a published codelist, a declared cluster "
                             "({cluster: NAME, refset: \"...\", publisher: PCD}), or demo_only: true")
            for name, syn, n in synthetic]


def missing_cluster_problems(proto) -> list[Problem]:
    from engine.language.determinacy import blocked_by
    out = []
    blocks = blocked_by(proto)
    for c in proto.missing_clusters:
        what = blocks.get(c.cluster, [])
        words = ", ".join(_label(k) for k in what) or "nothing yet (no rule uses it)"
        if "population" in what:
            words = "the register itself: the whole protocol, for everyone"
        ref = f" ({c.publisher or 'publisher?'} refset {c.refset})" if c.refset else ""
        out.append(Problem(c.location, f"{proto.key}: codelist {c.cluster}{ref} for value set {c.valueset!r} is declared "
                                       f"but not supplied (no {c.expected_file}): cannot determine {words}",
                           expected=f"carepath codelists import <OpenCodelists or PCD refset CSV> --cluster {c.cluster}",
                           severity="warning"))
    return out


def codelist_problems(lib) -> list[Problem]:
    from engine.language.model import version_key
    out: list[Problem] = []
    cache: dict = {}
    newest_active: dict[str, object] = {}
    for p in lib.protocols:
        if p.status == "active":
            cur = newest_active.get(p.id)
            if cur is None or version_key(p.version) > version_key(cur.version):
                newest_active[p.id] = p
    never = lib.never_in_force()
    for p in lib.protocols:
        if p.key in never and p.missing_clusters:  # listed under the version that is in force instead
            names = sorted({c.cluster for c in p.missing_clusters})
            out.append(Problem(Location(p.source, 1, 1),
                               f"{p.key} is never in force ({never[p.key].key} from {never[p.key].effective}): its "
                               f"{len(names)} declared codelist{'s' if len(names) > 1 else ''} not supplied ({', '.join(names)}) "
                               f"{'are' if len(names) > 1 else 'is'} not listed one by one", severity="warning"))
        else:
            out += missing_cluster_problems(p)
        synthetic, local = codelist_findings(p, cache)
        if not synthetic and not local:
            continue
        newer = newest_active.get(p.id)
        superseded = newer is not None and version_key(newer.version) > version_key(p.version)
        published = _published(p)
        if published and superseded:
            parts = []
            if synthetic:
                parts.append(f"made-up codes (synthetic code system) in {', '.join(n for n, _, _ in synthetic)}")
            if local:
                parts.append(f"unverified LOCAL codes in {', '.join(n for n, _, _ in local)}")
            out.append(Problem(Location(p.source, 1, 1),
                               f"{p.key} (published history, superseded by {newer.key} from {newer.effective}) keeps "
                               f"{'; '.join(parts)}: superseded versions may keep them", severity="warning"))
            continue
        if not published:  # a draft: refused (as carepath publish and the API's publish refuse it)
            out += made_up_code_problems(p, cache)
        for name, syn, n in synthetic if published and not p.demo_only else ():
            loc = p.valueset_locations.get(name) or Location(p.source, 1, 1)
            msg = f"{p.key}: value set {name!r} uses the synthetic code system ({syn} of {n} codes are made up)"
            out.append(Problem(loc, msg + ": the published version in force evaluates real patients with "
                                          "made-up codes (a published file is never edited)",
                               expected=f"a new version with published codes (carepath draft {p.source})",
                               severity="warning"))
        for name, n_local, n in local:
            loc = p.valueset_locations.get(name) or Location(p.source, 1, 1)
            out.append(Problem(loc, f"{p.key}: value set {name!r} has {n_local} of {n} codes from a LOCAL: source "
                                    f"(unverified, not a published list)",
                               expected="a published codelist, or a declared cluster the site supplies",
                               severity="warning"))
    return out
