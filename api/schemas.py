"""Request and response bodies of the HTTP API (pydantic), kept apart from the SQLModel tables."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, PlainSerializer, StringConstraints, computed_field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from engine.app import practices
from engine.app.mdt_actions import ACTION_ROLES, ACTION_TYPES, MAX_CHANGES, PRIORITIES
from engine.app.task_outcomes import OUTCOMES
from engine.app.service import Diff
from engine.evaluation.outputs import ProtocolResult, Task
from engine.records.model import PatientRecord

Role = Literal["clinical-lead", "mdt-member", "practice-staff", "auditor", "admin"]
NHS_PATTERN = r"^[0-9]{10}$"
# Printable text only: no control characters (PostgreSQL refuses NUL; nobody means them).
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
ShortText = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", max_length=100)]


def _reasonable_date(d: dt.date) -> dt.date:
    if not dt.date(1900, 1, 1) <= d <= dt.date(2200, 12, 31):
        raise ValueError("date must be between 1900-01-01 and 2200-12-31")
    return d


Day = Annotated[dt.date, AfterValidator(_reasonable_date)]


class PracticeNamed(BaseModel):
    """A body with a patient's `practice` (ODS code) also carries the practice's name beside it (issue 16):
    from the one practice table (engine.app.practices), "Practice X12345" for a code the table lacks.
    Subclasses declare `practice` where it belongs in their body."""

    @computed_field(description="The practice's name (engine/app/data/practices.csv), beside its ODS code")  # type: ignore[prop-decorator]
    @property
    def practice_name(self) -> str | None:
        return practices.practice_name(getattr(self, "practice", None)) or None


def unit_name(unit_kind: str, unit: str | None) -> str | None:
    """An audit unit in words: a practice by its name, an MDT or locality as it is."""
    return (practices.practice_name(unit) or None) if unit_kind == "practice" else unit


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


# Every timestamp the API answers with: the service keeps naive UTC datetimes (engine/registry), and
# OpenAPI's `date-time` is RFC 3339, which needs an offset, so JSON carries `Z` ("...T10:00:00Z").
# Only JSON output changes (when_used="json"): the web pages and the CSV export use the Python values.
Instant = Annotated[dt.datetime, PlainSerializer(_utc, return_type=dt.datetime, when_used="json")]


class ErrorItem(BaseModel):
    pointer: str = Field(description="JSON pointer into the request body")
    message: str


class ErrorOut(BaseModel):
    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)


# ---- auth / users --------------------------------------------------------------------------------
class UserOut(PracticeNamed):
    username: str
    full_name: str | None = None
    role: Role
    mdt: str | None = None
    practice: str | None = None
    locality: str | None = None
    clinical_roles: list[str] = Field(default_factory=list)
    active: bool = True
    created_at: Instant | None = None
    last_login_at: Instant | None = None


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")
    user: UserOut


class UserCreate(BaseModel):
    username: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{1,99}$")]
    password: Annotated[str, StringConstraints(min_length=12, max_length=128)]
    role: Role
    full_name: ShortText | None = None
    mdt: ShortText | None = None
    practice: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][0-9]{5}$")] | None = None
    locality: ShortText | None = None
    clinical_roles: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,59}$")]] | None = Field(
        None, max_length=20, description="Care roles the person works in (gp, practice-nurse, care-coordinator ...): "
        "a task can be completed only by its role, a care coordinator or a clinical lead")


class UserUpdate(BaseModel):
    password: Annotated[str, StringConstraints(min_length=12, max_length=128)] | None = None
    role: Role | None = None
    full_name: ShortText | None = None
    mdt: ShortText | None = None
    practice: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][0-9]{5}$")] | None = None
    locality: ShortText | None = None
    active: bool | None = None
    clinical_roles: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,59}$")]] | None = Field(
        None, max_length=20, description="Care roles the person works in (gp, practice-nurse, care-coordinator ...): "
        "a task can be completed only by its role, a care coordinator or a clinical lead")


class AccessLogOut(BaseModel):
    id: int
    at: Instant
    username: str | None
    role: str | None
    action: str
    method: str
    path: str
    resource: str
    status: int
    patients: list[str]
    detail: dict[str, Any]


class AccessLogPage(BaseModel):
    total: int
    items: list[AccessLogOut]


# ---- ingest ---------------------------------------------------------------------------------------
class RecordsIn(BaseModel):
    source: ShortText = Field(description="Name of the delivery / feed, e.g. 'community-ehr nightly'")
    records: list[PatientRecord] = Field(min_length=1, max_length=1000)


class DataProblemOut(PracticeNamed):
    """An evaluation that failed for one patient, and the fact that caused it when known."""
    nhs_number: str | None = Field(None, description="Absent where the reader sees pseudonyms")
    patient: str | None = Field(None, description="Pseudonym, for auditors")
    practice: str | None = None
    mdt: str | None = None
    kind: str = "evaluation-error"
    message: str
    protocol: str | None = None
    fact_source_system: str | None = None
    fact_source_id: str | None = None
    fact_problem: str | None = None
    detected_at: Instant | None = None


@pydantic_dataclass
class DiffOut(Diff):
    """A re-evaluation's changes (engine/app/service.Diff, the one definition), and its data problem if it failed."""
    data_problem: DataProblemOut | None = Field(None, description="The evaluation failed: nothing changed, the problem is "
                                                                  "recorded on the patient")


