"""`carepath codelists`: site-supplied codelists for the clusters protocols declare without codes.

    carepath codelists list [--protocols DIR]
    carepath codelists import FILE --cluster NAME [--refset ID] [--publisher PCD] [--version V] [--protocols DIR]
                                   [--site-dir DIR]

The site folder is $CAREPATH_SITE_CODELISTS, else <protocols>/valuesets/site/ (engine/language/site_codelists.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=False, width=160)
err = Console(stderr=True, soft_wrap=True)
DEFAULT_PROTOCOLS = Path("protocols")


def _site(protocols: Path, site_dir: Path | None) -> Path:
    from engine.language.site_codelists import site_dir as default_site
    if site_dir is not None:
        return site_dir
    return default_site(protocols / "x.yaml" if protocols.is_dir() else protocols)


def _protocols(paths: list[Path]):
    from engine.language.library import load_library
    return load_library(paths).protocols


def register(app: typer.Typer) -> None:
    codelists = typer.Typer(help="Codelists a site supplies for clusters the protocols declare without codes.",
                            no_args_is_help=True)
    app.add_typer(codelists, name="codelists")

    @codelists.command("list")
    def list_(protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols", help="Protocol folder(s) or files"),
              format: str = typer.Option("text", "--format", help="text or json")):
        """Every declared cluster across the protocols: who declares it, whether the site supplied it, and what
        cannot be determined until it does."""
        import json

        from engine.language.codelist_import import declared_clusters
        from engine.language.determinacy import blocked_by
        found = declared_clusters(_protocols(protocols))
        rows = []
        for name in sorted(found):
            entries = found[name]
            supplied = next((c.supplied for _, c in entries if c.supplied), None)
            codes = None
            if supplied:
                p, c = next((p, c) for p, c in entries if c.supplied)
                codes = len(p.valuesets[c.valueset].codes)
            blocks = [f"{p.key}: " + (", ".join(k.replace(":", " ", 1) for k in blocked_by(p).get(name, [])) or "nothing")
                      for p, c in entries if c.missing]
            rows.append({"cluster": name, "refset": next((c.refset for _, c in entries if c.refset), None),
                         "publisher": next((c.publisher for _, c in entries if c.publisher), None),
                         "declared_by": [f"{p.key}: {c.valueset}" for p, c in entries],
                         "supplied": supplied, "codes": codes,
                         "expected_file": entries[0][1].expected_file, "blocks": blocks})
        if format == "json":
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            console.print("No declared clusters in these protocols.")
            return
        t = Table(title="Declared clusters")
        for col in ("Cluster", "Refset", "Declared by", "Supplied", "Cannot determine until supplied"):
            t.add_column(col, overflow="fold")
        for r in rows:
            state = (f"[green]yes[/]: {r['supplied']} ({r['codes']} codes)" if r["supplied"]
                     else f"[red]MISSING[/] (expected {r['expected_file']})")
            t.add_row(r["cluster"], f"{r['publisher'] or ''} {r['refset'] or ''}".strip(), "\n".join(r["declared_by"]),
                      state, "\n".join(r["blocks"]) or "—")
        console.print(t)
        missing = sum(1 for r in rows if not r["supplied"])
        console.print(f"{len(rows)} declared cluster(s): {len(rows) - missing} supplied, {missing} missing"
                      + (" (carepath codelists import FILE --cluster NAME)" if missing else ""), highlight=False)

    @codelists.command("import")
    def import_(file: Path = typer.Argument(..., help="An OpenCodelists CSV download or a PCD refset portal cluster file"),
                cluster: str = typer.Option(..., "--cluster", help="The cluster it supplies, e.g. FOOTEXAM_COD"),
                refset: Optional[str] = typer.Option(None, "--refset", help="Its refset id (checked against the file and "
                                                     "the protocols' declarations)"),
                publisher: str = typer.Option("PCD", "--publisher", help="Who publishes it (kept on every row)"),
                version: Optional[str] = typer.Option(None, "--version", help="The release (default: from the file name, "
                                                      "e.g. ...-20241205.csv)"),
                protocols: list[Path] = typer.Option([DEFAULT_PROTOCOLS], "--protocols", help="Protocol folder(s)"),
                site_dir: Optional[Path] = typer.Option(None, "--site-dir", help="Where site codelists live (default "
                                                        "$CAREPATH_SITE_CODELISTS or <protocols>/valuesets/site)")):
        """Check every code (SNOMED CT id, Verhoeff check digit) and write <site dir>/<cluster>.csv with
        code,term,source (source = PUBLISHER:CLUSTER:VERSION). A bad file is refused whole, with line numbers."""
        from engine.language.codelist_import import ImportRefused, declared_clusters, read_codelist, write_site_file
        name = cluster.strip().upper()
        if not name.replace("_", "").isalnum():
            err.print(f"--cluster {cluster!r} is not a cluster name (e.g. FOOTEXAM_COD)")
            raise typer.Exit(2)
        declared = declared_clusters(_protocols(protocols)).get(name, [])
        refsets = {c.refset for _, c in declared if c.refset}
        try:
            got = read_codelist(file, name, refset=refset, publisher=publisher, version=version)
        except ImportRefused as e:
            for line in e.problems[:50]:
                err.print(line, highlight=False, markup=False)
            if len(e.problems) > 50:
                err.print(f"... and {len(e.problems) - 50} more", highlight=False)
            err.print(f"not imported: {len(e.problems)} problem(s); nothing was written", highlight=False)
            raise typer.Exit(1) from None
        if got.refset and refsets and got.refset not in refsets:
            err.print(f"not imported: {file} is refset {got.refset}, but the protocols declare {name} as refset "
                      f"{', '.join(sorted(refsets))}", highlight=False)
            raise typer.Exit(1)
        where = _site(protocols[0], site_dir)
        target, before = write_site_file(got, where)
        console.print(f"imported {name} ({got.source_format}; {publisher} refset {got.refset or '?'}, version "
                      f"{got.version}): {len(got.rows)} codes from {file} -> {target}"
                      + (f" (replacing {before} codes)" if before is not None else ""), highlight=False)
        console.print(f"every row's source: {publisher}:{name}:{got.version}; every code a SNOMED CT id with a valid "
                      f"check digit", highlight=False)
        if got.repeats:
            console.print(f"{got.repeats} repeated row(s) of a code already read were kept once", highlight=False)
        if got.other_clusters:
            console.print(f"left out {len(got.other_clusters)} other cluster(s) in the file", highlight=False)
        if declared:
            console.print("supplies: " + ", ".join(f"{p.key} ({c.valueset})" for p, c in declared), highlight=False)
        else:
            console.print(f"note: no protocol in {', '.join(map(str, protocols))} declares {name} yet", highlight=False)
