"""The publication record of a protocols folder (`published.lock`): which versions are published, with the
sha256 of their text. Written by `carepath publish`; read by validate, the shared-definitions check and publish."""
from __future__ import annotations

from pathlib import Path

MANIFEST = "published.lock"


def find_manifest(path: Path) -> Path | None:
    """The publication record for a protocols folder: `published.lock` in the folder or one above it."""
    path = Path(path).resolve()
    start = path if path.is_dir() else path.parent
    for d in (start, *list(start.parents)[:2]):
        if (d / MANIFEST).is_file():
            return d / MANIFEST
    return None


def read_manifest(manifest: Path) -> dict[str, dict]:
    from ruamel.yaml import YAML
    data = YAML(typ="safe").load(manifest.read_text(encoding="utf-8")) or {}
    return {str(k): dict(v or {}) for k, v in data.items()}