class PatientChangeOut(BaseModel):
    nhs_number: str
    created: bool
    demographics_changed: bool
    added: int
    updated: int
    unchanged: int
    reevaluated: bool = Field(description="Evaluated in this request")
    evaluation: Literal["evaluated", "pending", "data-problem", "up-to-date"] = Field(
        "up-to-date", description="evaluated in this request; pending (stored and marked, evaluated in the background); "
                                  "data-problem (its evaluation failed, see data_problems); up-to-date (nothing to do)")


class IngestOut(BaseModel):
    batch_id: int
    source: str
    duplicate_of_batch: int | None = Field(default=None, description="An earlier batch with identical content, if any")
    patients: list[PatientChangeOut]
    facts_added: int
    facts_updated: int
    facts_unchanged: int
    unsupported: dict[str, int] = Field(default_factory=dict)
    skipped: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    changes: list[DiffOut] = Field(description="What re-evaluating the affected patients changed")
    evaluated: list[str] = Field(default_factory=list, description="NHS numbers evaluated in this request")
    pending: list[str] = Field(default_factory=list, description="NHS numbers stored and marked for evaluation, "
                                                                 "evaluated in the background (large deliveries)")
    data_problems: list[DataProblemOut] = Field(default_factory=list, description="Patients whose evaluation failed")


# ---- patients and care plans ----------------------------------------------------------------------
class PatientOut(PracticeNamed):
    nhs_number: str
    given_name: str | None = None
    family_name: str | None = None
    birth_date: dt.date
    sex: str
    practice: str | None = None
    locality: str | None = None
    mdt: str | None = None
    death_date: dt.date | None = None


class PatientListItem(PatientOut):
    open_tasks: int = 0
    red_flags: int = 0


class PatientPage(BaseModel):
    total: int
    page: int
    page_size: int
    items: list[PatientListItem]


class SlaOut(BaseModel):
    response: str | None = Field(description="Agreed response time from the role agreement")
    agreement: str | None = None
    due: Instant
    overdue: bool
    hours_left: float = Field(description="Negative when overdue")


