"""What evaluation produces, with provenance on every item (schema `carepath.evaluation/v1`).

Every item names the protocol id + version and the activity / rule / measure that produced it,
the facts that triggered it, and one plain-English `why` a clinician can read.
"""
from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

SCHEMA = "carepath.evaluation/v1"


class Evidence(BaseModel):
    fact_id: str
    source_system: str
    care_setting: str
    kind: str
    date: dt.date
    code: str
    term: str | None = None
    value: float | None = None
    unit: str | None = None


class Provenance(BaseModel):
    protocol: str
    version: str
    source: str = Field(description="activity:<id>, rule:<id>, goal:<id>, measure:<id>, segment:<id>, tier:<id> or score")
    why: str
    evidence: list[Evidence] = Field(default_factory=list)


class Assignment(BaseModel):
    provider: str | None = None
    team: str | None = None
    role: str
    response: str | None = Field(default=None, description="Response time from the role agreement, e.g. '5 working days'")
    agreement: str | None = Field(default=None, description="agreement id@version that assigned it")


class CarePlanItem(BaseModel):
    activity: str
    title: str
    status: Literal["met", "due", "overdue", "excepted", "unknown"] = Field(
        description="unknown: cannot be determined, a codelist it needs is not supplied (the why says which)")
    last_done: dt.date | None = None
    next_due: dt.date | None = None
    assigned: Assignment
    patient_text: str | None = None
    provenance: Provenance


class GoalResult(BaseModel):
    goal: str
    title: str
    status: Literal["achieved", "not-achieved", "unknown"]
    patient_text: str | None = None
    provenance: Provenance


class Task(BaseModel):
    key: str = Field(description="Stable identity: patient|protocol|source; re-evaluation matches tasks on it")
    kind: Literal["activity", "rule", "escalation"]
    title: str
    priority: Literal["urgent", "high", "routine", "low"]
    raised_at: dt.datetime
    due: dt.datetime
    assigned: Assignment
    provenance: Provenance


class Flag(BaseModel):
    key: str
    kind: Literal["compliance", "clinical"]
    code: str
    level: str = Field(description="compliance: met/due/overdue/excepted; clinical: red/amber/green/info")
    text: str
    provenance: Provenance


class EpisodeResult(BaseModel):
    """One episode of a measure counted per episode (e.g. one qualifying encounter)."""

    episode: int = Field(description="1 = the first episode in time order")
    fact: str | None = Field(default=None, description="id of the event that is the episode")
    date: dt.date | None = None
    initial_population: bool
    denominator: bool
    exclusion: bool
    exception: bool = False
    numerator: bool
    why: str = ""


class MeasureResult(BaseModel):
    measure: str
    title: str
    initial_population: bool
    denominator: bool
    exclusion: bool
    numerator: bool
    exception: bool = Field(default=False, description="denominator exception: in the denominator, not excluded, "
                                                      "numerator not met, and a documented reason holds")
    has_exceptions: bool = Field(default=False, description="the measure has a denominator-exceptions step")
    basis: Literal["patient", "episode"] = "patient"
    counts: dict[str, int] | None = Field(default=None, description="episode basis: how many episodes are in each "
                                          "population (initial_population, denominator, exclusion, exception, numerator)")
    episodes: list[EpisodeResult] = Field(default_factory=list)
    why_steps: dict[str, str] = Field(default_factory=dict, description="each population step's why")
    cannot_determine: list[str] = Field(default_factory=list, description="the missing codelists (clusters) that "
                                        "keep this patient's result from being determined; the population flags "
                                        "are then all false and audit leaves the patient out of the rate")
    value: float | None = Field(default=None, description="a measure with `value:`: the patient's number (e.g. "
                                "emergency admissions in the period), for patients in the denominator and not "
                                "excluded; None otherwise, and None when a number it needs is missing (never 0)")
    has_value: bool = Field(default=False, description="the measure has a value (a number per patient)")
    provenance: Provenance


class SegmentResult(BaseModel):
    segment: str
    title: str
    provenance: Provenance


class TierResult(BaseModel):
    """The patient's tier in a stratification protocol (the first tier, in the order written, that held)."""

    tier: str
    level: int = Field(description="Higher = more need (Kaiser: 3 case management, 2 disease management, 1 self-care)")
    title: str
    protocol: str
    version: str
    provenance: Provenance


class ScoreResult(BaseModel):
    name: str
    value: float | None = Field(description="None when a number the score needs is missing")
    provenance: Provenance


class CannotDetermine(BaseModel):
    """A part of the protocol that cannot be evaluated for this patient: a codelist it needs is declared by
    the protocol but not supplied by the site. Never treated as "not done" or "does not hold"."""

    source: str = Field(description="population, activity:<id>, goal:<id>, rule:<id>, measure:<id>, segment:<id>, "
                                    "tier:<id> or score")
    id: str
    title: str
    clusters: list[str] = Field(description="the missing clusters, e.g. FOOTEXAM_COD")
    why: str


class ProtocolResult(BaseModel):
    protocol: str
    version: str
    title: str
    on_register: bool
    register_why: str
    care_plan: list[CarePlanItem] = Field(default_factory=list)
    goals: list[GoalResult] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)
    flags: list[Flag] = Field(default_factory=list)
    measures: list[MeasureResult] = Field(default_factory=list)
    segments: list[SegmentResult] = Field(default_factory=list)
    tier: TierResult | None = None
    score: ScoreResult | None = None
    data_problems: list[str] = Field(default_factory=list)
    register_undetermined: bool = Field(default=False, description="the register needs a codelist that is not "
                                        "supplied: nothing of this protocol was evaluated (on_register is false "
                                        "but means 'cannot determine', not 'not on the register')")
    cannot_determine: list[CannotDetermine] = Field(default_factory=list)


class Evaluation(BaseModel):
    schema_: str = Field(default=SCHEMA, alias="schema")
    nhs_number: str
    reference_date: dt.date
    period_start: dt.date
    period_end: dt.date
    deceased: bool = False
    protocols: list[ProtocolResult] = Field(default_factory=list)

    model_config = {"populate_by_name": True}

    @property
    def tasks(self) -> list[Task]:
        return [t for p in self.protocols for t in p.tasks]

    @property
    def flags(self) -> list[Flag]:
        return [f for p in self.protocols for f in p.flags]

    @property
    def tier(self) -> TierResult | None:
        """The highest tier any stratification protocol gave the patient."""
        tiers = [p.tier for p in self.protocols if p.tier is not None]
        return max(tiers, key=lambda t: t.level) if tiers else None
