"""Per-patient evaluation: derive -> durable-rules -> assign -> care plan, tasks, flags, measures.

    record ──► Deriver (temporal abstractions, evidence) ──► one summary fact
                                                          │
    protocol ─► lowered conditions ─► durable-rules ruleset ◄┘  (fresh session, deleted after)
                                                          │ keys of the conditions that held
                                                          ▼
    outputs: care-plan items (met/due/overdue/excepted), tasks (assigned by role agreement with
    due times), flags, goals and measure results, each with protocol@version, source and why.

`engine="python"` evaluates the same lowered conditions in plain Python instead of durable-rules:
the reference the spec tests compare the rule engine against.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from engine.calendar import ResponseTime
from engine.engines import duckdb as batch_engine, durable, reference
from engine.engines.derive import Context, Deriver, shift
from engine.evaluation.explain import clauses, evidence_items, fmt_value, score_lines, sentence
from engine.evaluation.outputs import (Assignment, CannotDetermine, CarePlanItem, EpisodeResult, Evaluation, Flag, GoalResult,
                                     MeasureResult, ProtocolResult, Provenance, ScoreResult, SegmentResult, Task, TierResult)
from engine.language.determinacy import reason
from engine.ir import measure_steps, nodes as ir
from engine.language.agreements import Agreement, Resolution, resolve
from engine.language.model import Protocol
from engine.language.determinacy_guard import decided_false
from engine.records.model import PatientRecord

RAISE_TIME = dt.time(9, 0)  # tasks raised by an "as of" evaluation start their clock at 09:00 that day
# Used only where neither a role agreement nor the rule sets a time (`carepath validate` warns).
DEFAULT_RESPONSE = {"urgent": ResponseTime(1, "working days"), "high": ResponseTime(10, "working days"),
                    "routine": ResponseTime(20, "working days"), "low": ResponseTime(40, "working days")}


@dataclass
class Options:
    engine: str = "durable"  # durable | python | batch
    raised_at: dt.datetime | None = None  # when new tasks start their clock (default: reference date 09:00)


def evaluate(record: PatientRecord, protocols: list[Protocol], agreements: list[Agreement] | None = None,
             as_of: dt.date | None = None, period_start: dt.date | None = None,
             options: Options | None = None) -> Evaluation:
    as_of = as_of or dt.date.today()
    options = options or Options()
    agreements = agreements or []
    p = record.patient
    deceased = p.death_date is not None and p.death_date <= as_of
    results, first_ctx = [], None
    for proto in protocols:
        ctx = Context.as_of(as_of, proto.period, period_start)
        first_ctx = first_ctx or ctx
        results.append(_evaluate_one(record, proto, agreements, ctx, options, deceased))
    ctx = first_ctx or Context.as_of(as_of, ir.Duration(12, "months"), period_start)
    return Evaluation(nhs_number=p.nhs_number, reference_date=as_of, period_start=ctx.period_start,
                      period_end=ctx.period_end, deceased=deceased, protocols=results)


ENGINES = {"durable": durable.fired, "python": reference.fired, "batch": batch_engine.fired}


def fired_conditions(record: PatientRecord, proto: Protocol, ctx: Context, engine: str = "durable") -> tuple[set[str], Deriver]:
    """The keys of the conditions that held for this patient, by the chosen engine, and the deriver that
    explains them (engine.engines: one interface for every engine)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    return ENGINES[engine](record, proto, ctx)


