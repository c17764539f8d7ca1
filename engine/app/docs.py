"""A protocol as a readable summary for clinicians (Markdown): who is on it, what is due when, who does
it (from the role agreements, locality by locality), what triggers escalation, how it is audited, and
the evidence behind each line. Used by `carepath docs`.
"""
from __future__ import annotations

from pathlib import Path

import datetime as dt
from collections import defaultdict

from engine.ir import nodes as ir
from engine.ir.unit_display import display_unit, display_units_in
from engine.ir.words import identifier_words
OPS = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}
NEG = {">": "≤", ">=": "<", "<": "≥", "<=": ">", "==": "≠", "!=": "="}


def plain(node, neg: bool = False) -> str:
    """A condition in words; definitions keep their names (explained under Definitions)."""
    n = node
    if isinstance(n, ir.Named):
        name = identifier_words(n.name)
        if n.type == ir.BOOL:
            return f"not {name}" if neg else name
        return name
    if isinstance(n, ir.Not):
        return plain(n.item, not neg)
    if isinstance(n, (ir.And, ir.Or)):
        conj = isinstance(n, ir.And) != neg
        parts = [plain(i, neg) for i in n.items]
        parts = [f"({p})" if (" and " in p or " or " in p) and len(n.items) > 1 else p for p in parts]
        return (" and " if conj else " or ").join(parts)
    if isinstance(n, ir.Exists):
        what = _events(n.source)
        return f"no {what}" if neg else what
    if isinstance(n, ir.Present):
        what = ir.describe(n.item)
        return f"{what} not recorded" if neg else f"{what} recorded"
    if isinstance(n, ir.Compare):
        left, right = ir.unwrap(n.left), ir.unwrap(n.right)
        if isinstance(left, ir.Attr) and left.name == "date" and isinstance(right, ir.Attr) and right.name == "date":
            word = {">": "after", "<": "before", ">=": "on or after", "<=": "on or before", "==": "on the same day as",
                    "!=": "not on the day of"}[n.op]
            text = f"{_events(left.event)} {word} {_events(right.event)}"
            return f"not ({text})" if neg else text
        op = NEG[n.op] if neg else OPS[n.op]
        rtext = ir.format_const(right) if isinstance(right, ir.Const) else ir.describe(n.right)
        return f"{ir.describe(n.left)} {op} {rtext}"
    if isinstance(n, ir.Const) and n.type == ir.BOOL:
        return "never" if bool(n.value) == neg else "always"
    text = ir.describe(n)
    return f"not ({text})" if neg else text


def _events(node) -> str:
    n = ir.unwrap(node)
    if isinstance(n, ir.Pick) and n.how == "latest":
        return ir.describe(n.source) + " recorded" if not isinstance(ir.unwrap(n.source), ir.Window) else ir.describe(n.source)
    return ir.describe(node)


def _define_text(node) -> str:
    n = ir.unwrap(node)
    if isinstance(n, ir.Sum):
        lines = []
        for item in n.items:
            it = ir.unwrap(item)
            if isinstance(it, ir.Points):
                lines.append(f"{it.points:+g} if {plain(it.when)}")
            else:
                lines.append(f"+ {ir.describe(item)}")
        return "the sum of: " + "; ".join(lines)
    if n.type == ir.BOOL:
        return plain(n)
    return ir.describe(n)


def _value_text(node) -> str:
    """A measure's number per person in words: a definition's label (or name), else the expression."""
    if isinstance(node, ir.Named):
        return f"{ir.describe(node)} ({_define_text(node)})" if node.label else ir.describe(node)
    return _define_text(node)


def _assignments(proto, target: str, default_role: str, agreements) -> list[str]:
    """Who does a piece of work, by locality (from the role agreements), as lines."""
    from engine.language.agreements import resolve
    areas: dict[str, list[str]] = {}
    for ag in agreements:
        for loc, mdts in ag.localities.items():
            areas.setdefault(loc, [])
            areas[loc] += [m for m in mdts if m not in areas[loc]]
    places = [(loc, m) for loc in sorted(areas) for m in areas[loc]] or [(None, None)]
    groups: dict[str, list[str]] = defaultdict(list)
    for loc, mdt in places:
        r = resolve(agreements, proto.id, target, {"locality": loc, "mdt": mdt, "practice": None})
        if r is None:
            key = f"{default_role} (no role agreement: default response time)"
        else:
            a = r.assign
            resp = ", ".join(f"{k} {v}" for k, v in a.respond.items())
            key = f"{a.role_for(default_role)} - {a.team + ', ' if a.team else ''}{a.provider} ({resp}) [{r.agreement.key}]"
            if (a.action or a.refer_to) and a.role and a.role != default_role:  # the provider's task is the referral
                key += f", as: {r.task_title('the task above', default_role)}"
        where = mdt or "everywhere"
        if where not in groups[key]:
            groups[key].append(where)
    if len(groups) == 1:
        return [next(iter(groups))]
    return [f"{k}: {', '.join(v)}" for k, v in groups.items()]


