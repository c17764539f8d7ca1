"""A one-measure protocol file for language tests of measure keys (`extra` is added under the measure)."""
from __future__ import annotations

from pathlib import Path


def one_measure_protocol(folder: Path, extra: str = "") -> Path:
    p = folder / "m.yaml"
    p.write_text(f"""protocol: m
version: 1.0.0
title: M
status: draft
effective: 2026-01-01
owner: tests
evidence: [tests]
valuesets: {{x: {{codes: [x1]}}}}
population: x exists
measures:
  - id: M1
    title: M one
    numerator: x exists
{extra}""")
    return p