def _evaluate_one(record: PatientRecord, proto: Protocol, agreements: list[Agreement], ctx: Context,
                  options: Options, deceased: bool) -> ProtocolResult:
    res = ProtocolResult(protocol=proto.id, version=proto.version, title=proto.title, on_register=False, register_why="")
    if deceased:
        res.register_why = f"Not on {proto.title}: died on {record.patient.death_date.isoformat()}."
        counted = [m for m in proto.measures if m.counts_deceased]
        fired, d = fired_conditions(record, proto, ctx, options.engine) if counted else (set(), None)
        res.measures = [_measure(m, proto, fired, d) if m.counts_deceased else MeasureResult(measure=m.id, title=m.title, initial_population=False, denominator=False,
                                      exclusion=False, numerator=False, has_value=m.has_value,
                                      basis="episode" if m.episode_based else "patient",
                                      counts=(dict.fromkeys(("initial_population", "denominator", "exclusion",
                                                             "exception", "numerator"), 0) if m.episode_based else None),
                                      provenance=_prov(proto, f"measure:{m.id}", "Patient had died before the reference date."))
                        for m in proto.measures]
        return res
    und = proto.undetermined  # condition / element key -> missing clusters (engine/language/determinacy.py)
    if "population" in und:  # the register needs a missing codelist: nothing can be decided, for anyone
        clusters = list(und["population"])
        res.register_undetermined = True
        res.register_why = f"{proto.title}: {reason(clusters)} (the register needs it); nothing of it was evaluated."
        res.cannot_determine.append(CannotDetermine(source="population", id="population", title=f"{proto.title} register",
                                                    clusters=clusters, why=res.register_why))
        res.measures = [_undetermined_measure(m, proto, clusters) for m in proto.measures]
        return res
    fired, d = fired_conditions(record, proto, ctx, options.engine)
    on = "population" in fired
    res.on_register = on
    pop = proto.conditions.get("population")
    res.register_why = sentence(("On the register for " if on else "Not on the register for ") + proto.title,
                                clauses(pop, d) if pop is not None else [])
    raised = options.raised_at or dt.datetime.combine(ctx.reference_date, RAISE_TIME)
    place = {"locality": record.patient.locality, "mdt": record.patient.mdt, "practice": record.patient.practice}
    nhs = record.patient.nhs_number

    def assignment(target: str, role: str, priority: str) -> tuple[Assignment, ResponseTime | None, Resolution | None]:
        r = resolve(agreements, proto.id, target, place)
        if r is None:
            return Assignment(role=role), None, None
        rt = r.assign.response_for(priority)
        return Assignment(provider=r.assign.provider, team=r.assign.team, role=r.assign.role_for(role),
                          response=str(rt) if rt else None, agreement=r.agreement.key), rt, r

    def due_time(priority: str, rt: ResponseTime | None, clinical: ResponseTime | None,
                 not_after: dt.datetime | None = None, r: Resolution | None = None) -> dt.datetime:
        """The earliest of the agreed response time (hours: the provider's open hours), the clinical deadline and
        the activity's due date; moved into the provider's opening hours when it would fall while it is closed."""
        hours = r.hours if r is not None else None
        options_ = [rt.due_from(raised, hours)] if rt is not None else []
        if clinical is not None:
            options_.append(clinical.due_from(raised))  # a clinical deadline is calendar time
        if not_after is not None:
            options_.append(not_after)
        due = min(options_) if options_ else DEFAULT_RESPONSE[priority].due_from(raised)
        return hours.fit(due, raised) if hours is not None else due

    def cannot(source: str, ident: str, title: str, clusters) -> str:
        why = f"{title}: {reason(clusters)}."
        res.cannot_determine.append(CannotDetermine(source=source, id=ident, title=title, clusters=list(clusters), why=why))
        return why

    if on:
        for a in proto.activities:
            key = f"activity:{a.id}"
            blocked = next((und[k] for k in (f"{key}:applies", f"{key}:recent", f"{key}:in_interval") if k in und), None)
            if a.has_when and f"{key}:applies" not in fired and (f"{key}:applies" not in und or
                                                                decided_false(proto, f"{key}:applies", d)):
                continue  # not for this patient (e.g. a frailty review when not moderately or severely frail)
            if blocked is None and f"{key}:excepted" in und and not ({f"{key}:recent", f"{key}:in_interval"} & fired):
                blocked = und[f"{key}:excepted"]  # not done: overdue, or excepted? cannot tell
            if blocked is not None:  # no task, no flag: shown as unknown with the reason
                why = cannot(key, a.id, a.title, blocked)
                assigned, _, _ = assignment(a.id, a.role, a.priority)
                res.care_plan.append(CarePlanItem(activity=a.id, title=a.title, status="unknown", assigned=assigned,
                                                  patient_text=a.patient_text, provenance=_prov(proto, key, why)))
                continue
            last = d.eval(a.done_by)
            last_day = last.day if last is not None else None
            not_counted = None  # done, but `done_when` says it does not count (e.g. a review without its MRC grade)
            if a.has_done_when and last_day is not None and f"{key}:in_interval" not in fired:
                not_counted, last_day = last_day, None
            since = d.eval(proto.since) if proto.since is not None else None
            if f"{key}:recent" in fired:
                status = "met"
            elif f"{key}:in_interval" in fired:
                status = "due"
            elif f"{key}:excepted" in fired:
                status = "excepted"
            else:
                status = "overdue"
            if last_day is not None:
                next_due = last_day + shift(a.every)
            elif since is not None:
                next_due = since.day + shift(a.every)
            else:
                next_due = ctx.reference_date
            if status == "overdue" and next_due > ctx.reference_date:
                status = "due"  # never done, but joined the register less than one interval ago
            why = _activity_why(a, status, last_day, next_due, d, proto)
            if not_counted is not None and status != "excepted":
                missing = "; ".join(clauses(proto.conditions[f"{key}:in_interval"], d, False))
                why += f" The one on {not_counted.isoformat()} does not count: {missing}."
            facts = d.evidence(proto.conditions[f"{key}:in_interval"])
            if status == "excepted":
                facts += d.evidence(proto.conditions[f"{key}:excepted"])
            prov = _prov(proto, key, why, evidence_items(facts, proto))
            assigned, rt, agreed = assignment(a.id, a.role, a.priority)
            res.care_plan.append(CarePlanItem(activity=a.id, title=a.title, status=status, last_done=last_day,
                                              next_due=next_due, assigned=assigned, patient_text=a.patient_text,
                                              provenance=prov))
            res.flags.append(Flag(key=f"{nhs}|{proto.id}|{key}", kind="compliance", code=a.id, level=status,
                                  text=f"{a.title}: {status}", provenance=prov))
            if status in ("due", "overdue"):
                clinical_due = dt.datetime.combine(next_due, dt.time(17, 0)) if next_due > ctx.reference_date else None
                res.tasks.append(Task(key=f"{nhs}|{proto.id}|{key}", kind="activity",
                                      title=f"{a.title} {'overdue' if status == 'overdue' else 'due'}",
                                      priority=a.priority, raised_at=raised, due=due_time(a.priority, rt, None, clinical_due, agreed),
                                      assigned=assigned, provenance=prov))
        for g in proto.goals:
            blocked = und.get(f"goal:{g.id}:applies") or (und.get(f"goal:{g.id}:met")
                                                           if f"goal:{g.id}:applies" in fired else None)
            if blocked:
                why = cannot(f"goal:{g.id}", g.id, g.title, blocked)
                res.goals.append(GoalResult(goal=g.id, title=g.title, status="unknown", patient_text=g.patient_text,
                                            provenance=_prov(proto, f"goal:{g.id}", why)))
                continue
            if f"goal:{g.id}:applies" not in fired:
                continue
            met = f"goal:{g.id}:met" in fired
            cond = proto.conditions[f"goal:{g.id}:met"]
            why = sentence(f"{g.title}: {'achieved' if met else 'not achieved'}", clauses(cond, d))
            if g.because:
                why = f"{why} {g.because}"
            res.goals.append(GoalResult(goal=g.id, title=g.title, status="achieved" if met else "not-achieved",
                                        patient_text=g.patient_text,
                                        provenance=_prov(proto, f"goal:{g.id}", why, evidence_items(d.evidence(cond), proto))))
        for seg in proto.segments:
            key = f"segment:{seg.id}"
            if key in und and not decided_false(proto, key, d):
                cannot(key, seg.id, seg.title, und[key])
            if key in fired:
                cond = proto.conditions[key]
                why = sentence(seg.title, clauses(cond, d))
                res.segments.append(SegmentResult(segment=seg.id, title=seg.title,
                                                  provenance=_prov(proto, key, why, evidence_items(d.evidence(cond), proto))))
        tier = next((t for t in proto.tiers if f"tier:{t.id}" in fired), None)
        if tier is None:  # the tiers after an undetermined one are undetermined too (determinacy.split)
            for t in proto.tiers:
                if f"tier:{t.id}" in und:
                    cannot(f"tier:{t.id}", t.id, t.title, und[f"tier:{t.id}"])
        for r in proto.rules:
            if f"rule:{r.id}" in und and not decided_false(proto, f"rule:{r.id}", d):  # (`A and B`, A false: decided)
                cannot(f"rule:{r.id}", r.id, r.title, und[f"rule:{r.id}"])
        actors = [(f"rule:{r.id}", r, r.because or r.title) for r in proto.rules if f"rule:{r.id}" in fired]
        if tier is not None:
            key = f"tier:{tier.id}"
            cond = proto.conditions[key]
            why = sentence(f"{tier.title} (tier {tier.level})", clauses(cond, d))
            if tier.because:
                why = f"{why} {tier.because}"
            res.tier = TierResult(tier=tier.id, level=tier.level, title=tier.title, protocol=proto.id, version=proto.version,
                                  provenance=_prov(proto, key, why, evidence_items(d.evidence(cond), proto)))
            actors.append((key, tier, why))
        for key, r, because in actors:
            cond = proto.conditions[key]
            why = because if key.startswith("tier:") else sentence(because, clauses(cond, d))
            prov = _prov(proto, key, why, evidence_items(d.evidence(cond), proto))
            if r.task:
                assigned, rt, agreed = assignment(key, r.task.role, r.task.priority)
                clinical = r.task.within
                title = agreed.task_title(r.task.title, r.task.role) if agreed is not None else r.task.title
                res.tasks.append(Task(key=f"{nhs}|{proto.id}|{key}", kind="rule", title=title, priority=r.task.priority,
                                      raised_at=raised, due=due_time(r.task.priority, rt, clinical, None, agreed),
                                      assigned=assigned, provenance=prov))
            if r.escalation:
                if r.escalation.to == "mdt":  # escalations to the MDT go to the patient's own case conference
                    assigned, rt, agreed = Assignment(provider=record.patient.mdt, team="MDT case conference", role="mdt"), None, None
                else:
                    assigned, rt, agreed = assignment(f"escalation:{key.split(':', 1)[1]}" if key.startswith("rule:")
                                              else f"escalation:{key}", r.escalation.to, r.escalation.priority)
                res.tasks.append(Task(key=f"{nhs}|{proto.id}|{key}|escalation", kind="escalation",
                                      title=(agreed.task_title(r.escalation.title, r.escalation.to) if agreed is not None
                                             else r.escalation.title),
                                      priority=r.escalation.priority, raised_at=raised,
                                      due=due_time(r.escalation.priority, rt, None, None, agreed), assigned=assigned,
                                      provenance=prov))
            if r.flag:
                res.flags.append(Flag(key=f"{nhs}|{proto.id}|{key}", kind="clinical", code=r.flag.code,
                                      level=r.flag.level, text=r.flag.text or r.title, provenance=prov))
        if proto.score is not None and "score" in und:
            label = proto.labels.get(proto.score) or proto.score.replace("_", " ")
            why = cannot("score", proto.score, label, und["score"])
            res.score = ScoreResult(name=proto.score, value=None, provenance=_prov(proto, "score", why))
        elif proto.score is not None:
            node = proto.definitions[proto.score]
            value = d.eval(node)
            label = proto.labels.get(proto.score) or proto.score.replace("_", " ")
            lines = score_lines(ir.unwrap(node), d) if isinstance(ir.unwrap(node), ir.Sum) else []
            why = (f"{label} {fmt_value(value)}" + (": " + ", ".join(lines) if lines else "") + "."
                   if value is not None else f"{label} missing: {'; '.join(lines) or 'a number it needs is not recorded'}.")
            res.score = ScoreResult(name=proto.score, value=None if value is None else float(value),
                                    provenance=_prov(proto, "score", why, evidence_items(d.evidence(node), proto)))
    for m in proto.measures:
        res.measures.append(_measure(m, proto, fired, d))
        if res.measures[-1].cannot_determine:
            cannot(f"measure:{m.id}", m.id, m.title, res.measures[-1].cannot_determine)
    res.data_problems = sorted(set(d.out.data_problems))
    return res