# comparison symbols of filters -> words (units: engine.ir.unit_display, the one table)
_WORDS = ((" == ", " is "), (" != ", " is not "), (" >= ", " ≥ "), (" <= ", " ≤ "))


def tidy(text: str) -> str:
    """A condition in words, for a clinician: units as written on a results report, 'is' rather than
    '==', names without underscores."""
    text = display_units_in(text)
    for a, b in _WORDS:
        text = text.replace(a, b)
    return text.replace("_", " ").replace("  ", " ").strip()


def own_initial_population(proto, measure) -> ir.Node | None:
    """A measure's own initial population (`initial_population:`), None when it is the register (no
    `initial_population:`, or one the same as the protocol's `population:`). For a measure counted per episode,
    the first episode's (its steps are `measure:<id>:ip#k` = that episode exists and the initial population)."""
    k = f"measure:{measure.id}"
    if measure.episode_based:
        ip = proto.all_conditions.get(f"{k}:ip#1")
        if isinstance(ip, ir.And) and len(ip.items) == 2 and isinstance(ip.items[0], ir.Exists):
            ip = ip.items[1]
    else:
        ip = proto.all_conditions.get(f"{k}:ip")
    return None if ip is None or ip == proto.all_conditions.get("population") else ip


def clinical_words(proto) -> dict[str, object]:
    """Every condition of a protocol in words, from the IR (what the engines run), keyed as the page
    asks for it: 'register' (lines), 'activity:<id>:done' / ':applies' / ':excepted', 'rule:<id>',
    'goal:<id>:applies' / ':met', 'measure:<id>:ip' (only a measure's own initial population: without it
    the register) / ':den' / ':excl' / ':num' / ':value', 'define:<name>'. The web
    protocol page and `carepath docs` say the same thing: no expressions, no raw YAML."""
    p = proto
    out: dict[str, object] = {}
    lines = []
    pop = p.all_conditions.get("population")
    if pop is not None:
        items = ir.unwrap(pop).items if isinstance(ir.unwrap(pop), ir.And) else (pop,)
        for i in items:
            sub = ir.unwrap(i).items if isinstance(ir.unwrap(i), ir.And) else (i,)
            lines += [plain(x) for x in sub]
    if p.since is not None:
        lines.append(f"on the register since: {ir.describe(p.since)}")
    out["register"] = lines
    for a in p.activities:
        out[f"activity:{a.id}:done"] = _events(a.done_by)
        if a.has_when:
            out[f"activity:{a.id}:applies"] = plain(p.all_conditions[f"activity:{a.id}:applies"])
        if a.has_excepted_when:
            out[f"activity:{a.id}:excepted"] = plain(p.all_conditions[f"activity:{a.id}:excepted"])
    for g in p.goals:
        applies = p.all_conditions.get(f"goal:{g.id}:applies")
        if applies is not None and not isinstance(ir.unwrap(applies), ir.Const):
            out[f"goal:{g.id}:applies"] = plain(applies)
        out[f"goal:{g.id}:met"] = plain(p.all_conditions[f"goal:{g.id}:met"])
    for r in p.rules:
        out[f"rule:{r.id}"] = plain(p.all_conditions[f"rule:{r.id}"])
    for m in p.measures:
        k = f"measure:{m.id}"
        ip = own_initial_population(p, m)
        if ip is not None:
            out[f"{k}:ip"] = plain(ip)
        for part in ("den", "excl", "num"):
            node = p.all_conditions.get(f"{k}:{part}")
            if node is not None and not (part == "den" and isinstance(ir.unwrap(node), ir.Const)):
                out[f"{k}:{part}"] = plain(node)
        value = {**p.values, **p.undetermined_values}.get(f"{k}:value")
        if value is not None:  # `value:` a number per person
            out[f"{k}:value"] = _value_text(value)
    for name, node in p.definitions.items():
        out[f"define:{name}"] = _define_text(node)
    return {k: [tidy(x) for x in v] if isinstance(v, list) else tidy(v) for k, v in out.items()}