class TaskOut(PracticeNamed):
    id: int
    key: str
    nhs_number: str
    patient_name: str | None = None
    practice: str | None = None
    mdt: str | None = None
    protocol: str
    version: str
    source: str
    kind: str
    title: str
    priority: str
    status: str
    raised_at: Instant
    due: Instant
    overdue: bool
    sla: SlaOut
    provider: str | None = None
    team: str | None = None
    role: str
    why: str
    closed_at: Instant | None = None
    closed_reason: str | None = None
    closed_by: str | None = Field(None, description="Who completed or declined it")
    outcome: str | None = Field(None, description="A completion's coded outcome: done / not-done / declined-by-patient / not-appropriate")
    updated_at: Instant


class TaskEventOut(BaseModel):
    at: Instant
    action: str
    actor: str
    from_status: str | None = None
    to_status: str | None = None
    note: str | None = None


class TaskDetailOut(TaskOut):
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    history: list[TaskEventOut] = Field(default_factory=list)


class WorklistOut(BaseModel):
    total: int
    page: int
    page_size: int
    items: list[TaskOut]


class DeclineIn(BaseModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]*\S[^\x00]*$")]


class CompleteIn(BaseModel):
    outcome: Literal["done", "not-done", "declined-by-patient", "not-appropriate"] = Field(
        description="done / not done (the note says why: required) / declined by the patient / not clinically appropriate")
    note: Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")] | None = None


class NoteIn(BaseModel):
    note: Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")] | None = None


class ReassignIn(BaseModel):
    provider: ShortText | None = None
    team: ShortText | None = None
    role: ShortText | None = None
    reason: Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")] | None = None


class FlagOut(BaseModel):
    id: int
    key: str
    nhs_number: str
    protocol: str
    version: str
    source: str
    kind: str
    code: str
    level: str
    text: str
    why: str
    active: bool
    raised_at: Instant
    cleared_at: Instant | None = None


class PlanTaskOut(Task):
    raised_at: Instant
    due: Instant


class ProtocolPlanOut(ProtocolResult):
    tasks: list[PlanTaskOut] = Field(default_factory=list)
    reference_date: dt.date
    evaluated_at: Instant


class CarePlanOut(BaseModel):
    patient: PatientOut
    protocols: list[ProtocolPlanOut] = Field(description="Latest stored evaluation of every protocol in force")
    open_tasks: list[TaskOut]
    active_flags: list[FlagOut]
    evaluation_pending: bool = Field(False, description="Stored data not yet evaluated (the outputs above may be older)")
    data_problems: list[DataProblemOut] = Field(default_factory=list, description="Open problems: the last evaluation failed")


class PlainItem(BaseModel):
    what: str
    status: Literal["done", "due", "overdue", "not-needed", "unknown"]
    text: str


class PlainSection(BaseModel):
    title: str
    items: list[PlainItem]
    goals: list[str]


class PlainCarePlanOut(BaseModel):
    nhs_number: str
    name: str | None
    sections: list[PlainSection]
    text: str = Field(description="The whole plan as plain text, for a letter or the NHS App")


# ---- MDT ------------------------------------------------------------------------------------------
class ActionItemIn(BaseModel):
    """An action agreed at the MDT: it becomes a task on the worklist (engine.app.mdt_actions)."""
    type: Literal[tuple(ACTION_TYPES)] = Field(description="One of the fixed action types (engine.app.mdt_actions)")
    role: Literal[ACTION_ROLES] = Field(description="The care role that does it")
    due: Day = Field(description="Due by the end of this day (on or after the meeting, within a year)")
    priority: Literal[PRIORITIES] = "routine"
    detail: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")] | None = None


