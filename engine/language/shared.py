"""Shared definitions: value sets and definitions written once, versioned, used by several protocols.

A shared-definitions file lives in the `shared/` folder of a protocol library, one file per version,
named `<id>@<version>.yaml`:

    shared: efi                        # its id (letters, digits, '-' and '_'; used as the prefix)
    version: 1.0.0
    title: Electronic frailty index (eFI)
    owner: Frailty and care of the elderly network
    evidence: ["Clegg A et al. Age Ageing 2016"]
    description: ...                   # optional
    valuesets: {deficit_code: {codelist: efi_deficits_snomed.csv}, ...}
    define: {score: ..., severe: ...}

A protocol pins the exact versions it uses:

    uses: [efi@1.0.0]

and names what the file defines with the file's id as a prefix: `efi.severe`, `latest(efi.deficit_code)`,
`x where code in efi.vaccine_product`. Inside the shared file its own names are written without the
prefix. Nothing else of the file is visible, and it cannot see the protocol's names (it is compiled on
its own, so its meaning is the same in every protocol that uses it).

At load time the file is compiled once and *expanded into the protocol*: its value sets and definitions
join the protocol's under the prefixed names (`efi.deficit_code`, `efi.severe`), so every engine sees one
protocol IR and needs no change. A published protocol pins an exact version, and the shared file is
published in `published.lock` like a protocol (key `shared/<id>@<version>`): a published protocol's
meaning never changes. A new version of the definitions is a new file (`efi@1.1.0.yaml`) that protocols
adopt in their own new versions.

Errors (file:line:column, at the `uses:` item): no version (`efi`), an unknown shared file, an unknown
version (with the versions on file), the same file used twice, and a name clash between the prefix and a
value set or definition of the protocol. Errors inside the shared file are reported at their own line
in the shared file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.ir import nodes as ir
from engine.language.errors import Location, Problem, Problems, ProtocolError, suggest
from engine.language.yamlsrc import SEMVER, Node, Reader, read_yaml

FOLDER = "shared"
TOP = {"shared": True, "version": True, "title": True, "owner": True, "evidence": True, "description": False,
       "valuesets": False, "define": True}
USE = re.compile(r"^(?P<id>[A-Za-z0-9_-]+)@(?P<version>\S+)$")
ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class SharedFile:
    """One version of a shared-definitions file, compiled on its own (names without the prefix)."""

    id: str
    version: str
    title: str
    owner: str
    evidence: list[str]
    source: str
    content_hash: str
    description: str | None = None
    valuesets: dict = field(default_factory=dict)  # name -> ValueSet
    decls: dict = field(default_factory=dict)  # name -> ValueSetDecl (declared clusters included)
    definitions: dict = field(default_factory=dict)  # name -> ir node
    extras: dict = field(default_factory=dict)  # other per-name compiler tables (declared clusters, labels)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Its key in published.lock."""
        return f"{FOLDER}/{self.id}@{self.version}"

    @property
    def use(self) -> str:
        return f"{self.id}@{self.version}"


@dataclass(frozen=True)
class Use:
    """A protocol's `uses:` item, resolved: the prefix, the pinned version and the file."""

    id: str
    version: str
    source: str
    content_hash: str
    location: Location

    @property
    def key(self) -> str:
        return f"{FOLDER}/{self.id}@{self.version}"


# ---- loading a shared file -------------------------------------------------------------------------
_CACHE: dict[tuple[str, str], SharedFile | ProtocolError] = {}


def load_shared(path: str | Path) -> SharedFile:
    """Compile a shared-definitions file on its own; ProtocolError with every problem if it has errors.
    Compiled once per content (a library loads it once however many protocols use it)."""
    path = Path(path)
    raw = path.read_bytes()
    key = (str(path.resolve()), hashlib.sha256(raw).hexdigest())
    got = _CACHE.get(key)
    if got is None:
        try:
            got = _compile(path)
        except ProtocolError as e:
            got = e
        if not (isinstance(got, SharedFile) and got.extras.get("clusters")):  # a site may supply a cluster later
            _CACHE[key] = got
    if isinstance(got, ProtocolError):
        raise got
    return got


