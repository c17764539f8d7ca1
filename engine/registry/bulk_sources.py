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
"""
from __future__ import annotations

import gzip
import json
import shutil
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
    """The local NDJSON files a `$export` manifest's `output` names (module doc)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise error(f"{path}: not a readable $export manifest ({e})") from e
    outputs = data.get("output") if isinstance(data, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise error(f"{path}: a $export manifest needs an `output` list of {{type, url}} (FHIR Bulk Data)")
    found: list[Path] = []
    for i, item in enumerate(outputs):
        where = f"{path}: output[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not isinstance(item.get("type"), str):
            raise error(f"{where}: expected {{\"type\": \"Patient\", \"url\": \"file:///.../Patient.ndjson\"}}")
        url = urlparse(item["url"])
        if url.scheme in ("http", "https"):
            raise error(f"{where}: {item['url']} is a remote URL; carepath reads local files only: download the "
                        "export's files and give their file:// URLs (or paths relative to the manifest)")
        if url.scheme == "file":
            if url.netloc not in ("", "localhost"):
                raise error(f"{where}: {item['url']}: a file URL on another host ({url.netloc})")
            target = Path(unquote(url.path))
        elif url.scheme == "":
            target = Path(unquote(item["url"]))
            target = target if target.is_absolute() else path.parent / target
        else:
            raise error(f"{where}: {item['url']}: only file:// URLs or relative paths")
        if not is_ndjson_name(target.name):
            raise error(f"{where}: {target.name}: expected an NDJSON file ({' or '.join(SUFFIXES)})")
        if not target.is_file():
            raise error(f"{where}: {target}: no such file")
        found.append(target)
    return found