STEP_WORDS = {"ip": "initial population", "den": "denominator", "excl": "exclusion", "exc": "exception",
              "num": "numerator"}


def _populations(m, fired: set[str], key: str, sfx: str) -> dict[str, bool]:
    """The populations of one patient (sfx '') or one episode (sfx '#k'): engine/ir/measure_steps.py."""
    return measure_steps.populations(m, fired, key, sfx)


def _step_whys(m, proto: Protocol, d: Deriver, key: str, sfx: str, pops: dict[str, bool]) -> dict[str, str]:
    """Each population step's why (every step the patient / episode reached, exclusions and exceptions
    included), so a failing case shows why each population came out as it did."""
    out: dict[str, str] = {}
    reached = {"ip": True, "den": pops["ip"], "excl": pops["den"], "exc": pops["den"] and not pops["excl"],
               "num": pops["den"]}
    for step in ("ip", "den", "excl", "exc", "num"):
        cond = proto.conditions.get(f"{key}:{step}{sfx}")
        if cond is None or not reached[step]:
            continue
        truth = pops["met"] if step == "num" else pops[step] if step in ("ip", "den") else bool(d.eval(cond))
        word = STEP_WORDS[step]
        out[step] = sentence(f"{word}: {'yes' if truth else 'no'}", clauses(cond, d, truth))
    return out