def _compile(path: Path) -> SharedFile:
    _SharedCompiler = _shared_compiler_class()  # the protocol compiler, for value sets and definitions
    problems = Problems()
    data, raw = read_yaml(path)
    r = Reader(path, problems)
    top = r.mapping(data, Location(str(path), 1, 1), "the shared definitions file", TOP)
    if top is None:
        problems.raise_if_errors()
    if "uses" in top:  # reported by mapping() as an unknown field; say why
        problems.error(r.key_loc(top, "uses"), "a shared definitions file cannot use another one",
                       expected="the definitions written out here")
    sid = r.text(top, "shared", "the shared definitions id")
    if sid is not None and not ID.match(sid):
        problems.error(r.loc_of(top, "shared"), f"shared definitions id {sid!r} should be lower_case_with_underscores "
                       f"(it is the prefix protocols write, e.g. {sid.lower().replace('-', '_')}.score)")
    version = r.version(top)
    expected_name = f"{sid}@{version}.yaml"
    if sid and version and path.name not in (expected_name, expected_name[:-5] + ".yml"):
        problems.error(Location(str(path), 1, 1), f"a shared definitions file is named <id>@<version>.yaml; "
                       f"this one says {sid} {version}", expected=expected_name)
    evidence = r.text_list(top, "evidence", "evidence")
    if "evidence" in top and not evidence:
        problems.error(r.loc_of(top, "evidence"), "shared definitions need at least one evidence reference")
    c = _SharedCompiler(path, raw, top, r, problems, [path.parent.parent / "valuesets"])
    c.load_valuesets()
    c.load_definitions()
    problems.raise_if_errors()
    extras = {k: dict(getattr(c, k)) for k in ("clusters", "labels") if isinstance(getattr(c, k, None), dict)}
    return SharedFile(id=sid, version=version, title=r.text(top, "title", "title"), owner=r.text(top, "owner", "owner"),
                      evidence=evidence, source=str(path), content_hash=hashlib.sha256(raw).hexdigest(),
                      description=r.text(top, "description", "description"), valuesets=dict(c.valuesets),
                      decls=dict(c.decls), definitions=dict(c.definitions), extras=extras, warnings=problems.warnings)


_BASE_COMPILER = None  # the protocol compiler: engine/language/loader.py registers it (no import cycle)


def register_compiler(cls) -> None:
    global _BASE_COMPILER
    _BASE_COMPILER = cls


def _shared_compiler_class():
    if _BASE_COMPILER is None:  # pragma: no cover - importing engine.language.loader registers it
        raise RuntimeError("import engine.language.loader before compiling shared definitions")

    class SharedCompiler(_BASE_COMPILER):
        """The protocol compiler, for a file in <library>/shared/: a declared cluster is looked for where
        the library's protocols look (<library>/valuesets/site/, or $CAREPATH_SITE_CODELISTS)."""

        def _declared_cluster(self, name, vm, loc):
            real = self.path
            self.path = real.parent.parent / real.name
            try:
                return super()._declared_cluster(name, vm, loc)
            finally:
                self.path = real

    return SharedCompiler


# ---- finding the file a protocol names ------------------------------------------------------------
def search_dirs(protocol_path: Path) -> list[Path]:
    """Where `uses:` looks: the `shared/` folder beside the protocol, then in the two folders above it
    (a protocol in protocols/ecqm/ finds protocols/shared/)."""
    start = Path(protocol_path).resolve().parent
    return [d / FOLDER for d in (start, *list(start.parents)[:2])]


def available(protocol_path: Path) -> dict[str, dict[str, Path]]:
    """id -> version -> file, for the shared files a protocol could use (nearest folder first)."""
    out: dict[str, dict[str, Path]] = {}
    for d in search_dirs(protocol_path):
        if not d.is_dir():
            continue
        for f in sorted(d.glob("*@*.y*ml")):
            m = USE.match(f.name.rsplit(".", 1)[0])
            if m:
                out.setdefault(m["id"], {}).setdefault(m["version"], f)
    return out


