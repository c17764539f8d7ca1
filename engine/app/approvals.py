"""Two-person publish (issue 16 item 9): a protocol version is published only when a second person, other
than its author, with the publish permission (a clinical lead), approves it. Both are recorded: in the
publication row (published_by = author, approved_by), in published.lock, and in the access log.

The API and the web page: the author submits a draft (`protocol_draft`, awaiting approval); another lead
approves it, which publishes it. The CLI (`carepath publish FILE --approved-by NAME [--author NAME]`)
records both names in published.lock and, given a registry, checks the approver there and logs it.
"""
from __future__ import annotations

import datetime as dt

from sqlmodel import Session, select

from engine.registry.access import ProtocolDraftRow, UserRow

AWAITING, PUBLISHED, WITHDRAWN = "awaiting-approval", "published", "withdrawn"
APPROVER_ROLES = ("clinical-lead",)


class ApprovalError(ValueError):
    pass


def approval_problem(author: str | None, approver: str | None) -> str | None:
    """Why this approval does not count, in words; None when it does."""
    if not approver or not approver.strip():
        return "publishing needs a second person to approve the version (a clinical lead other than its author)"
    if author and approver.strip().lower() == author.strip().lower():
        return (f"{approver} wrote this version and cannot approve it: a second clinical lead, other than the "
                "author, must approve it")
    return None


def approver_problem(session: Session, approver: str) -> str | None:
    """For the CLI with a registry: the approver must be an active user with an approving role."""
    row = session.exec(select(UserRow).where(UserRow.username == approver.strip().lower())).first()
    if row is None or not row.active:
        return f"{approver} is not an active user of this service"
    if row.role not in APPROVER_ROLES:
        return f"{approver} is a {row.role}: only a clinical lead may approve a protocol version"
    return None


def submit(session: Session, *, protocol: str, version: str, content_hash: str, yaml: str, note: str | None,
           author: str, now: dt.datetime) -> ProtocolDraftRow:
    same = session.exec(select(ProtocolDraftRow).where(ProtocolDraftRow.protocol == protocol,
                                                       ProtocolDraftRow.version == version,
                                                       ProtocolDraftRow.status == AWAITING)).first()
    if same is not None:
        raise ApprovalError(f"{protocol} {version} is already awaiting approval (draft {same.id}, "
                            f"submitted by {same.submitted_by})")
    row = ProtocolDraftRow(protocol=protocol, version=version, content_hash=content_hash, yaml=yaml, note=note,
                           status=AWAITING, submitted_by=author, submitted_at=now)
    session.add(row)
    session.flush()
    return row


def awaiting(session: Session, protocol: str | None = None) -> list[ProtocolDraftRow]:
    q = select(ProtocolDraftRow).where(ProtocolDraftRow.status == AWAITING)
    if protocol:
        q = q.where(ProtocolDraftRow.protocol == protocol)
    return list(session.exec(q.order_by(ProtocolDraftRow.submitted_at, ProtocolDraftRow.id)))
