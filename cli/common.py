"""What every command group shares: the consoles, the default protocol folder, loading the library."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from engine.language.library import Library, load_library

console = Console(soft_wrap=False, width=140)
err = Console(stderr=True, soft_wrap=True)

DEFAULT_PROTOCOLS = Path("protocols")


def _library(paths: list[Path]) -> Library:
    lib = load_library(paths)
    if lib.errors:
        for p in lib.errors:
            err.print(f"[red]{p}[/red]", markup=True, highlight=False)
        raise typer.Exit(2)
    return lib
