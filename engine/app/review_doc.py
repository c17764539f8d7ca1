"""A protocol as a clinical review document a GP can sign off (issue 13 item 9), used by `carepath docs`.

On top of the clinical summary (engine/app/docs.py: every rule, activity, goal and measure in words), it adds:
- every threshold (a value, count or age compared with a number), with the rule / activity / goal / measure it
  decides and that element's guideline reference (`because:` / `evidence:`); thresholds inside definitions are
  listed under each element that uses the definition;
- every codelist with its provenance: the `source` column of the shipped CSV (PUBLISHER:CLUSTER:VERSION), how
  many codes the protocol takes from it, and a warning for unverified (`LOCAL:unverified`) or made-up
  (`SYNTHETIC`) rows;
- every declared cluster that is not supplied, with what it blocks ("cannot determine");
- a sign-off block (reviewer, role, date, version and content hash).
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

from engine.app.docs import display_unit, plain, render, tidy
from engine.ir.words import identifier_words
from engine.ir import nodes as ir

OPS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}


@lru_cache(maxsize=None)
def _csv_sources(path: str) -> dict[str, tuple[str, ...]]:
    """code -> the rows' `source`s of a shipped codelist CSV (empty when the file has no such column)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".csv":
        return {}
    out: dict[str, tuple[str, ...]] = {}
    with p.open(newline="", encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            code, src = (r.get("code") or "").strip(), (r.get("source") or "").strip()
            if src not in out.get(code, ()):
                out[code] = out.get(code, ()) + (src,)
    return out


def provenance(vs) -> list[tuple[str, int]]:
    """(source, number of the value set's codes from it), most codes first."""
    sources = _csv_sources(vs.source)
    # a code in several rows (one cluster file holding several clusters) counts under the source most of the
    # value set's codes share
    common: dict[str, int] = {}
    for _, code in vs.codes:
        for src in sources.get(code, ()):
            common[src] = common.get(src, 0) + 1
    counts: dict[str, int] = {}
    for _, code in vs.codes:
        srcs = [x for x in sources.get(code, ()) if x] or ["(no source column)"]
        src = max(srcs, key=lambda x: common.get(x, 0))
        counts[src] = counts.get(src, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _number_const(n) -> ir.Const | None:
    n = ir.unwrap(n)
    return n if isinstance(n, ir.Const) and n.type == ir.NUMBER else None


def thresholds(node, definitions: dict | None = None) -> list[tuple[str, str]]:
    """(threshold in words, definition it sits in or '') of every numeric comparison under `node`."""
    out: list[tuple[str, str]] = []
    seen: set = set()

    def visit(n, via: str):
        key = (id(n), via)
        if key in seen:
            return
        seen.add(key)
        if isinstance(n, ir.Named):
            visit(n.node, n.label or n.name)
            return
        if isinstance(n, ir.Compare):
            c = _number_const(n.right)
            if c is not None:
                text = tidy(f"{ir.describe(n.left)} {OPS[n.op]} {ir.format_const(c)}")
                if (text, via) not in out:
                    out.append((text, via))
        for ch in ir.children(n):
            visit(ch, via)

    visit(node, "")
    return out


def _elements(p):
    """(heading, condition keys, because / evidence) of every element a clinician signs off."""
    for a in p.activities:
        keys = [f"activity:{a.id}:{part}" for part in ("done", "applies", "excepted")]
        yield f"Activity: {a.title}", keys, a.because, a.evidence
    for g in p.goals:
        yield f"Goal: {g.title}", [f"goal:{g.id}:applies", f"goal:{g.id}:met"], g.because, []
    for r in p.rules:
        yield f"Rule: {r.title}", [f"rule:{r.id}"], r.because, r.evidence
    for m in p.measures:
        yield f"Measure {m.id}: {m.title}", [f"measure:{m.id}:{s}" for s in ("den", "excl", "exc", "num")], None, m.evidence
    for t in p.tiers:
        yield f"Tier {t.level}: {t.title}", [f"tier:{t.id}"], t.because, t.evidence
    for s in p.segments:
        yield f"Segment: {s.title}", [f"segment:{s.id}"], s.because, []


def review_sections(p) -> str:
    out: list[str] = []
    w = out.append
    conds = p.all_conditions
    w("## Clinical review")
    w("")
    w("Every threshold below decides the line it is listed under; the reference is that line's `because:` / "
      "evidence in the protocol. A line with no reference is a finding for the reviewer.")
    w("")
    w("### Thresholds and their guideline references")
    w("")
    w("| Where | Thresholds (the definition each sits in) | Guideline reference |")
    w("|---|---|---|")
    pop = conds.get("population")
    if pop is not None:
        found = thresholds(pop)
        if found:
            cell = "<br>".join(text + (f" ({identifier_words(via)})" if via else "") for text, via in found)
            w(f"| Register | {cell} | {'; '.join(p.evidence) or '**none given**'} |")
    missing_refs = []
    for heading, keys, because, evidence in _elements(p):
        found: list[tuple[str, str]] = []
        for k in keys:
            node = conds.get(k)
            if node is None:
                continue
            for t in thresholds(node):
                if t not in found:
                    found.append(t)
        ref = "; ".join(x for x in [because or ""] + list(evidence or []) if x)
        if found and not ref:
            missing_refs.append(heading)
        if found:
            cell = "<br>".join(text + (f" ({identifier_words(via)})" if via else "") for text, via in found)
            w(f"| {heading} | {cell} | {ref.replace('|', '/') or '**none given**'} |")
    w("")
    if missing_refs:
        w("Thresholds without a guideline reference: " + "; ".join(missing_refs) + ".")
        w("")
    w("### Rules in words")
    w("")
    for r in p.rules:
        w(f"- **{r.title}** — when {tidy(plain(conds[f'rule:{r.id}']))}; because: {r.because or '**none given**'}"
          + (f" ({'; '.join(r.evidence)})" if r.evidence else ""))
    if not p.rules:
        w("- (no rules)")
    w("")
    w("### Codelists and their provenance")
    w("")
    w("| Value set | Codes | Kind / unit | Source (publisher : cluster : version) | Status |")
    w("|---|---|---|---|---|")
    unverified = []
    for name, vs in sorted(p.valuesets.items()):
        if name in p.clusters:
            c = p.clusters[name]
            status = f"declared; supplied ({c.supplied})" if c.supplied else "declared, **not supplied**"
            w(f"| {name.replace('_', ' ')} | {len(vs)} | | {c.publisher or ''}:{c.cluster}"
              + (f" (refset {c.refset})" if c.refset else "") + f" | {status} |")
            continue
        if vs.any_code:
            w(f"| {name.replace('_', ' ')} | every {'/'.join(sorted(vs.kinds))} record | | (no codelist) | |")
            continue
        kind = "/".join(sorted(vs.kinds))
        unit = display_unit(vs.unit)
        srcs = provenance(vs)
        bad = [s for s, _ in srcs if s.startswith(("LOCAL:unverified", "SYNTHETIC")) or s == "(no source column)"]
        if bad:
            unverified.append(name)
        text = "; ".join(f"{s} ({n})" for s, n in srcs) if len(srcs) > 1 else (srcs[0][0] if srcs else "(empty)")
        status = "**unverified or made-up codes**" if bad else "published"
        w(f"| {name.replace('_', ' ')} | {len(vs)} from {Path(vs.source).name} | {', '.join(x for x in (kind, unit) if x)} "
          f"| {text} | {status} |")
    w("")
    if unverified:
        w("**Not from a published list:** " + ", ".join(identifier_words(n) for n in unverified)
          + ". Do not sign off before these are replaced.")
        w("")
    missing = p.missing_clusters
    w("### Codelists not supplied (cannot determine)")
    w("")
    if missing:
        from engine.language.determinacy import blocked_by
        blocks = blocked_by(p)
        by_cluster: dict[str, list] = {}
        for c in missing:
            by_cluster.setdefault(c.cluster, []).append(c)
        for cluster, cs in by_cluster.items():
            c = cs[0]
            what = ", ".join(k.replace(":", " ", 1) for k in blocks.get(cluster, [])) or "nothing yet"
            names = ", ".join(identifier_words(x.valueset) for x in cs)
            w(f"- {c.publisher or ''} {cluster}" + (f" (refset {c.refset})" if c.refset else "")
              + f" (value sets: {names}): cannot determine {what}")
    else:
        w("- none: every declared cluster is supplied")
    w("")
    w("### Sign-off")
    w("")
    w(f"Protocol `{p.id}` version **{p.version}**, effective {p.effective}, content hash `{p.content_hash[:16]}`.")
    w("")
    w("I have reviewed every rule, threshold and codelist above against the guidelines cited.")
    w("")
    w("| | |")
    w("|---|---|")
    w("| Reviewer (name, GMC / NMC / GPhC number) | |")
    w("| Role | |")
    w("| Date | |")
    w(f"| Version reviewed | {p.version} |")
    w("| Signature | |")
    w("| Changes requested (none / list) | |")
    w("")
    return "\n".join(out)


def render_review(proto, agreements=(), in_force: bool | None = None) -> str:
    """The clinical summary (docs.render) followed by the review sections and the sign-off block."""
    return render(proto, agreements, in_force).rstrip("\n") + "\n\n" + review_sections(proto)
