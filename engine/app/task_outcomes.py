"""Completing or declining a task: who may, and the coded outcome they record (issue 16 item 2).

A task is assigned to a care role by the role agreements (gp, practice-nurse, podiatrist, ...). Only a
person who works in that role may complete it; a clinical lead or a care coordinator may complete any
task (the coordinator closes the loop for the MDT). Everyone else is told why not and asks for the task
to be reassigned (declining is closing too, so it follows the same rule). Tasks for the MDT itself (role "mdt") may be
completed by an MDT member.

Completing needs an outcome from a fixed list; "not done" needs the reason in words. The outcome, who
completed the task and when are kept on the task (outcome, closed_by, closed_at) and in its history.
"""
from __future__ import annotations

from collections.abc import Iterable

OUTCOMES = {
    "done": "Done",
    "not-done": "Not done",
    "declined-by-patient": "Declined by the patient",
    "not-appropriate": "Not clinically appropriate",
}
NOTE_REQUIRED = {"not-done"}
LEAD_ROLES = {"clinical-lead"}                # service roles (engine.registry.access.ROLES) that may complete any task
COORDINATOR_ROLES = {"care-coordinator"}      # care roles that may complete any task
MDT_ROLE, MDT_MEMBER = "mdt", "mdt-member"
CLINICAL_ROLE_PATTERN = r"^[a-z][a-z0-9-]{1,59}$"


class OutcomeError(ValueError):
    pass


def role_words(role: str) -> str:
    return role.replace("-", " ")


CLOSING_ACTIONS = ("complete", "decline")  # both close a task for its role: the same people may do either


def completion_refusal(task_role: str, user_role: str, clinical_roles: Iterable[str] | None,
                       action: str = "complete") -> str | None:
    """Why this person may not complete (or decline: `action`) a task assigned to `task_role`, in words;
    None when they may. Declining follows the same rule as completing: a task is closed, either way, only
    by its role, a care coordinator or a clinical lead; anyone else asks for it to be reassigned."""
    mine = set(clinical_roles or ())
    if user_role in LEAD_ROLES or mine & COORDINATOR_ROLES or task_role in mine:
        return None
    if task_role == MDT_ROLE and user_role == MDT_MEMBER:
        return None
    yours = ", ".join(role_words(r) for r in sorted(mine)) or "no care role recorded"
    return (f"only a {role_words(task_role)}, a care coordinator or a clinical lead can {action} this task "
            f"(your roles: {yours}); ask for it to be reassigned")


def outcome_text(outcome: str | None, note: str | None) -> str:
    """The outcome as the closed view shows it: "Not done: patient in hospital"."""
    if outcome is None:
        raise OutcomeError(f"completing a task needs an outcome ({', '.join(OUTCOMES)})")
    if outcome not in OUTCOMES:
        raise OutcomeError(f"unknown outcome {outcome!r} (one of {', '.join(OUTCOMES)})")
    note = (note or "").strip()
    if outcome in NOTE_REQUIRED and not note:
        raise OutcomeError(f"an outcome of '{OUTCOMES[outcome]}' needs the reason in words")
    return f"{OUTCOMES[outcome]}: {note}" if note else OUTCOMES[outcome]
