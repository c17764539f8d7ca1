"""Bounds on protocol YAML text, checked before parsing: a YAML parser spends seconds on half a megabyte of
`[[[...]]]`, this check milliseconds. Used by the API (request bodies), the web editor and the protocol store."""
from __future__ import annotations

import itertools
import operator
import re

MAX_YAML_CHARS = 500_000
MAX_YAML_LINES = 20_000
MAX_YAML_FLOW_DEPTH = 20     # nested [ ] / { } (the shipped protocols use 3)
MAX_YAML_BLOCK_DEPTH = 30    # nested indentation levels (the shipped protocols use 6)
MAX_YAML_ALIASES = 50        # *alias references (the shipped protocols use none)
_ALIAS = re.compile(r"(?:^|(?<=[\s\[{,]))\*[^\s\]},]")


def _flow_depth(text: str) -> int:
    """The deepest nesting of [ ] / { }, counted everywhere, quoted or not (errs on the deep side);
    an unmatched closing bracket does not hide later depth. C-level loops only: ~10 ms for 500 kB."""
    brackets = re.sub(r"[^\[\]{}]", "", text)
    if not brackets:
        return 0
    steps = brackets.translate(_STEP).encode("latin-1")        # b"\x01" opens, b"\x00" closes
    prefix = list(itertools.accumulate(map((-1, 1).__getitem__, steps), operator.add, initial=0))
    lowest = itertools.accumulate(prefix, min)
    return max(map(operator.sub, prefix, lowest))


_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\x00", "}": "\x00"})


def _block_depth(text: str, stop_at: int) -> int:
    stack: list[int] = []
    deepest = 0
    for line in text.splitlines():
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        indent = len(line) - len(body)
        while stack and stack[-1] >= indent:
            stack.pop()
        stack.append(indent)
        deepest = max(deepest, len(stack))
        if deepest > stop_at:
            break
    return deepest


def yaml_problem(text: str) -> str | None:
    """Why this protocol text is refused before parsing (too big, too deep, too many aliases), or None.
    A YAML parser spends seconds on half a megabyte of `[[[...]]]`: this costs milliseconds."""
    if len(text) > MAX_YAML_CHARS:
        return f"the text is too long: {len(text)} characters, at most {MAX_YAML_CHARS}"
    lines = text.count("\n") + 1
    if lines > MAX_YAML_LINES:
        return f"the text is too long: {lines} lines, at most {MAX_YAML_LINES}"
    flow = _flow_depth(text)
    if flow > MAX_YAML_FLOW_DEPTH:
        return f"the text is nested too deeply: {flow} levels of [ ] / {{ }}, at most {MAX_YAML_FLOW_DEPTH}"
    block = _block_depth(text, MAX_YAML_BLOCK_DEPTH)
    if block > MAX_YAML_BLOCK_DEPTH:
        return f"the text is nested too deeply: more than {MAX_YAML_BLOCK_DEPTH} levels of indentation"
    aliases = len(_ALIAS.findall(text))
    if aliases > MAX_YAML_ALIASES:
        return f"the text uses {aliases} YAML aliases (*name), at most {MAX_YAML_ALIASES}"
    return None