def render(proto, agreements=(), in_force: bool | None = None) -> str:
    p = proto
    out: list[str] = []
    w = out.append
    status = p.status + ("" if in_force is None else ", in force" if in_force else ", not in force today")
    w(f"# {p.title}")
    w("")
    w(f"`{p.id}` version **{p.version}** ({status}), effective {p.effective}, owner: {p.owner}.")
    if p.description:
        w("")
        w(" ".join(p.description.split()))
    w("")
    w("**Evidence:** " + "; ".join(p.evidence))
    w("")
    if getattr(p, "uses", None):  # shared definitions (engine/language/shared.py): their names start `<id>.`
        w("**Shared definitions:** " + "; ".join(f"`{u.id}@{u.version}` ({Path(u.source).name}: `{u.id}.<name>` below)"
                                              for u in p.uses))
        w("")
    w("## Who is on it")
    w("")
    pop = p.all_conditions.get("population")
    if pop is not None:
        items = ir.unwrap(pop).items if isinstance(ir.unwrap(pop), ir.And) else (pop,)
        for i in items:
            sub = ir.unwrap(i).items if isinstance(ir.unwrap(i), ir.And) else (i,)
            for s in sub:
                w(f"- {plain(s)}")
    if p.since is not None:
        w(f"- on the register since: {ir.describe(p.since)}")
    w(f"- measurement period: {p.period} ending on the reference date")
    if p.activities:
        w("")
        w("## What is due when, and who does it")
        w("")
        for a in p.activities:
            applies = f" - only when {plain(p.all_conditions[f'activity:{a.id}:applies'])}" if a.has_when else ""
            w(f"### {a.title}{applies}")
            w("")
            w(f"- every **{a.every}** (due {a.due_soon} before; overdue after); done when: {_events(a.done_by)}")
            if a.has_excepted_when:
                w(f"- not needed (excepted) when: {plain(p.all_conditions[f'activity:{a.id}:excepted'])}")
            for line in _assignments(p, a.id, a.role, agreements):
                w(f"- who: {line}")
            if a.because:
                w(f"- why: {a.because}")
            if a.patient_text:
                w(f"- for the patient: \"{a.patient_text}\"")
            w("")
    if p.goals:
        w("## Goals")
        w("")
        for g in p.goals:
            applies = p.all_conditions.get(f"goal:{g.id}:applies")
            when = "" if applies is None or isinstance(ir.unwrap(applies), ir.Const) else f" (when {plain(applies)})"
            w(f"- **{g.title}**{when}: {plain(p.all_conditions[f'goal:{g.id}:met'])}" + (f" - {g.because}" if g.because else ""))
        w("")
    if p.rules:
        w("## What triggers action or escalation")
        w("")
        for r in p.rules:
            w(f"### {r.title}")
            w("")
            w(f"- when: {plain(p.all_conditions[f'rule:{r.id}'])}")
            if r.task:
                within = f", within {r.task.within}" if r.task.within else ""
                w(f"- task: **{r.task.title}** ({r.task.priority}{within})")
                for line in _assignments(p, f"rule:{r.id}", r.task.role, agreements):
                    w(f"  - who: {line}")
            if r.flag:
                w(f"- flag: {r.flag.code} ({r.flag.level})" + (f": {r.flag.text}" if r.flag.text else ""))
            if r.escalation:
                to = "the patient's MDT case conference" if r.escalation.to == "mdt" else r.escalation.to
                w(f"- escalation: **{r.escalation.title}** to {to} ({r.escalation.priority})")
                if r.escalation.to != "mdt":
                    for line in _assignments(p, f"escalation:{r.id}", r.escalation.to, agreements):
                        w(f"  - who: {line}")
            w(f"- because: {r.because}" + (f" ({'; '.join(r.evidence)})" if r.evidence else ""))
            w("")
    if p.segments or p.tiers or p.score:
        w("## Stratification")
        w("")
        if p.score:
            w(f"- score: **{p.score.replace('_', ' ')}** = {_define_text(p.definitions[p.score])}")
        for s in p.segments:
            w(f"- segment **{s.title}**: {plain(p.all_conditions[f'segment:{s.id}'])}")
        for t in p.tiers:
            w(f"- tier {t.level} **{t.title}** (the first tier that holds, in this order): {plain(p.all_conditions[f'tier:{t.id}'])}"
              + (f" - {t.because}" if t.because else ""))
            if t.task:
                for line in _assignments(p, f"tier:{t.id}", t.task.role, agreements):
                    w(f"  - task **{t.task.title}**, who: {line}")
            if t.escalation:
                w(f"  - escalation: {t.escalation.title}")
        w("")
    if p.measures:
        w("## How it is audited")
        w("")
        for m in p.measures:
            k = f"measure:{m.id}"
            sfx = "#1" if getattr(m, "episode_based", False) else ""  # per episode: the steps of the first one
            den = p.all_conditions.get(f"{k}:den{sfx}")
            w(f"- **{m.id}** {m.title}" + (" (counted per episode)" if sfx else ""))
            own_ip = own_initial_population(p, m)
            who = plain(own_ip) if own_ip is not None else "on the register"
            if den is not None and not isinstance(ir.unwrap(den), ir.Const):
                w(f"  - denominator: {who} and {plain(den)}")
            elif own_ip is not None:
                w(f"  - denominator: {who}")
            if f"{k}:excl{sfx}" in p.all_conditions:
                w(f"  - exclusions: {plain(p.all_conditions[f'{k}:excl{sfx}'])}" + (" (patients meeting the target are kept)" if m.achievers_kept else ""))
            if f"{k}:exc{sfx}" in p.all_conditions:
                w(f"  - exceptions: {plain(p.all_conditions[f'{k}:exc{sfx}'])}")
            value = {**p.values, **p.undetermined_values}.get(f"{k}:value") if getattr(m, "has_value", False) else None
            if value is not None:  # `value:` a number per person (the numerator may be left out)
                ip = p.all_conditions.get(f"{k}:ip")
                if ip is not None and own_ip is None:  # an own initial population is in the denominator line
                    w(f"  - who is counted: {plain(ip)}")
                w(f"  - number per person: {_value_text(value)}")
            num = p.all_conditions[f"{k}:num{sfx}"]
            if value is None or num != ir.Const(True, ir.BOOL):
                w(f"  - numerator: {plain(num)}")
            if m.evidence:
                w(f"  - evidence: {'; '.join(m.evidence)}")
        w("")
    if p.definitions:
        w("## Definitions")
        w("")
        for name, node in p.definitions.items():
            w(f"- **{identifier_words(name)}**: {_define_text(node)}")
        w("")
    w("## Codes")
    w("")
    for name, vs in sorted(p.valuesets.items()):
        src = vs.source.split("/")[-1]
        kinds = f", {'/'.join(sorted(vs.kinds))} only" if vs.kinds else ""
        what = f"every {'/'.join(sorted(vs.kinds))} record" if vs.any_code else f"{len(vs)} code(s) from {src}{kinds}"
        unit = f", values in {display_unit(vs.unit)}" if display_unit(vs.unit) else ""
        w(f"- {name.replace('_', ' ')}: {what}{unit}")
    missing = p.missing_clusters
    if missing:
        from engine.language.determinacy import blocked_by
        blocks = blocked_by(p)
        w("")
        w("**Codelists not supplied** (declared by cluster; until the site imports them these cannot be determined):")
        w("")
        for c in missing:
            what = ", ".join(k.replace(":", " ", 1) for k in blocks.get(c.cluster, [])) or "nothing yet"
            w(f"- {c.valueset.replace('_', ' ')}: {c.publisher or ''} {c.cluster}"
              + (f" (refset {c.refset})" if c.refset else "") + f" — cannot determine {what}")
    w("")
    return "\n".join(out)


