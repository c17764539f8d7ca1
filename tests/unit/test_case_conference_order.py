"""The case-conference list puts the most urgent patient first (issue 16: an URGENT active foot problem
due within one working day was listed 4th of 4, behind routine 'new to case management' patients,
because the list was ordered by risk tier first)."""
from __future__ import annotations

import datetime as dt

from api.routers.mdt import case_order, case_priority
from api.schemas import CasePatientOut, FlagOut, SlaOut, TaskOut
from api.web.common import fmt_nhs

NOW = dt.datetime(2026, 12, 7, 9, 0)


def task(priority: str, due_in_hours: float, kind: str = "escalation") -> TaskOut:
    due = NOW + dt.timedelta(hours=due_in_hours)
    return TaskOut(id=1, key="k", nhs_number="9434765919", protocol="p", version="1.0.0", source="rule:r", kind=kind,
                   title=f"{priority} thing", priority=priority, status="open", raised_at=NOW, due=due, overdue=due < NOW,
                   sla=SlaOut(response="1 working day", agreement="a", due=due, overdue=due < NOW, hours_left=due_in_hours),
                   role="gp", why="because", updated_at=NOW)


def flag() -> FlagOut:
    return FlagOut(id=1, key="f", nhs_number="9434765919", protocol="p", version="1.0.0", source="rule:r", kind="clinical",
                   code="c", level="red", text="red flag", why="because", active=True, raised_at=NOW)


def case(nhs: str, *, tier: int | None = None, esc=(), late=(), red=0, new=False) -> CasePatientOut:
    c = CasePatientOut(nhs_number=nhs, name=None, practice=None, risk_tier=tier, reasons=["r"], new_escalation=new,
                       escalations=list(esc), overdue_urgent=list(late), red_flags=[flag()] * red, outcome=None)
    c.priority = case_priority(c)
    return c


def test_most_urgent_first_then_earliest_due_then_risk_tier():
    tier_only = case("1", tier=3, new=True)                        # highest risk tier, nothing due
    routine_new = case("2", tier=3, esc=[task("routine", 24 * 10)], new=True)  # "new to case management"
    urgent_foot = case("3", esc=[task("urgent", 8)])               # urgent, due within 1 working day, not new
    high_late = case("4", late=[task("high", -30, kind="rule")])   # overdue high priority task
    red_only = case("5", red=1)                                    # a red flag alone
    urgent_sooner = case("6", esc=[task("urgent", 2)])
    ordered = sorted([tier_only, routine_new, urgent_foot, high_late, red_only, urgent_sooner], key=case_order)
    assert [c.nhs_number for c in ordered] == ["6", "3", "4", "5", "2", "1"]
    assert [c.priority for c in ordered] == ["urgent", "urgent", "high", "high", "routine", "routine"]


def test_nhs_numbers_are_shown_3_3_4():
    assert fmt_nhs("9434765919") == "943 476 5919"
    assert fmt_nhs("943 476 5919") == "943 476 5919"
    assert fmt_nhs("") == "" and fmt_nhs(None) == "" and fmt_nhs("pseudo-ab12") == "pseudo-ab12"
