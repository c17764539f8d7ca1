"""Where bulk NDJSON comes from (issue 17): gzipped files and FHIR Bulk Data `$export` manifests.

- `*.ndjson.gz`: a gzip-compressed NDJSON file (as many `$export` servers and SFTP drops deliver
  them). The load reads each patient's lines back by byte offset, which a gzip stream cannot do
  cheaply, so `plain_copies` decompresses each one once, streamed (64 KiB at a time, memory flat),
  into the run's temporary folder beside its index, and the load reads the copy. The file's name,
  size and SHA-256 stay those of the `.gz` file (the run's fingerprint, the report's file names);
  line numbers are those of the decompressed text. A damaged gzip file stops the run with its name
  (BulkError); the run stays resumable once a good file is given.
- A `$export` manifest (the JSON a Bulk Data server returns when an export is complete,
  https://hl7.org/fhir/uv/bulkdata/export.html#response---complete-status):
  `{"transactionTime": ..., "request": ..., "requiresAccessToken": ..., "output": [{"type": "Patient",
  "url": "file:///exports/2027-01-10/Patient.ndjson"}, ...], "error": [...]}`. Only local files:
  `file://` URLs or paths relative to the manifest's folder. carepath does not download: an `http(s)`
  URL is refused, saying so (fetch the files, then point the manifest's URLs at them). The `error`
  entries (OperationOutcome files of the server's own failures) are not loaded.
  Through the service (`POST /ingest/bulk/manifest`, api/bulk_ingest.py) the files must lie inside one
  configured folder (`manifest_targets(..., within=)`): relative paths are taken from it, and a path
  that leaves it (`..`, a symbolic link, another absolute path) is refused — the service never
  fetches a URL and reads nothing else on the machine for a caller.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import zlib
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

SUFFIXES = (".ndjson", ".ndjson.gz")


def is_ndjson_name(name: str) -> bool:
    return name.endswith(SUFFIXES)


def is_gzip_name(name: str) -> bool:
    return name.endswith(".gz")


def plain_copies(files: list, folder: Path, error=ValueError) -> list:
    """The files with every `.ndjson.gz` replaced by its decompressed copy in `folder` (name, size and
    SHA-256 kept: they describe what was delivered)."""
    out = []
    for i, f in enumerate(files):
        if not is_gzip_name(f.name):
            out.append(f)
            continue
        target = Path(folder) / f"{i:04d}-{f.name[:-3]}"
        try:
            with gzip.open(f.path, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 16)
        except (OSError, EOFError, zlib.error) as e:
            raise error(f"{f.name}: not a readable gzip file ({e})") from e
        out.append(replace(f, path=target))
    return out


def is_manifest(path: Path) -> bool:
    return Path(path).is_file() and Path(path).name.endswith(".json")


def manifest_files(path: Path, error=ValueError) -> list[Path]:
    """The local NDJSON files a `$export` manifest file's `output` names (module doc): `file://` URLs
    or paths relative to the manifest's folder (the command line: whoever runs it may read them)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{path}: not a readable $export manifest ({e})") from e
    return manifest_targets(data, str(path), path.parent, error)


def manifest_targets(data, where: str, base: Path, error=ValueError, *, within: Path | None = None) -> list[Path]:
    """The NDJSON files a parsed `$export` manifest's `output` names; relative paths are taken from
    `base`. With `within` (the service, api/bulk_ingest.py), every file must be a regular file inside
    that folder once `..` and symbolic links are resolved: a path outside it is refused before the
    file system is asked about it (so the answer says nothing about files elsewhere)."""
    outputs = data.get("output") if isinstance(data, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise error(f"{where}: a $export manifest needs an `output` list of {{type, url}} (FHIR Bulk Data)")
    if within is not None:
        try:
            real_root = Path(within).resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise error(f"the folder for $export files ({within}) cannot be read") from e
        roots = (Path(os.path.abspath(within)), real_root)
    found: list[Path] = []
    for i, item in enumerate(outputs):
        here = f"{where}: output[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not isinstance(item.get("type"), str):
            raise error(f"{here}: expected {{\"type\": \"Patient\", \"url\": \"file:///.../Patient.ndjson\"}}")
        try:
            item["url"].encode("utf-8")
        except UnicodeEncodeError:
            raise error(f"{here}: the url is not valid text (a lone surrogate)") from None
        shown = item["url"][:300]
        url = urlparse(item["url"])
        if url.scheme in ("http", "https"):
            raise error(f"{here}: {shown} is a remote URL; carepath reads local files only: download the "
                        "export's files and give their file:// URLs (or paths relative to the manifest)")
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise error(f"{here}: {shown}: a file URL on another host ({url.netloc[:100]})")
            target = Path(unquote(url.path))
        elif url.scheme == "":
            target = Path(unquote(item["url"]))
        else:
            raise error(f"{here}: {shown}: only file:// URLs or relative paths")
        target = target if target.is_absolute() else Path(base) / target
        if not is_ndjson_name(target.name):
            raise error(f"{here}: {target.name[:200]}: expected an NDJSON file ({' or '.join(SUFFIXES)})")
        if "\x00" in str(target):
            raise error(f"{here}: {shown!r}: not a file name")
        if within is not None:
            target = _confined(target, roots, real_root, f"{here}: {shown}", error)
        elif not target.is_file():
            raise error(f"{here}: {target}: no such file")
        found.append(target)
    return found


def _confined(target: Path, roots: tuple, real_root: Path, where: str, error) -> Path:
    outside = f"{where}: not inside the folder this service reads $export files from"
    lexical = Path(os.path.normpath(target))
    if not any(lexical.is_relative_to(r) for r in roots):
        raise error(outside)
    try:
        real = lexical.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # ValueError: a name the file system cannot encode
        raise error(f"{where}: no such file") from None
    if not real.is_relative_to(real_root):
        raise error(outside)  # a symbolic link out of the folder
    try:
        regular = stat.S_ISREG(real.stat().st_mode)
    except OSError:
        regular = False
    if not regular:
        raise error(f"{where}: not a regular file")
    return real