def _head(m, pops: dict[str, bool]) -> str:
    if not pops["ip"]:
        return f"{m.title}: not in the initial population"
    if not pops["den"]:
        return f"{m.title}: not in the denominator"
    if pops["excl"]:
        return f"{m.title}: excluded"
    if pops["exc"]:
        return f"{m.title}: denominator exception"
    return f"{m.title}: {'numerator met' if pops['num'] else 'numerator not met'}"


def _undetermined_measure(m, proto: Protocol, clusters) -> MeasureResult:
    """A measure that cannot be decided for this patient: every population flag false, the clusters it waits
    for named; audit leaves it out of the rate and counts it apart."""
    key = f"measure:{m.id}"
    return MeasureResult(measure=m.id, title=m.title, initial_population=False, denominator=False, exclusion=False,
                         numerator=False, basis="episode" if m.episode_based else "patient", has_exceptions=m.has_exceptions,
                         has_value=m.has_value, counts=(dict.fromkeys(("initial_population", "denominator", "exclusion", "exception", "numerator"), 0)
                                 if m.episode_based else None),
                         cannot_determine=list(clusters), provenance=_prov(proto, key, f"{m.title}: {reason(clusters)}."))


def _measure_blocked(m, proto: Protocol, fired: set[str]) -> tuple[str, ...] | None:
    """The missing clusters that keep this patient's measure result from being decided, or None. Steps are
    taken in order: a patient out of the initial population or the denominator is out whatever the later
    steps need; one in the denominator needs every later step decided."""
    und, key = proto.undetermined, f"measure:{m.id}"
    if key not in und:
        return None
    if m.episode_based:  # per episode: any undetermined step undetermines the measure
        return und[key]
    for step in ("ip", "den"):
        if f"{key}:{step}" in und:
            return und[f"{key}:{step}"]
        if f"{key}:{step}" not in fired:
            return None
    return und[key]