# ---- expanding `uses:` into a protocol ------------------------------------------------------------
def expand_uses(c) -> list[Use]:
    """Read the protocol's `uses:` and add each shared file's value sets and definitions to the compiler
    `c` (engine/language/loader.py _Compiler) under prefixed names. Call after the protocol's own value
    sets are loaded and before its definitions are compiled."""
    node = c.r.get(c.top, "uses")
    if node is None:
        return []
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    items = node.value
    if isinstance(items, str):
        items = [items]
        locs = [node.loc]
    elif isinstance(items, CommentedSeq):
        locs = [c.r.loc_of(items, i) for i in range(len(items))]
    else:
        c.p.error(node.loc, "uses should be a list of shared definitions with their version",
                  expected="e.g. uses: [efi@1.0.0]")
        return []
    own = _own_names(c)
    found = available(c.path)
    used: dict[str, Use] = {}
    for item, loc in zip(items, locs):
        if isinstance(item, CommentedMap) or not isinstance(item, str):
            c.p.error(loc, f"uses: {item!r} is not a shared definitions file with its version",
                      expected="<id>@<version>, e.g. efi@1.0.0")
            continue
        text = item.strip()
        m = USE.match(text)
        if m is None:
            versions = sorted(found.get(text, {}))
            c.p.error(loc, f"uses: {text!r} needs the exact version it pins (a published protocol's meaning "
                           f"never changes)", expected=f"{text}@<version>" + (f", e.g. {text}@{versions[-1]}" if versions else ""))
            continue
        sid, version = m["id"], m["version"]
        if not SEMVER.match(version):
            c.p.error(loc, f"uses: version {version!r} of {sid} is not a semantic version", expected="MAJOR.MINOR.PATCH")
            continue
        if sid not in found:
            where = ", ".join(str(d) for d in search_dirs(c.path)[:1])
            c.p.error(loc, f"uses: unknown shared definitions {sid!r} (no {sid}@<version>.yaml under {where})",
                      expected=", ".join(sorted(found)) or "a file shared/<id>@<version>.yaml",
                      suggestion=suggest(sid, found))
            continue
        if version not in found[sid]:
            c.p.error(loc, f"uses: {sid} has no version {version}",
                      expected="one of " + ", ".join(sorted(found[sid], key=_vkey)),
                      suggestion=suggest(version, found[sid]))
            continue
        if sid in used:
            c.p.error(loc, f"uses: {sid} is used twice ({used[sid].id}@{used[sid].version} at line "
                           f"{used[sid].location.line}); a protocol uses one version of each")
            continue
        if sid in own:
            kind, oloc = own[sid]
            c.p.error(loc, f"uses: name clash: {sid!r} is also a {kind} of this protocol (line {oloc.line}), so "
                           f"'{sid}.<name>' would be ambiguous", expected=f"another name for the {kind}")
            continue
        path = found[sid][version]
        try:
            sf = load_shared(path)
        except ProtocolError as e:
            for p in e.problems:
                c.p.items.append(p)
            c.p.error(loc, f"uses: {sid}@{version} has errors (above, in {path})")
            continue
        if sf.id != sid or sf.version != version:
            continue  # the file names itself differently: reported by load_shared as an error
        _inject(c, sf)  # (its warnings are the shared file's own: reported once, by `carepath validate`)
        used[sid] = Use(sid, version, sf.source, sf.content_hash, loc)
    return list(used.values())


def _own_names(c) -> dict[str, tuple[str, Location]]:
    names: dict[str, tuple[str, Location]] = {}
    vs = c.r.get(c.top, "valuesets")
    if vs is not None and hasattr(vs.value, "keys"):
        for k in vs.value:
            names[str(k)] = ("value set", c.r.key_loc(vs.value, k))
    df = c.r.get(c.top, "define")
    if df is not None and hasattr(df.value, "keys"):
        for k in df.value:
            names.setdefault(str(k), ("definition", c.r.key_loc(df.value, k)))
    return names


