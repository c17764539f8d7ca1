"""The risk tier as the worklists and MDT lists use it (for api/ and templates/).

A stratification protocol (protocols/risk-stratification.yaml) gives each patient at most one tier per
protocol: `ProtocolResult.tier` (tier id, level, title, why), stored with the rest of the evaluation
(registry table patient_evaluation, column result). Its tiers also raise flags `risk-tier-<level>`.

    patient_tier(x)          -> Tier | None   the patient's highest tier, from an Evaluation, a list of
                                              ProtocolResults, or stored results {protocol: result dict}
    worklist_priority(...)   -> float         a sort key for a worklist item: higher first
    mdt_reasons(...)         -> list[str]     why a patient belongs on the MDT case-conference list ([] = not)

Levels follow the Kaiser pyramid: 3 case management, 2 disease management, 1 supported self-care;
no tier = 0.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

PRIORITY_WEIGHT = {"urgent": 1000.0, "high": 300.0, "routine": 100.0, "low": 30.0}
TIER_FACTOR = {0: 1.0, 1: 1.0, 2: 1.25, 3: 1.6}  # case-managed patients' work comes first within a priority
CASE_MANAGEMENT = 3


@dataclass(frozen=True)
class Tier:
    level: int
    tier: str
    title: str
    protocol: str
    version: str
    why: str = ""


def _from_result(r: Any) -> Tier | None:
    if r is None:
        return None
    if hasattr(r, "tier"):  # a ProtocolResult
        t = r.tier
        return None if t is None else Tier(t.level, t.tier, t.title, t.protocol, t.version, t.provenance.why)
    t = (r or {}).get("tier") if isinstance(r, dict) else None
    if t:
        return Tier(int(t["level"]), t["tier"], t.get("title", ""), t.get("protocol", ""), t.get("version", ""),
                    (t.get("provenance") or {}).get("why", ""))
    # results stored before tiers were an output: the `risk-tier-<n>` flags
    levels = [int(f["code"].rsplit("-", 1)[1]) for f in (r or {}).get("flags", [])
              if str(f.get("code", "")).startswith("risk-tier-") and str(f["code"]).rsplit("-", 1)[1].isdigit()]
    if levels:
        return Tier(max(levels), f"risk-tier-{max(levels)}", "", str(r.get("protocol", "")), str(r.get("version", "")))
    return None


def patient_tier(x: Any) -> Tier | None:
    """The highest tier any stratification protocol gives the patient (None: no tier).

    x: an Evaluation, an iterable of ProtocolResults, or stored results {protocol id: result dict}."""
    if x is None:
        return None
    if hasattr(x, "protocols"):
        results: Iterable = x.protocols
    elif isinstance(x, dict):
        results = x.values()
    else:
        results = x
    tiers = [t for t in (_from_result(r) for r in results) if t is not None]
    return max(tiers, key=lambda t: t.level) if tiers else None


def worklist_priority(priority: str, tier_level: int | None, due: dt.datetime, now: dt.datetime) -> float:
    """Priority (risk tier x lateness) as one number, higher first: the task's clinical priority, raised
    for higher tiers, and growing with lateness (+10% per week overdue, up to double; items due within
    2 days get +5%). Order a worklist by this, then by due time."""
    base = PRIORITY_WEIGHT.get(priority, PRIORITY_WEIGHT["routine"]) * TIER_FACTOR.get(tier_level or 0, 1.6)
    late_days = (now - due).total_seconds() / 86400
    if late_days > 0:
        return base * min(2.0, 1.0 + 0.1 * late_days / 7)
    if late_days > -2:
        return base * 1.05
    return base


def mdt_reasons(tier_level: int | None, new_escalations: int = 0, overdue_urgent: int = 0, red_flags: int = 0,
                newly_case_managed: bool = False) -> list[str]:
    """Why a patient is on the MDT case-conference list: case management (tier 3), new escalations,
    overdue urgent/high tasks, red flags. An empty list: not on the list."""
    out = []
    if (tier_level or 0) >= CASE_MANAGEMENT:
        out.append("case management (risk tier 3)" + (": new this month" if newly_case_managed else ""))
    if new_escalations:
        out.append(f"{new_escalations} new escalation(s)")
    if overdue_urgent:
        out.append(f"{overdue_urgent} overdue urgent or high task(s)")
    if red_flags:
        out.append(f"{red_flags} red flag(s)")
    return out