def _measure(m, proto: Protocol, fired: set[str], d: Deriver) -> MeasureResult:
    key = f"measure:{m.id}"
    blocked = _measure_blocked(m, proto, fired)
    if blocked is not None:
        return _undetermined_measure(m, proto, blocked)
    if m.episode_based:
        return _episode_measure(m, proto, fired, d)
    pops = _populations(m, fired, key, "")
    steps = _step_whys(m, proto, d, key, "", pops)
    if not pops["ip"]:
        parts = clauses(proto.conditions[f"{key}:ip"], d, False)
    elif not pops["den"]:
        parts = clauses(proto.conditions[f"{key}:den"], d, False)
    elif pops["excl"]:
        parts = clauses(proto.conditions[f"{key}:excl"], d, True)
    elif pops["exc"]:
        parts = clauses(proto.conditions[f"{key}:exc"], d, True)
    else:
        parts = clauses(proto.conditions[f"{key}:num"], d, pops["met"])
    cond_keys = [k for k in (f"{key}:ip", f"{key}:num", f"{key}:excl", f"{key}:exc") if k in proto.conditions]
    facts = [f for k in cond_keys for f in d.evidence(proto.conditions[k])]
    value, head = None, _head(m, pops)
    if m.has_value and pops["den"] and not pops["excl"]:  # the number counts for the denominator, not the excluded
        value, steps["value"] = _measure_value(m, proto, d)
        facts += d.evidence(proto.values[f"{key}:value"])
        if proto.conditions.get(f"{key}:num") == ir.Const(True, ir.BOOL):  # no numerator: the value is the result
            head, parts = f"{m.title}: in the denominator, {steps['value']}", []
        else:
            head = f"{head}; {steps['value']}"
    uniq = {(f.source_system, f.id): f for f in facts}
    return MeasureResult(measure=m.id, title=m.title, initial_population=pops["ip"], denominator=pops["den"],
                         exclusion=pops["excl"], numerator=pops["num"], exception=pops["exc"], why_steps=steps,
                         has_exceptions=m.has_exceptions, value=value, has_value=m.has_value,
                         provenance=_prov(proto, key, sentence(head, parts),
                                          evidence_items(sorted(uniq.values(), key=lambda f: f.start), proto)))


def _measure_value(m, proto: Protocol, d: Deriver) -> tuple[float | None, str]:
    """(the patient's value, its why) for a measure with `value:`. The number is the one the deciding engine
    computed (Derived.engine_values: the summary fact for the per-patient engines, the query's column for the SQL
    engines); missing stays missing, with the reason."""
    key = f"measure:{m.id}:value"
    node = proto.values[key]
    value = d.out.engine_values[key] if key in d.out.engine_values else d.eval(node)
    value = None if value is None else float(value)
    what = ir.describe(node)
    if value is not None:
        return value, f"value {fmt_value(value)} ({what})"
    return None, f"value missing ({what}): a number it needs is not recorded"


