"""Role agreements: which provider, team and role does each activity, where, and how fast.

An `assign` entry targets `protocol/activity`, `protocol/rule:<id>`, `protocol/tier:<id>`,
`protocol/escalation:<rule id>`, `protocol/*` or `*/*` (any pathway, e.g. one published after the
agreement: the weakest default), optionally limited `where` to localities / MDTs /
practices. For a task the most specific entry wins: an exact target beats a wildcard; a practice
beats an MDT beats a locality beats "anywhere"; ties go to the entry written first. Its `respond`
times (urgent / routine) set the task's due time. An entry without `role` keeps the role the
protocol names (e.g. a wildcard that only says which provider and how fast).

A party may give its opening hours (`hours: 24/7` or `hours: {weekdays: "08:00-18:30", bank_holidays:
closed}`, see engine.opening_hours): its response times in hours then count open time only, and no
deadline of its tasks falls while it is closed. An entry for a rule's task may name the work as the
provider should do it: `refer_to: <party>` (the provider refers the patient there; the task reads
"Refer to <party name>: <the protocol's title>") and/or `action: <the task's text>`, e.g. a GP
practice referring to renal medicine where the protocol names the renal consultant's review. The text
replaces the protocol's title only when the entry's role differs from the protocol's role.

An agreement may also describe the area (`localities:`): each locality's MDTs and each MDT's GP
practices (ODS codes). `carepath validate` then checks every `where` against it and that every
activity and task is assigned in every locality.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.calendar import ResponseTime, parse_response
from engine.opening_hours import HoursError, OpeningHours, parse_hours
from engine.language.errors import Location, Problems
from engine.language.model import STATUSES
from engine.language.yamlsrc import Reader, read_yaml

TOP = {"agreement": True, "version": True, "title": True, "owner": True, "status": False, "effective": False,
       "description": False, "localities": False, "parties": True, "assign": True}
PARTY = {"id": True, "kind": True, "name": False, "hours": False}
ASSIGN = {"activity": True, "where": False, "provider": True, "team": False, "role": False, "respond": True,
          "refer_to": False, "action": False}
LOCALITY = {"id": True, "name": False, "mdts": True}
MDT = {"id": True, "name": False, "practices": True}
ODS_PRACTICE = re.compile(r"^[A-Z][0-9]{5}$")
WHERE = {"locality": False, "mdt": False, "practice": False}
RESPOND = {"urgent": False, "routine": False}
PARTY_KINDS = ("gp", "acute", "community", "mental-health", "social-care", "screening", "other")
WHERE_WEIGHT = {"practice": 4, "mdt": 2, "locality": 1}


@dataclass
class Assign:
    protocol: str
    target: str  # activity id, 'rule:<id>' or '*'
    where: dict[str, set[str]]
    provider: str
    team: str | None
    role: str
    respond: dict[str, ResponseTime]
    location: Location
    refer_to: str | None = None  # a party the provider refers the patient to (the task is the referral)
    action: str | None = None  # the task's text, replacing the protocol's title

    def matches(self, protocol: str, target: str, place: dict[str, str | None]) -> bool:
        if self.protocol not in (protocol, "*") or self.target not in (target, "*"):
            return False
        return all(place.get(k) in allowed for k, allowed in self.where.items())

    def specificity(self, target: str) -> int:
        """Exact target 10, the protocol's wildcard 0, any protocol (`*/*`) -20; plus the `where` weights."""
        base = -20 if self.protocol == "*" else 10 if self.target == target else 0
        return base + sum(WHERE_WEIGHT[k] for k in self.where)

    def role_for(self, protocol_role: str) -> str:
        return self.role or protocol_role

    def response_for(self, priority: str) -> ResponseTime | None:
        want = "urgent" if priority == "urgent" else "routine"
        return self.respond.get(want) or next(iter(self.respond.values()), None)


