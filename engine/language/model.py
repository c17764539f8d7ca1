"""A compiled protocol: metadata, value sets, and every condition as intermediate-form nodes.

`conditions` maps a condition key (population, activity:<id>:<part>, rule:<id>, goal:<id>:<part>,
measure:<id>:<part>, segment:<id>, tier:<id>) to a boolean node. The durable-rules ruleset holds exactly these conditions;
the evaluator turns the set of keys that fired into care-plan items, tasks, flags and measures.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from engine.calendar import ResponseTime
from engine.ir import nodes as ir
from engine.language.errors import Location, Problem
from engine.language.valuesets import ValueSet

PRIORITIES = ("urgent", "high", "routine", "low")
FLAG_LEVELS = ("red", "amber", "green", "info")
STATUSES = ("draft", "active", "retired")


@dataclass
class Activity:
    id: str
    title: str
    every: ir.Duration
    done_by: ir.Node  # EVENT: the event that counts as doing it
    role: str
    location: Location
    due_soon: ir.Duration | None = None
    priority: str = "routine"
    because: str | None = None
    evidence: list[str] = field(default_factory=list)
    patient_text: str | None = None  # plain-language line for the patient's own plan
    has_done_when: bool = False
    has_excepted_when: bool = False
    has_when: bool = False  # `when:` the activity is only for the part of the register where this holds


@dataclass
class Goal:
    id: str
    title: str
    location: Location
    because: str | None = None
    patient_text: str | None = None


@dataclass
class TaskSpec:
    title: str
    role: str
    priority: str = "routine"
    within: "ResponseTime | None" = None  # clinical deadline (may be working days)


@dataclass
class FlagSpec:
    code: str
    level: str
    text: str | None = None


@dataclass
class EscalationSpec:
    to: str  # a role, or 'mdt' for the MDT case conference
    title: str
    priority: str = "urgent"


@dataclass
class Rule:
    id: str
    title: str
    location: Location
    task: TaskSpec | None = None
    flag: FlagSpec | None = None
    escalation: EscalationSpec | None = None
    because: str | None = None
    evidence: list[str] = field(default_factory=list)


@dataclass
class Segment:
    """A named group of the register a patient belongs to (risk stratification: 'over 75', 'care home')."""

    id: str
    title: str
    location: Location
    because: str | None = None


@dataclass
class Tier:
    """One level of a stratification: the first tier (in the order written) whose condition holds is the
    patient's tier; it may raise a task, flag or escalation like a rule."""

    id: str
    level: int
    title: str
    location: Location
    task: TaskSpec | None = None
    flag: FlagSpec | None = None
    escalation: EscalationSpec | None = None
    because: str | None = None
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EcqmRef:
    """The published eCQM a measure implements (canonical Measure url + version)."""

    url: str
    version: str | None = None


@dataclass
class Measure:
    id: str
    title: str
    location: Location
    achievers_kept: bool = False  # QOF: a patient meeting the target is never excluded
    evidence: list[str] = field(default_factory=list)
    has_exclusions: bool = False
    ecqm: EcqmRef | None = None  # set for eCQM measures: conformance kits are matched by its url
    has_exceptions: bool = False  # a denominator-exceptions step (conditions key measure:<id>:exc)
    episodes_at_most: int = 0  # > 0: counted per episode, keys measure:<id>:<step>#1 .. #episodes_at_most
    counts_deceased: bool = False  # evaluated for a patient who died (the measure's own steps use death_date)
    has_value: bool = False  # `value:` a number per patient in the denominator (Protocol.values["measure:<id>:value"])
    value_location: Location | None = None
    improvement: str = "increase"  # `improvement: decrease`: a lower rate is better (an inverse measure, e.g. CMS122)

    @property
    def lower_is_better(self) -> bool:
        return self.improvement == "decrease"

    @property
    def episode_based(self) -> bool:
        return self.episodes_at_most > 0


