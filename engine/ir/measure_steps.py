"""The measure steps, described once and compiled for every engine.

A measure has up to five parts, each a condition (keys `measure:<id>:ip|den|excl|exc|num`, `#k` per episode).
Its populations are the eCQM cascade over those parts: the denominator within the initial population,
exclusions within the denominator, the numerator among those not excluded, exceptions among those in
the denominator, not excluded and not meeting the numerator. QOF (`achievers_kept`) selects achievers
before any exclusion rule. A patient who had died counts nowhere unless the measure's own steps use the
death date (`counts_deceased`).

    steps(measure)                       -> {population: Expr}       the one description
    holds(expr, fired, key, sfx, dead)   -> bool                      for the per-patient engines
    to_sql(expr, part_sql)               -> str                       for the batch engine

`tests/unit/test_measure_steps.py` checks that both compilations agree on every combination of parts for
every measure of every protocol in the library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

PARTS = ("ip", "den", "excl", "exc", "num")
POPULATIONS = ("ip", "den", "met", "excl", "exc", "num")


@dataclass(frozen=True)
class Part:  # the measure's condition for this step held (absent condition: false)
    name: str


@dataclass(frozen=True)
class Alive:  # the patient had not died by the reference date (or the measure counts the deceased)
    pass


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


Expr = Union[Part, Alive, And, Not]


def steps(measure) -> dict[str, Expr]:
    ip = And((Alive(), Part("ip")))
    den = And((ip, Part("den")))
    met = And((den, Part("num")))
    excl = And((den, Part("excl")))
    if measure.achievers_kept:
        excl = And((excl, Not(met)))
    num = And((met, Not(excl)))
    exc = And((den, Not(excl), Not(met), Part("exc")))
    return {"ip": ip, "den": den, "met": met, "excl": excl, "exc": exc, "num": num}


def holds(expr: Expr, fired: set[str], key: str, sfx: str = "", deceased: bool = False,
          counts_deceased: bool = False) -> bool:
    if isinstance(expr, Part):
        return f"{key}:{expr.name}{sfx}" in fired
    if isinstance(expr, Alive):
        return counts_deceased or not deceased
    if isinstance(expr, And):
        return all(holds(x, fired, key, sfx, deceased, counts_deceased) for x in expr.items)
    if isinstance(expr, Not):
        return not holds(expr.item, fired, key, sfx, deceased, counts_deceased)
    raise TypeError(expr)


def to_sql(expr: Expr, part_sql: Callable[[str], str], counts_deceased: bool = False) -> str:
    """`part_sql(part)` is the SQL for "this part's condition held" (FALSE when the measure has no such part)."""
    if isinstance(expr, Part):
        return part_sql(expr.name)
    if isinstance(expr, Alive):
        return "TRUE" if counts_deceased else "NOT deceased"
    if isinstance(expr, And):
        return "(" + " AND ".join(to_sql(x, part_sql, counts_deceased) for x in expr.items) + ")"
    if isinstance(expr, Not):
        return f"(NOT {to_sql(expr.item, part_sql, counts_deceased)})"
    raise TypeError(expr)


_STEPS: dict[bool, dict[str, Expr]] = {}


def populations(measure, fired: set[str], key: str, sfx: str = "", deceased: bool = False) -> dict[str, bool]:
    """Every population of one patient (sfx '') or one episode (sfx '#k'): `holds` of each of `steps`, with the
    steps made once (they depend only on `achievers_kept`) and each sub-expression decided once."""
    kept = bool(measure.achievers_kept)
    exprs = _STEPS.get(kept)
    if exprs is None:
        exprs = _STEPS[kept] = steps(measure)
    alive = measure.counts_deceased or not deceased
    memo: dict[int, bool] = {}

    def decide(expr) -> bool:
        got = memo.get(id(expr))
        if got is None:
            if isinstance(expr, Part):
                got = f"{key}:{expr.name}{sfx}" in fired
            elif isinstance(expr, Alive):
                got = alive
            elif isinstance(expr, And):
                got = all(decide(x) for x in expr.items)
            elif isinstance(expr, Not):
                got = not decide(expr.item)
            else:
                raise TypeError(expr)
            memo[id(expr)] = got
        return got

    return {name: decide(e) for name, e in exprs.items()}
