"""Protocol errors that speak to the clinician who wrote the file: where, what was expected, a hint."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field


@dataclass
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class Problem:
    location: Location
    message: str
    expected: str | None = None
    suggestion: str | None = None
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        if self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text

    def as_dict(self) -> dict:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "severity": self.severity,
            "message": self.message,
            "expected": self.expected,
            "suggestion": self.suggestion,
        }


class ProtocolError(Exception):
    """Raised when a file is invalid; carries every problem found (nothing is partly loaded)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class Problems:
    """Collects problems while loading so a clinician sees all of them at once."""

    items: list[Problem] = field(default_factory=list)

    def error(self, loc: Location, message: str, expected: str | None = None, suggestion: str | None = None) -> None:
        self.items.append(Problem(loc, message, expected, suggestion, "error"))

    def warning(self, loc: Location, message: str, expected: str | None = None, suggestion: str | None = None) -> None:
        self.items.append(Problem(loc, message, expected, suggestion, "warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.items if p.severity == "warning"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise ProtocolError(self.errors)


def suggest(name: str, candidates) -> str | None:
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return match[0] if match else None