@dataclass(frozen=True)
class DeclaredCluster:
    """A value set declared by its official cluster (`{cluster: FOOTEXAM_COD, refset: "...", publisher: PCD}`)
    with no codes shipped: a site supplies it as `<site dir>/<cluster lowercased>.csv`
    (`carepath codelists import`). `supplied` is that file when it was found and loaded, else None
    (the value set is *missing* and everything depending on it cannot be determined)."""

    valueset: str  # the protocol's name for it
    cluster: str
    refset: str | None
    publisher: str | None
    location: Location
    expected_file: str  # where the site file is looked for
    supplied: str | None = None

    @property
    def missing(self) -> bool:
        return self.supplied is None


@dataclass
class Protocol:
    id: str
    version: str
    title: str
    status: str
    effective: dt.date
    owner: str
    evidence: list[str]
    source: str
    content_hash: str
    period: ir.Duration
    valuesets: dict[str, ValueSet]
    definitions: dict[str, ir.Node]
    conditions: dict[str, ir.Node]
    condition_locations: dict[str, Location]
    since: ir.Node | None
    activities: list[Activity]
    goals: list[Goal]
    rules: list[Rule]
    measures: list[Measure]
    warnings: list[Problem] = field(default_factory=list)
    description: str | None = None
    score: str | None = None  # the number definition reported as the patient's score (`score:`)
    segments: list[Segment] = field(default_factory=list)
    tiers: list[Tier] = field(default_factory=list)
    demo_only: bool = False  # `demo_only: true`: may use the synthetic code system (never a real protocol)
    # declared clusters (engine/language/determinacy.py): every one, by value set name, supplied or not
    clusters: dict[str, DeclaredCluster] = field(default_factory=dict)
    # the conditions that depend on a missing cluster, removed from `conditions` (what every engine
    # evaluates) and kept here with the clusters they wait for
    undetermined_conditions: dict[str, ir.Node] = field(default_factory=dict)
    undetermined: dict[str, tuple[str, ...]] = field(default_factory=dict)  # element key -> missing clusters
    labels: dict[str, str] = field(default_factory=dict)  # definition name -> its human label (`label:`)
    # which declared clusters were supplied, with what codes: the same YAML evaluates differently once a site
    # supplies a cluster, so the process-global ruleset name must differ ("" when no cluster is declared)
    variant: str = ""
    valueset_locations: dict[str, Location] = field(default_factory=dict)  # where each value set is declared
    uses: list = field(default_factory=list)  # shared definitions it pins (engine/language/shared.py Use)
    # measure values (`value:` on a measure, a number per patient): key measure:<id>:value -> NUMBER node; like
    # `conditions`, what every engine computes (a value needing a missing codelist is in undetermined_values)
    values: dict[str, ir.Node] = field(default_factory=dict)
    undetermined_values: dict[str, ir.Node] = field(default_factory=dict)

    @property
    def all_conditions(self) -> dict[str, ir.Node]:
        """Every condition of the protocol, those that cannot be determined included (for documents, diffs
        and checks; engines evaluate `conditions` only)."""
        if not self.undetermined_conditions:
            return self.conditions
        return {**self.conditions, **self.undetermined_conditions}

    @property
    def missing_clusters(self) -> list[DeclaredCluster]:
        return [c for c in self.clusters.values() if c.missing]

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def ruleset_name(self) -> str:
        # Ruleset names are process-global in durable-rules and cannot be unregistered: the content
        # hash keeps two different drafts of one version from colliding in a long-lived process.
        return f"{self.id}@{self.version}#{self.content_hash[:10]}" + (f"#{self.variant}" if self.variant else "")

    def activity(self, activity_id: str) -> Activity | None:
        return next((a for a in self.activities if a.id == activity_id), None)


def version_key(v: str) -> tuple:
    """A semantic version as a sortable tuple (the pre-release suffix is ignored)."""
    core = v.split("-")[0]
    return tuple(int(x) for x in core.split("."))