def render_index(entries: list[tuple[str, str, str]], today: dt.date) -> str:
    lines = [f"# Protocol library (generated {today.isoformat()} by `carepath docs`)", "",
             "| Protocol | Version | Status | File |", "|---|---|---|---|"]
    for title, key, status, *rest in entries:
        version = key.rpartition("@")[2]
        lines.append(f"| {title} | {version} | {status} | [{key}.md]({key}.md) |")
    return "\n".join(lines) + "\n"


def render_agreement(ag) -> str:
    """A role agreement for the people it binds: the area, the parties, and who does what how fast."""
    out = [f"# {ag.title}", "", f"`{ag.id}` version **{ag.version}** ({ag.status}), effective {ag.effective}.", ""]
    if ag.localities:
        out += ["## The area", "", "| Locality | MDT | Practices |", "|---|---|---|"]
        for loc, mdts in ag.localities.items():
            for mdt, practices in mdts.items():
                out.append(f"| {loc} | {mdt} | {len(practices)}: {', '.join(practices)} |")
        out.append("")
    out += ["## Parties", "", "| Party | Kind | Opening hours (response times in hours count these) |", "|---|---|---|"]
    out += [f"| {pid}{' - ' + ag.party_names[pid] if ag.party_names.get(pid, pid) != pid else ''} | {kind} | "
            f"{ag.hours[pid] if pid in ag.hours else 'round the clock (not stated)'} |" for pid, kind in ag.parties.items()]
    out += ["", "## Who does what", "", "| Work | Where | Provider / team / role | Response |", "|---|---|---|---|"]
    for a in ag.assigns:
        where = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in a.where.items()) or "everywhere"
        who = " / ".join(x for x in (a.provider, a.team, a.role or "(the protocol's role)") if x)
        if a.refer_to or a.action:
            who += f": {a.action or 'refers'}" + (f" (referral to {a.refer_to})" if a.refer_to else "")
        resp = ", ".join(f"{k} {v}" for k, v in a.respond.items())
        out.append(f"| {a.protocol}/{a.target} | {where} | {who} | {resp} |")
    return "\n".join(out) + "\n"