def _episode_measure(m, proto: Protocol, fired: set[str], d: Deriver) -> MeasureResult:
    """A measure counted per episode: the populations of each episode (episode k is the k-th event of the
    measure's `episodes:` in time order), counted; the patient-level flags say whether any episode is in."""
    key = f"measure:{m.id}"
    episodes: list[EpisodeResult] = []
    counts = dict.fromkeys(("initial_population", "denominator", "exclusion", "exception", "numerator"), 0)
    steps: dict[str, str] = {}
    facts = []
    for k in range(1, m.episodes_at_most + 1):
        if f"{key}:ip#{k}" not in fired:
            continue
        pops = _populations(m, fired, key, f"#{k}")
        ep_node = next(n for n in ir.walk(proto.conditions[f"{key}:ip#{k}"])
                       if isinstance(n, ir.Named) and n.name == f"episode_{k}")
        ev = d.eval(ep_node)
        whys = _step_whys(m, proto, d, key, f"#{k}", pops)
        label = f"episode {k}" + (f" ({ev.fact.kind.value} {ev.day.isoformat()})" if ev is not None else "")
        steps.update({f"{s}#{k}": f"{label}: {w}" for s, w in whys.items()})
        episodes.append(EpisodeResult(episode=k, fact=ev.fact.id if ev is not None else None,
                                      date=ev.day if ev is not None else None, initial_population=pops["ip"],
                                      denominator=pops["den"], exclusion=pops["excl"], exception=pops["exc"],
                                      numerator=pops["num"], why=f"{label}: {_head(m, pops)}"))
        for name, flag in (("initial_population", "ip"), ("denominator", "den"), ("exclusion", "excl"),
                           ("exception", "exc"), ("numerator", "num")):
            counts[name] += int(pops[flag])
        for step in ("num", "excl", "exc"):
            if f"{key}:{step}#{k}" in proto.conditions:
                facts += d.evidence(proto.conditions[f"{key}:{step}#{k}"])
    if f"{key}:episodes_over" in fired:
        d.out.data_problems.append(f"measure {m.id}: more than {m.episodes_at_most} episodes; only the first "
                                   f"{m.episodes_at_most} are counted (raise episodes_at_most)")
    if episodes:
        why = f"{m.title}: " + "; ".join(e.why.replace(f"{m.title}: ", "")
                                          for e in episodes) + "."
    else:
        parts = clauses(proto.conditions[f"{key}:ip#1"], d, False)
        why = sentence(f"{m.title}: no episode in the initial population", parts)
        steps["ip"] = why
    uniq = {(f.source_system, f.id): f for f in facts}
    return MeasureResult(measure=m.id, title=m.title, initial_population=counts["initial_population"] > 0,
                         denominator=counts["denominator"] > 0, exclusion=counts["exclusion"] > 0,
                         numerator=counts["numerator"] > 0, exception=counts["exception"] > 0, basis="episode",
                         has_exceptions=m.has_exceptions,
                         counts=counts, episodes=episodes, why_steps=steps,
                         provenance=_prov(proto, key, why, evidence_items(sorted(uniq.values(), key=lambda f: f.start), proto)))


def _activity_why(a, status: str, last_day, next_due, d: Deriver, proto: Protocol) -> str:
    every = f"every {a.every}"
    if status == "met":
        text = f"{a.title} done on {last_day.isoformat()} ({every}); next due {next_due.isoformat()}."
    elif status == "due":
        text = (f"{a.title} due by {next_due.isoformat()}: last done {last_day.isoformat()} ({every})."
                if last_day else f"{a.title} due by {next_due.isoformat()}: not yet done since joining the register ({every}).")
    elif status == "excepted":
        parts = clauses(proto.conditions[f"activity:{a.id}:excepted"], d, True)
        text = sentence(f"{a.title} excepted", parts)
    else:
        text = (f"{a.title} overdue since {next_due.isoformat()}: last done {last_day.isoformat()} ({every})."
                if last_day else f"{a.title} overdue: no record of it ({every}).")
    if a.because and status != "met":
        text += f" {a.because}"
    return text


def _prov(proto: Protocol, source: str, why: str, evidence=None) -> Provenance:
    return Provenance(protocol=proto.id, version=proto.version, source=source, why=why, evidence=evidence or [])