@dataclass
class Agreement:
    id: str
    version: str
    title: str
    status: str
    effective: dt.date | None
    parties: dict[str, str]
    assigns: list[Assign]
    source: str
    warnings: list = field(default_factory=list)
    localities: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # locality -> MDT -> practices
    content_hash: str = ""
    party_names: dict[str, str] = field(default_factory=dict)
    hours: dict[str, OpeningHours] = field(default_factory=dict)  # party -> opening hours (absent: round the clock)

    @property
    def mdts(self) -> dict[str, str]:
        """MDT -> its locality."""
        return {m: loc for loc, mdts in self.localities.items() for m in mdts}

    @property
    def practices(self) -> dict[str, str]:
        """Practice ODS code -> its MDT."""
        return {p: m for mdts in self.localities.values() for m, ps in mdts.items() for p in ps}

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"


def load_agreement(path: str | Path) -> Agreement:
    import hashlib
    path = Path(path)
    problems = Problems()
    data, raw = read_yaml(path)
    r = Reader(path, problems)
    top = r.mapping(data, Location(str(path), 1, 1), "the role agreement", TOP)
    problems.raise_if_errors()
    parties: dict[str, str] = {}
    names: dict[str, str] = {}
    hours: dict[str, OpeningHours] = {}
    for item, loc in r.seq(top, "parties", "parties"):
        pm = r.mapping(item, loc, "a party", PARTY)
        if pm is None:
            continue
        pid = r.text(pm, "id", "party id")
        kind = r.choice(pm, "kind", "party kind", PARTY_KINDS)
        if pid in parties:
            problems.error(loc, f"duplicate party {pid!r}")
        if pid and kind:
            parties[pid] = kind
            names[pid] = r.text(pm, "name", "party name") or pid
        if pid and "hours" in pm:
            try:
                hours[pid] = parse_hours(pm["hours"])
            except HoursError as e:
                problems.error(r.loc_of(pm, "hours"), str(e),
                               expected='24/7 or e.g. {weekdays: "08:00-18:30", bank_holidays: closed}')
    assigns: list[Assign] = []
    for item, loc in r.seq(top, "assign", "assign"):
        am = r.mapping(item, loc, "an assignment", ASSIGN)
        if am is None:
            continue
        target = r.text(am, "activity", "activity") or ""
        if "/" not in target:
            problems.error(r.loc_of(am, "activity"), f"activity {target!r} should name its protocol",
                           expected="protocol-id/activity-id, protocol-id/rule:rule-id or protocol-id/*")
            continue
        proto, act = target.split("/", 1)
        if proto == "*" and act != "*":
            problems.error(r.loc_of(am, "activity"), f"activity {target!r}: any protocol ('*') takes only '*/*'",
                           expected="*/* (every pathway's work, unless a more specific entry says otherwise)")
            continue
        provider = r.text(am, "provider", "provider")
        if provider and provider not in parties:
            from engine.language.errors import suggest
            problems.error(r.loc_of(am, "provider"), f"provider {provider!r} is not one of the parties",
                           expected=", ".join(parties) or "a party declared under parties",
                           suggestion=suggest(provider, parties))
        where: dict[str, set[str]] = {}
        if "where" in am:
            wm = r.mapping(am["where"], r.loc_of(am, "where"), "where", WHERE)
            for k, v in (wm or {}).items():
                if v in ("any", ["any"]):
                    continue
                where[k] = {str(x) for x in (v if isinstance(v, list) else [v])}
        respond: dict[str, ResponseTime] = {}
        rm = r.mapping(am.get("respond"), r.loc_of(am, "respond"), "respond", RESPOND) if "respond" in am else None
        for k, v in (rm or {}).items():
            try:
                respond[k] = parse_response(v)
            except ValueError as e:
                problems.error(r.loc_of(rm, k), str(e), expected="e.g. '4 hours', '5 working days'")
        if rm is not None and not rm:
            problems.error(r.loc_of(am, "respond"), "respond needs urgent and/or routine")
        refer_to, action = r.text(am, "refer_to", "refer_to"), r.text(am, "action", "action")
        if refer_to and refer_to not in parties:
            from engine.language.errors import suggest
            problems.error(r.loc_of(am, "refer_to"), f"refer_to {refer_to!r} is not one of the parties",
                           expected=", ".join(parties) or "a party declared under parties",
                           suggestion=suggest(refer_to, parties))
        if (refer_to or action) and not act.startswith(("rule:", "tier:", "escalation:")):
            problems.error(r.loc_of(am, "refer_to" if refer_to else "action"),
                           "refer_to / action name one task: they need a rule, tier or escalation target",
                           expected="protocol-id/rule:rule-id (not an activity or protocol-id/*)")
        assigns.append(Assign(proto, act, where, provider or "", r.text(am, "team", "team"),
                              r.text(am, "role", "role") or "", respond, loc, refer_to, action))
    version = r.version(top)
    status = r.choice(top, "status", "status", STATUSES, "active")
    effective = r.date(top, "effective", "effective date")
    localities = _localities(r, top, problems)
    problems.raise_if_errors()
    return Agreement(r.text(top, "agreement", "agreement id"), version, r.text(top, "title", "title"), status,
                     effective, parties, assigns, str(path), problems.warnings, localities,
                     hashlib.sha256(raw).hexdigest(), names, hours)


