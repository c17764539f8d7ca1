"""Reading clinician-written YAML with positions, and checking its shape with helpful messages."""
from __future__ import annotations

import datetime as dt
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from engine.ir import nodes as ir
from engine.language.errors import Location, Problem, ProtocolError, Problems, suggest

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
DURATION = re.compile(r"^\s*(\d+)\s*(day|days|week|weeks|month|months|year|years)\s*$")
WORKING = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(hour|hours|working day|working days|day|days|week|weeks)\s*$")


_PARSED: OrderedDict[tuple[str, bytes], Any] = OrderedDict()  # (flavour, file content) -> parsed document
_PARSED_KEPT = 256  # the shipped library is ~40 files (~7 MB parsed)
_PARSED_LOCK = threading.Lock()


def parsed_once(flavour: str, raw: bytes, parse: Callable[[], Any]) -> Any:
    """parse() of a file's content, once per process for the same (flavour, content): parsing YAML is most of the
    cost of loading a protocol, and a library, a case file's versions and a conformance kit read the same files
    again and again. Keyed by the content itself, so an edited file is parsed afresh; an error is never kept.
    Callers only read the document they get (it is shared), never change it."""
    key = (flavour, raw)
    with _PARSED_LOCK:
        hit = _PARSED.get(key)
        if hit is not None:
            _PARSED.move_to_end(key)
            return hit
    data = parse()
    with _PARSED_LOCK:
        _PARSED[key] = data
        while len(_PARSED) > _PARSED_KEPT:
            _PARSED.popitem(last=False)
    return data


def read_yaml(path: Path) -> tuple[Any, bytes]:
    """(the parsed document, the file's bytes); see parsed_once."""
    raw = path.read_bytes()
    return parsed_once("protocol", raw, lambda: _parse(path, raw)), raw


def _parse(path: Path, raw: bytes) -> Any:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    try:
        data = yaml.load(raw.decode("utf-8"))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(str(path), (mark.line + 1) if mark else 1, (mark.column + 1) if mark else 1)
        raise ProtocolError([Problem(loc, f"this is not valid YAML: {e.problem or e.context}",
                                     expected="indented 'key: value' lines")]) from None
    except ReaderError as e:  # control characters and the like, found before any parsing
        text = raw.decode("utf-8", errors="replace")[: e.position]
        loc = Location(str(path), text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1)
        raise ProtocolError([Problem(loc, f"this file contains a character YAML does not allow ({e.reason})",
                                     expected="plain text")]) from None
    except UnicodeDecodeError:
        raise ProtocolError([Problem(Location(str(path), 1, 1), "the file is not UTF-8 text")]) from None
    return data


class Node:
    """A YAML value together with where it sits in its file."""

    def __init__(self, value: Any, loc: Location):
        self.value, self.loc = value, loc

    @property
    def quoted(self) -> bool:
        return isinstance(self.value, (DoubleQuotedScalarString, SingleQuotedScalarString))