def _inject(c, sf: SharedFile) -> None:
    from engine.language.expr import ValueSetDecl

    def q(name: str) -> str:
        return f"{sf.id}.{name}"

    rename = _Renamer({n: q(n) for n in sf.decls}, {n: q(n) for n in sf.definitions})
    for name, decl in sf.decls.items():
        c.decls[q(name)] = dataclasses.replace(decl, name=q(name)) if isinstance(decl, ValueSetDecl) else decl
    for name, vs in sf.valuesets.items():
        c.valuesets[q(name)] = dataclasses.replace(vs, name=q(name))
    for name, node in sf.definitions.items():
        c.definitions[q(name)] = rename(node)
        c._raw_defs[q(name)] = Node(None, Location(sf.source, 1, 1))  # known to the scope; already compiled
    for table, entries in sf.extras.items():  # declared clusters, labels: the same names, prefixed
        mine = getattr(c, table, None)
        if not isinstance(mine, dict):
            continue
        for name, value in entries.items():
            if dataclasses.is_dataclass(value) and hasattr(value, "valueset"):
                value = dataclasses.replace(value, valueset=q(name))
            mine[q(name)] = value


class _Renamer:
    """Rebuild an IR tree with the shared file's value-set and definition names prefixed."""

    def __init__(self, valuesets: dict[str, str], definitions: dict[str, str]):
        self.vs, self.defs = valuesets, definitions
        self.memo: dict[int, tuple] = {}

    def __call__(self, node):
        got = self.memo.get(id(node))
        if got is not None:
            return got[1]
        out = self._rebuild(node)
        self.memo[id(node)] = (node, out)  # the node is kept so its id stays unique while memo lives
        return out

    def _rebuild(self, node):
        if isinstance(node, ir.ValueSetRef):
            return dataclasses.replace(node, name=self.vs.get(node.name, node.name))
        if not dataclasses.is_dataclass(node) or isinstance(node, (ir.Duration, ir.Const)):
            return node
        changes = {}
        for f in dataclasses.fields(node):
            v = getattr(node, f.name)
            if isinstance(v, tuple):
                nv = tuple(self(x) if dataclasses.is_dataclass(x) else x for x in v)
            elif dataclasses.is_dataclass(v):
                nv = self(v)
            else:
                continue
            if nv != v:
                changes[f.name] = nv
        if isinstance(node, ir.Named) and node.name in self.defs:
            changes["name"] = self.defs[node.name]
        if isinstance(node, ir.Where) and node.op == "in-valueset" and node.value in self.vs:
            changes["value"] = self.vs[node.value]
        return dataclasses.replace(node, **changes) if changes else node


def _vkey(v: str) -> tuple:
    try:
        return tuple(int(x) for x in v.split("-")[0].split("."))
    except ValueError:
        return (0,)


# ---- publication ------------------------------------------------------------------------------------
def publication_problems(lib, paths: list[Path]) -> list[Problem]:
    """A published protocol uses only published shared definitions (else its meaning could still change)."""
    from engine.language.manifest import find_manifest, read_manifest
    out: list[Problem] = []
    manifests = {m for p in paths if (m := find_manifest(Path(p))) is not None}
    for manifest in sorted(manifests):
        entries = read_manifest(manifest)
        for p in lib.protocols:
            if p.key not in entries or entries[p.key].get("sha256") != p.content_hash:
                continue
            for u in getattr(p, "uses", []) or []:
                if u.key not in entries:
                    out.append(Problem(u.location, f"{p.key} is published but uses {u.id}@{u.version}, which is not",
                                       expected=f"carepath publish {u.source}"))
    return out


def unpublished_uses(protocol, manifest: Path | None) -> list[Use]:
    """The shared files a protocol uses that are not in published.lock (publish them first)."""
    from engine.language.manifest import read_manifest
    entries = read_manifest(manifest) if manifest is not None and manifest.is_file() else {}
    return [u for u in getattr(protocol, "uses", []) or [] if u.key not in entries]