def _localities(r: Reader, top, problems: Problems) -> dict[str, dict[str, list[str]]]:
    """`localities: [{id, mdts: [{id, practices: [ODS codes]}]}]`: the area's structure, checked."""
    out: dict[str, dict[str, list[str]]] = {}
    seen_mdt: dict[str, str] = {}
    seen_practice: dict[str, str] = {}
    for item, loc in r.seq(top, "localities", "localities"):
        lm = r.mapping(item, loc, "a locality", LOCALITY)
        if lm is None:
            continue
        lid = r.text(lm, "id", "locality id")
        if lid in out:
            problems.error(loc, f"duplicate locality {lid!r}")
            continue
        mdts: dict[str, list[str]] = {}
        for mitem, mloc in r.seq(lm, "mdts", f"the MDTs of {lid}"):
            mm = r.mapping(mitem, mloc, "an MDT", MDT)
            if mm is None:
                continue
            mid = r.text(mm, "id", "MDT id")
            if mid in seen_mdt:
                problems.error(mloc, f"MDT {mid!r} is already in locality {seen_mdt[mid]!r}")
                continue
            seen_mdt[mid] = lid
            practices = []
            node = r.get(mm, "practices")
            for i, code in enumerate(node.value if node is not None and isinstance(node.value, list) else []):
                ploc = r.loc_of(node.value, i)
                code = str(code).strip().upper()
                if not ODS_PRACTICE.match(code):
                    problems.error(ploc, f"practice {code!r} is not a GP practice ODS code",
                                   expected="one letter and five digits, e.g. A81001")
                    continue
                if code in seen_practice:
                    problems.error(ploc, f"practice {code} is already in MDT {seen_practice[code]!r}")
                    continue
                seen_practice[code] = mid
                practices.append(code)
            if node is not None and not isinstance(node.value, list):
                problems.error(node.loc, f"the practices of MDT {mid!r} should be a list of ODS codes")
            mdts[mid] = practices
        out[lid] = mdts
    return out


@dataclass
class Resolution:
    assign: Assign
    agreement: Agreement

    @property
    def hours(self) -> OpeningHours | None:
        """The provider's opening hours (None: round the clock)."""
        return self.agreement.hours.get(self.assign.provider)

    def task_title(self, protocol_title: str, protocol_role: str | None = None) -> str:
        """The task as the provider does it: the agreed action, or the referral to another party, when the entry gives
        the task to another role than the protocol's (a GP referring, where the protocol names the renal consultant's
        review); when the protocol already gives it to that role, its own title says what that role does."""
        a = self.assign
        if not a.role or a.role == protocol_role:
            return protocol_title
        if a.action:
            return a.action
        if a.refer_to:
            return f"Refer to {self.agreement.party_names.get(a.refer_to, a.refer_to)}: {protocol_title}"
        return protocol_title


def resolve(agreements: list[Agreement], protocol: str, target: str, place: dict[str, str | None]) -> Resolution | None:
    best: tuple[int, int, Resolution] | None = None
    order = 0
    for ag in agreements:
        if ag.status == "retired":
            continue
        for a in ag.assigns:
            order += 1
            if a.matches(protocol, target, place):
                score = a.specificity(target)
                if best is None or score > best[0]:
                    best = (score, order, Resolution(a, ag))
    return best[2] if best else None