class TaskChangeIn(BaseModel):
    """A change the case conference makes to one of the patient's open tasks (engine.app.mdt_actions)."""
    task_id: int = Field(ge=1, le=2**31 - 1)
    change: Literal["reassign", "close"]
    role: Literal[ACTION_ROLES] | None = Field(None, description="reassign: the care role it goes to")
    team: Annotated[str, StringConstraints(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = Field(
        None, description="reassign: the team, in words (optional)")
    outcome: Literal[tuple(OUTCOMES)] | None = Field(None, description="close: the coded outcome (done / not-done / "
                                                     "declined-by-patient / not-appropriate)")
    note: Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")] | None = Field(
        None, description="The MDT's words (required to close as not-done)")


class OutcomeIn(BaseModel):
    nhs_number: Annotated[str, StringConstraints(pattern=NHS_PATTERN)]
    meeting_date: Day
    outcome: Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[^\x00]*\S[^\x00]*$")]
    actions: Annotated[str, StringConstraints(max_length=4000, pattern=r"^[^\x00]*$")] | None = None
    action_items: list[ActionItemIn] = Field(default_factory=list, max_length=10,
                                             description="Agreed actions, each made a task on the worklist")
    task_changes: list[TaskChangeIn] = Field(default_factory=list, max_length=MAX_CHANGES,
                                             description="The patient's open tasks to reassign or close")


class OutcomeTaskOut(BaseModel):
    id: int
    title: str
    role: str
    priority: str
    due: Instant
    status: str


class TaskChangeOut(BaseModel):
    task_id: int
    title: str
    change: Literal["reassign", "close"]
    role: str | None = Field(None, description="reassign: the role it went to")
    team: str | None = None
    outcome: str | None = Field(None, description="close: the coded outcome")
    text: str = Field(description="What the task's history says: from / to, or the outcome and the MDT's words")


class OutcomeOut(BaseModel):
    id: int
    mdt: str
    nhs_number: str
    meeting_date: dt.date
    outcome: str
    actions: str | None
    recorded_by: str
    recorded_at: Instant
    tasks: list[OutcomeTaskOut] = Field(default_factory=list, description="The tasks its agreed actions created")
    task_changes: list[TaskChangeOut] = Field(default_factory=list,
                                              description="Existing tasks it reassigned or closed")


class CasePatientOut(PracticeNamed):
    nhs_number: str
    name: str | None
    practice: str | None
    birth_date: dt.date | None = None
    age: int | None = Field(None, description="Age in years on the meeting date")
    sex: str | None = None
    priority: str = Field("routine", description="The most urgent item bringing the patient to the list: urgent / high / routine (red flags count as high)")
    risk_tier: int | None = Field(description="Highest tier level from any stratification protocol in force (3 = highest)")
    reasons: list[str]
    new_escalation: bool
    escalations: list[TaskOut]
    overdue_urgent: list[TaskOut]
    red_flags: list[FlagOut]
    outcome: OutcomeOut | None = Field(description="Outcome recorded for this meeting date, if any")
    last_outcome: OutcomeOut | None = None


class CaseConferenceOut(BaseModel):
    mdt: str
    meeting_date: dt.date
    generated_at: Instant
    patients: list[CasePatientOut]


class MdtOut(BaseModel):
    mdt: str
    patients: int
    open_escalations: int


# ---- audit ----------------------------------------------------------------------------------------
class MeasureFigures(BaseModel):
    protocol: str
    version: str
    measure: str
    title: str
    unit_kind: Literal["practice", "mdt", "locality", "area"]
    unit: str
    initial_population: int
    denominator: int
    exclusions: int
    exceptions: int = Field(0, description="Denominator exceptions (eCQM; QOF personalised care adjustments): kept out of the rate")
    numerator: int
    rate: float | None = Field(description="numerator / (denominator - exclusions - exceptions)")
    ci95: tuple[float, float] | None = Field(default=None, description="Wilson 95% interval of the rate")
    area_rate: float | None = None
    funnel95: tuple[float, float] | None = Field(default=None, description="Area rate +/- 1.96 SE at this unit's size")
    funnel998: tuple[float, float] | None = Field(default=None, description="Area rate +/- 3.09 SE at this unit's size")
    comparison: Literal["above", "below", "within", "no-data"] = "no-data"
    cannot_determine: int = Field(0, description="Patients whose result cannot be determined because a codelist the "
                                  "measure needs is declared but not supplied (carepath codelists import): left out "
                                  "of every count above and of the rate")
    missing_codelists: list[str] = Field(default_factory=list, description="The clusters not supplied, e.g. FOOTEXAM_COD")

    @computed_field(description="The unit in words: a practice's name (engine/app/data/practices.csv); an MDT or locality as it is")  # type: ignore[prop-decorator]
    @property
    def unit_name(self) -> str | None:
        return unit_name(self.unit_kind, self.unit)


class AuditOut(BaseModel):
    unit_kind: str
    patients: int
    evaluated_from: dt.date | None
    evaluated_to: dt.date | None
    rows: list[MeasureFigures]
    data_problems: int = Field(0, description="Patients whose latest evaluation failed (not in these figures' update)")
    counted_at: Instant | None = Field(None, description="When these figures were counted: they are kept until a "
                                           "stored evaluation changes")
    recounting: bool = Field(False, description="The stored evaluations changed since counted_at: the figures are "
                                                "being counted again (served meanwhile: counting a large registry takes a while)")


class DrillPatient(PracticeNamed):
    patient: str = Field(description="NHS number, or a pseudonym for auditors")
    name: str | None = None
    practice: str | None
    mdt: str | None
    group: Literal["numerator", "not-met", "excluded", "exception", "not-in-denominator", "cannot-determine"]
    why: str


class DrillOut(BaseModel):
    protocol: str
    measure: str
    unit_kind: str
    unit: str | None
    pseudonymised: bool
    patients: list[DrillPatient]


class SnapshotIn(BaseModel):
    as_of: Day


class SnapshotOut(BaseModel):
    as_of: dt.date
    patients: int
    rows: int
    taken_by: str
    data_problems: list[DataProblemOut] = Field(default_factory=list,
                                                description="Patients left out because their evaluation failed (pseudonyms)")


class TrendPoint(BaseModel):
    as_of: dt.date
    denominator: int
    exclusions: int
    exceptions: int = 0
    numerator: int
    rate: float | None
    cannot_determine: int = Field(0, description="Patients whose result could not be determined on that date (a codelist "
                                  "the measure needs was not supplied): in no count above and not in the rate")


class TrendOut(BaseModel):
    protocol: str | None
    measure: str
    unit_kind: str
    unit: str
    points: list[TrendPoint]

    @computed_field(description="The unit in words: a practice's name (engine/app/data/practices.csv); an MDT or locality as it is")  # type: ignore[prop-decorator]
    @property
    def unit_name(self) -> str | None:
        return unit_name(self.unit_kind, self.unit)


# ---- protocols ------------------------------------------------------------------------------------
class ProtocolSummary(BaseModel):
    id: str
    title: str
    in_force_version: str | None
    latest_version: str
    versions: list[str]
    status: str
    owner: str


class ProtocolDetail(BaseModel):
    id: str
    version: str
    title: str
    status: str
    effective: dt.date
    owner: str
    evidence: list[str]
    description: str | None
    file: str
    content_hash: str
    in_force: bool
    valuesets: list[str]
    definitions: list[str]
    activities: list[dict[str, Any]]
    goals: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    measures: list[dict[str, Any]]


class VersionOut(BaseModel):
    version: str
    status: str
    effective: dt.date
    file: str
    content_hash: str
    in_force: bool
    published_by: str | None = None
    published_at: Instant | None = None
    note: str | None = None
    approved_by: str | None = Field(None, description="The second person who approved the publication")


class SourceOut(BaseModel):
    id: str
    version: str
    file: str
    yaml: str


class YamlIn(BaseModel):
    yaml: Annotated[str, StringConstraints(min_length=1, max_length=500_000)]
    note: ShortText | None = None


class ProblemOut(BaseModel):
    file: str
    line: int
    column: int
    severity: str
    message: str
    expected: str | None = None
    suggestion: str | None = None
    text: str = Field(description="file:line:column: severity: message, as the CLI prints it")


class ValidationOut(BaseModel):
    valid: bool
    protocol: str | None = None
    version: str | None = None
    title: str | None = None
    status: str | None = None
    problems: list[ProblemOut]


class ImpactIn(YamlIn):
    as_of: Day | None = None


class AddedRemoved(BaseModel):
    added: int
    removed: int


class ImpactExample(BaseModel):
    nhs_number: str
    practice: str | None
    practice_name: str | None = Field(None, description="The practice's name beside its ODS code (engine.app.impact: the CLI's JSON carries it too)")
    change: str = Field(description="What changes for this patient, e.g. 'task added: ...', 'clinical flag added: ...'")
    why: str = Field(description="The why-line of what changed")


class ImpactOut(BaseModel):
    """engine.app.impact.Report.as_dict: the same numbers `carepath impact --format json` prints for the same
    draft, population and date. Clinical flags (safety: red / amber) and compliance flags (audit and QOF
    gaps) are counted apart; a task or flag counts once per patient."""
    protocol: str
    old: str | None = Field(description="The version in force on as_of it is compared with (null: a new pathway)")
    new: str
    as_of: dt.date
    patients: int = Field(description="Patients evaluated")
    register_old: int
    register_new: int
    entering: int
    leaving: int
    totals: dict[str, int] = Field(description="tasks_added, tasks_removed, tasks_changed, clinical_flags_added, "
                                               "clinical_flags_removed, compliance_flags_added, compliance_flags_removed, "
                                               "care_plan_changes, tier_changes")
    tasks_added: dict[str, int] = Field(description="By task title")
    tasks_removed: dict[str, int]
    tasks_changed: dict[str, int]
    clinical_flags_added: dict[str, int] = Field(description="By 'code (level)'")
    clinical_flags_removed: dict[str, int]
    compliance_flags_added: dict[str, int]
    compliance_flags_removed: dict[str, int]
    care_plan_changes: dict[str, int]
    tiers: dict[str, int]
    by_role: dict[str, AddedRemoved] = Field(description="Tasks added / removed by assigned role")
    by_provider: dict[str, AddedRemoved] = Field(description="Tasks added / removed by assigned provider")
    by_practice: dict[str, dict[str, int]] = Field(description="Per practice: entering, leaving, tasks_added, tasks_removed, "
                                                             "clinical_flags_added/removed, compliance_flags_added/removed")
    measures: dict[str, dict[str, int]]
    examples: list[ImpactExample] = Field(description="Example patients (a few per kind of change) and why")


class ImpactRunOut(BaseModel):
    id: int
    status: Literal["queued", "running", "done", "failed", "interrupted"] = Field(
        description="interrupted: the service restarted during the run; start it again")
    protocol: str
    from_version: str | None
    to_version: str
    as_of: dt.date
    done: int = Field(description="Patients evaluated so far")
    total: int = Field(description="Patients in the registry when the run started (0 until it starts)")
    created_by: str
    created_at: Instant
    updated_at: Instant
    finished_at: Instant | None
    error: str | None
    result: ImpactOut | None = Field(description="When done")
    url: str = Field(description="Where to follow the run (GET)")


class PublishOut(BaseModel):
    protocol: str
    version: str
    file: str
    status: str
    in_force: bool
    published_by: str = Field(description="The author, who submitted the version")
    published_at: Instant
    approved_by: str | None = Field(None, description="The second clinical lead, who approved it")
    warnings: list[ProblemOut]


class DraftOut(BaseModel):
    id: int
    protocol: str
    version: str
    status: str = Field(description="awaiting-approval | published | withdrawn")
    submitted_by: str
    submitted_at: Instant
    note: str | None = None
    decided_by: str | None = None
    decided_at: Instant | None = None
    warnings: list[ProblemOut] = Field(default_factory=list)


class HealthOut(BaseModel):
    status: str
    database: str
    protocols: list[str]
    protocol_problems: int