class Reader:
    """Walks one YAML document, collecting problems rather than stopping at the first."""

    def __init__(self, path: Path, problems: Problems):
        self.file = str(path)
        self.problems = problems

    def loc_of(self, container, key) -> Location:
        try:
            if isinstance(container, CommentedMap):
                line, col = container.lc.value(key)
                if line is None:
                    line, col = container.lc.key(key)
            elif isinstance(container, CommentedSeq):
                line, col = container.lc.item(key)
            else:
                return Location(self.file, 1, 1)
            return Location(self.file, line + 1, col + 1)
        except Exception:  # ruamel keeps no position for some synthesized values
            return Location(self.file, 1, 1)

    def key_loc(self, container: CommentedMap, key) -> Location:
        try:
            line, col = container.lc.key(key)
            return Location(self.file, line + 1, col + 1)
        except Exception:
            return self.loc_of(container, key)

    def here(self, container) -> Location:
        lc = getattr(container, "lc", None)
        if lc is not None and lc.line is not None:
            return Location(self.file, lc.line + 1, lc.col + 1)
        return Location(self.file, 1, 1)

    def mapping(self, value, loc: Location, what: str, allowed: dict[str, bool]) -> CommentedMap | None:
        """Check a mapping's keys: allowed maps key -> required."""
        if not isinstance(value, CommentedMap):
            self.problems.error(loc, f"{what} should be a set of 'key: value' lines", expected=", ".join(allowed))
            return None
        for k in value:
            if k not in allowed:
                self.problems.error(self.key_loc(value, k), f"unknown field {k!r} in {what}",
                                    expected=", ".join(allowed), suggestion=suggest(str(k), allowed))
        for k, required in allowed.items():
            if required and k not in value:
                self.problems.error(loc, f"{what} is missing {k!r}")
        return value

    def get(self, m: CommentedMap, key: str) -> Node | None:
        if m is None or key not in m:
            return None
        return Node(m[key], self.loc_of(m, key))

    def text(self, m, key, what, required=False) -> str | None:
        n = self.get(m, key)
        if n is None:
            return None
        if not isinstance(n.value, (str, int, float)) or isinstance(n.value, bool):
            self.problems.error(n.loc, f"{what} should be text")
            return None
        return str(n.value)

    def text_list(self, m, key, what) -> list[str]:
        n = self.get(m, key)
        if n is None:
            return []
        if isinstance(n.value, str):
            return [n.value]
        if not isinstance(n.value, list) or not all(isinstance(x, (str, int, float)) for x in n.value):
            self.problems.error(n.loc, f"{what} should be a list of text items")
            return []
        return [str(x) for x in n.value]

    def choice(self, m, key, what, options, default=None) -> str | None:
        n = self.get(m, key)
        if n is None:
            return default
        if str(n.value) not in options:
            self.problems.error(n.loc, f"{what} {n.value!r} is not one of the allowed values",
                                expected=" / ".join(options), suggestion=suggest(str(n.value), options))
            return default
        return str(n.value)

    def duration(self, m, key, what, default: ir.Duration | None = None) -> ir.Duration | None:
        n = self.get(m, key)
        if n is None:
            return default
        match = DURATION.match(str(n.value))
        if not match:
            self.problems.error(n.loc, f"{what} {n.value!r} is not a duration", expected="e.g. '12 months', '2 weeks', '30 days'")
            return default
        unit = match.group(2) if match.group(2).endswith("s") else match.group(2) + "s"
        return ir.Duration(int(match.group(1)), unit)

    def date(self, m, key, what) -> dt.date | None:
        n = self.get(m, key)
        if n is None:
            return None
        if isinstance(n.value, dt.date):
            return n.value
        try:
            return dt.date.fromisoformat(str(n.value))
        except ValueError:
            self.problems.error(n.loc, f"{what} {n.value!r} is not a date", expected="YYYY-MM-DD")
            return None

    def version(self, m, key="version") -> str | None:
        n = self.get(m, key)
        if n is None:
            return None
        if not SEMVER.match(str(n.value)):
            self.problems.error(n.loc, f"version {n.value!r} is not a semantic version", expected="MAJOR.MINOR.PATCH, e.g. 1.2.0")
            return None
        return str(n.value)

    def seq(self, m, key, what) -> list[tuple[Any, Location]]:
        n = self.get(m, key)
        if n is None:
            return []
        if not isinstance(n.value, CommentedSeq):
            self.problems.error(n.loc, f"{what} should be a list ('- ' items)")
            return []
        return [(item, self.loc_of(n.value, i)) for i, item in enumerate(n.value)]


def months(d: ir.Duration) -> int | None:
    return d.amount * 12 if d.unit == "years" else d.amount if d.unit == "months" else None


def days(d: ir.Duration) -> int | None:
    return d.amount * 7 if d.unit == "weeks" else d.amount if d.unit == "days" else None


def subtract(a: ir.Duration, b: ir.Duration) -> ir.Duration | None:
    """a - b in a's unit family (months/years or days/weeks); None if they do not mix."""
    if months(a) is not None and months(b) is not None:
        return ir.Duration(max(months(a) - months(b), 0), "months")
    if days(a) is not None and days(b) is not None:
        return ir.Duration(max(days(a) - days(b), 0), "days")
    return None
