"""The protocol browser: every protocol rendered for clinicians (register, definitions, activities
with intervals and responsible roles from the role agreements, rules with escalations, goals,
measures, evidence), the version history with the differences between versions, and the impact
preview of a draft (a draft version on file, or pasted text) over the registry population.

Reads reuse `api.routers.protocols`. The impact preview runs in the background (engine/app/impact_runs.py,
the same run as POST /protocols/impact/runs, engine.app.impact's one preview): pasted text is checked
by the API's own validation first; the run's page shows progress, then the result (logged).
"""
from __future__ import annotations

import datetime as dt
import difflib
from functools import lru_cache
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request
from pydantic import ValidationError
from ruamel.yaml import YAML

from sqlmodel import Session

from api.deps import Principal, log_access
from api.routers import protocol_drafts as pd
from api.security import PERMISSIONS
from engine.app import approvals, impact_runs
from engine.app.protocol_store import example_patients
from api.routers import protocols as papi
from api.schemas import DraftOut, ImpactIn, PublishOut, ValidationOut, YamlIn
from api.web.common import PREFIX, PageRoute, check_csrf, need, page_user, redirect, render, state_of
from engine.app.docs import clinical_words
from engine.language.library import version_key

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
Pid = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
VERSION_RE = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"
Version = Annotated[str | None, Query(pattern=VERSION_RE)]
SECTIONS = (("activities", "Activities"), ("rules", "Rules"), ("goals", "Goals"), ("measures", "Measures"))
META = ("title", "status", "effective", "owner", "description", "evidence", "period")


def _raw(path: str) -> dict:
    """The file as plain data, for display. Parsed once per file content (keyed by modification time
    and size): the protocol page asks for each role agreement once per activity and rule, and parsing
    the area agreement (111 practices) every time made the diabetes page take 2-9 s."""
    try:
        st = FsPath(path).stat()
    except OSError:
        return {}
    return _parsed(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _parsed(path: str, mtime_ns: int, size: int) -> dict:
    try:
        data = YAML(typ="safe").load(FsPath(path).read_text(encoding="utf-8"))
    except Exception:  # the loader accepted it; this is only for display
        return {}
    return data if isinstance(data, dict) else {}


def _text(v: Any) -> str:
    """A YAML value in words for the difference tables: lists as "a; b", mappings as "key value, ..."
    (evidence and value-set entries were shown as raw JSON)."""
    if v is None:
        return ""
    if isinstance(v, list):
        return "; ".join(_text(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {_text(x)}" for k, x in v.items())
    return str(v)


def _word_label(key: str, proto) -> str:
    """'rule:hba1c-high' -> "Rule ‘HbA1c 58 mmol/mol or more’: when" (titles from the newer version)."""
    kind, _, rest = key.partition(":")
    ident, _, part = rest.partition(":")
    titles = {"activity": {a.id: a.title for a in proto.activities}, "rule": {r.id: r.title for r in proto.rules},
              "goal": {g.id: g.title for g in proto.goals}, "measure": {m.id: f"{m.id} {m.title}" for m in proto.measures}}
    parts = {"done": "done when", "applies": "applies when", "excepted": "not needed when", "met": "met when", "ip": "initial population", "den": "denominator",
             "excl": "exclusions", "num": "numerator", "exc": "exceptions", "": "when"}
    if kind == "register":
        return "Register"
    if kind == "define":
        return f"Definition ‘{rest.replace('_', ' ')}’"
    title = titles.get(kind, {}).get(ident, ident)
    return f"{kind.capitalize()} ‘{title}’: {parts.get(part, part)}"


def word_changes(a, b) -> list[tuple[str, str, str]]:
    """What changed between two versions, in the clinical words of the protocol page (from the IR)."""
    wa, wb = clinical_words(a), clinical_words(b)
    text = lambda v: "; ".join(v) if isinstance(v, list) else (v or "")  # noqa: E731
    keys = sorted(set(wa) | set(wb), key=lambda k: (k != "register", k.startswith("define:"), k))
    return [(_word_label(k, b if k in wb else a), text(wa.get(k)), text(wb.get(k))) for k in keys
            if text(wa.get(k)) != text(wb.get(k))]


def _flatten(v: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(v, dict):
        out: dict[str, str] = {}
        for k, x in v.items():
            out.update(_flatten(x, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "value": _text(v)}


def _assignments(state, pid: str, target: str) -> list[dict]:
    """Every role-agreement line (in force today) that assigns this activity / rule, most specific first."""
    out = []
    for ag in state.library.agreements_in_force(state.now().date()):
        names = {str(x.get("id")): x.get("name") for x in (_raw(ag.source).get("parties") or []) if isinstance(x, dict)}
        for a in ag.assigns:
            if a.protocol == pid and a.target in (target, "*"):
                out.append({"agreement": ag.key, "provider": a.provider, "provider_name": names.get(a.provider),
                            "provider_kind": ag.parties.get(a.provider),
                            "team": a.team, "role": a.role,
                            "respond": {k: str(v) for k, v in a.respond.items()},
                            "where": {k: sorted(v) for k, v in a.where.items()}, "exact": a.target == target,
                            "specificity": a.specificity(target)})
    out.sort(key=lambda a: (bool(a["where"]), -a["specificity"]))  # what applies anywhere first
    return out


def _protocol_form(request: Request, who: Principal, protocol_id: str, permission: str, csrf_token: str):
    """What every form posted about one protocol (submit, impact, check) checks first: the form's CSRF token,
    the user's permission, the protocol (404 when unknown). Returns the app state."""
    check_csrf(request, csrf_token)
    need(request, who, permission)
    state = state_of(request)
    papi._versions(state, protocol_id)
    return state


@router.get("/protocols")
def protocols_page(request: Request, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "protocol:read")
    protos = papi.list_protocols(who, state)
    statuses = {(p.id, v): (state.library.find(p.id, v).status if state.library.find(p.id, v) else "")
                for p in protos for v in p.versions}
    waiting = []
    if who.role in PERMISSIONS["protocol:publish"]:
        with Session(state.engines.read) as s:
            waiting = [pd.draft_out(d) for d in approvals.awaiting(s)]
    return render(request, "protocols.html", who, page_title="Protocols", protos=protos, statuses=statuses,
                  waiting=waiting, approval_problem=approvals.approval_problem)


@router.post("/protocols/{protocol_id}/drafts")
def submit_for_approval(request: Request, protocol_id: Pid, yaml: str = Form("", max_length=500_000),
                        note: str = Form("", max_length=200), csrf_token_: str = Form("", alias="csrf_token"),
                        who: Principal = Depends(page_user)):
    """Submit the text as a version for approval: nothing is published until a second clinical lead approves."""
    state = _protocol_form(request, who, protocol_id, "protocol:publish", csrf_token_)
    try:
        body = YamlIn(yaml=yaml, note=note.strip() or None)
    except ValidationError as e:
        return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text",
                            problems=[err["msg"] for err in e.errors()])
    try:
        out = pd.submit_draft(body, request, who, state)
    except HTTPException as e:
        if e.status_code != 409:
            raise
        return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text", problems=[str(e.detail)])
    if not isinstance(out, DraftOut):
        v = ValidationOut.model_validate_json(out.body)
        return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text",
                            problems=[p.text for p in v.problems] or ["The protocol is not valid."])
    return redirect(request, f"{PREFIX}/protocols#awaiting",
                    flash=f"{out.protocol} {out.version} submitted for approval: a second clinical lead must approve it "
                          "before it is published.")


@router.post("/protocols/drafts/{draft_id}/approve")
def approve(request: Request, draft_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
            csrf_token_: str = Form("", alias="csrf_token"), who: Principal = Depends(page_user)):
    """Approve a draft as the second person, which publishes it; the author cannot (the page says why)."""
    check_csrf(request, csrf_token_)
    need(request, who, "protocol:publish")
    state = state_of(request)
    back = f"{PREFIX}/protocols#awaiting"
    try:
        out = pd.approve_draft(request, draft_id, who, state)
    except HTTPException as e:
        if e.status_code not in (403, 404, 409):
            raise
        return redirect(request, back, flash=f"Not published: {e.detail}.")
    if not isinstance(out, PublishOut):
        v = ValidationOut.model_validate_json(out.body)
        return redirect(request, back, flash="Not published: " + "; ".join(p.text for p in v.problems[:3]))
    return redirect(request, f"{PREFIX}/protocols/{out.protocol}",
                    flash=f"Published {out.protocol} {out.version}: written by {out.published_by}, approved by you.")


@router.get("/protocols/{protocol_id}")
def protocol_page(request: Request, protocol_id: Pid, version: Version = None,
                  who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "protocol:read")
    d = papi.get_protocol(protocol_id, version, who, state)
    proto = state.library.find(protocol_id, d.version)
    raw = _raw(proto.source)
    raw_by_id = {sec: {str(x.get("id")): x for x in (raw.get(sec) or []) if isinstance(x, dict)} for sec, _ in SECTIONS}
    history = papi.versions(protocol_id, who, state)
    assigns = {a["id"]: _assignments(state, protocol_id, a["id"]) for a in d.activities}
    assigns.update({"rule:" + r["id"]: _assignments(state, protocol_id, "rule:" + r["id"]) for r in d.rules})
    valuesets = {name: {"file": vs.source.rsplit("/", 1)[-1], "codes": len(vs.codes), "unit": vs.unit}
                 for name, vs in sorted(proto.valuesets.items())}
    return render(request, "protocol.html", who, page_title=f"{d.title} {d.version}", d=d, raw=raw, raw_by_id=raw_by_id,
                  history=history, assigns=assigns, valuesets=valuesets, period=str(proto.period),
                  words=_words(proto.key, proto.content_hash, proto))


_WORDS: dict[tuple[str, str], dict] = {}


def _words(key: str, content_hash: str, proto) -> dict:
    """Clinical words for a protocol version, worked out once per version's content."""
    k = (key, content_hash)
    if k not in _WORDS:
        if len(_WORDS) > 256:
            _WORDS.clear()
        _WORDS[k] = clinical_words(proto)
    return _WORDS[k]


def _section_diff(old: list, new: list) -> dict:
    o = {str(x.get("id")): x for x in (old or []) if isinstance(x, dict)}
    n = {str(x.get("id")): x for x in (new or []) if isinstance(x, dict)}
    changed = []
    for k in [k for k in n if k in o]:
        fo, fn = _flatten(o[k]), _flatten(n[k])
        fields = [(f, fo.get(f, ""), fn.get(f, "")) for f in sorted(set(fo) | set(fn)) if fo.get(f) != fn.get(f)]
        if fields:
            changed.append((k, n[k].get("title") or k, fields))
    return {"added": [(k, n[k].get("title") or k) for k in n if k not in o],
            "removed": [(k, o[k].get("title") or k) for k in o if k not in n], "changed": changed}


def _mapping_diff(old: dict, new: dict) -> list[tuple[str, str, str]]:
    old, new = old or {}, new or {}
    return [(k, _text(old.get(k)), _text(new.get(k))) for k in sorted(set(old) | set(new), key=str) if old.get(k) != new.get(k)]


@router.get("/protocols/{protocol_id}/diff")
def diff_page(request: Request, protocol_id: Pid, from_: Annotated[str | None, Query(alias="from", pattern=VERSION_RE)] = None,
              to: Version = None, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "protocol:read")
    vs = papi._versions(state, protocol_id)  # 404 when unknown
    keys = [p.version for p in vs]
    if len(vs) < 2 and not (from_ and to):
        raise HTTPException(status_code=404, detail=f"{protocol_id} has only one version: nothing to compare")
    to = to or keys[-1]
    if from_ is None:
        earlier = [k for k in keys if version_key(k) < version_key(to)]
        from_ = earlier[-1] if earlier else keys[0]
    a, b = state.library.find(protocol_id, from_), state.library.find(protocol_id, to)
    if a is None or b is None or a.version != from_ or b.version != to:
        raise HTTPException(status_code=404, detail=f"{protocol_id} has no version {from_ if a is None else to}")
    ra, rb = _raw(a.source), _raw(b.source)
    text_a = FsPath(a.source).read_text(encoding="utf-8").splitlines()
    text_b = FsPath(b.source).read_text(encoding="utf-8").splitlines()
    lines = list(difflib.unified_diff(text_a, text_b, fromfile=f"{protocol_id} {from_}", tofile=f"{protocol_id} {to}",
                                      lineterm="", n=2))
    meta = [(k, _text(ra.get(k)), _text(rb.get(k))) for k in META if ra.get(k) != rb.get(k)]
    return render(request, "protocol_diff.html", who, page_title=f"{protocol_id}: {from_} → {to}", pid=protocol_id,
                  a=a, b=b, versions=keys, meta=meta, words=word_changes(a, b), population=_mapping_diff(_flatten(ra.get("population")),
                                                                              _flatten(rb.get("population"))),
                  define=_mapping_diff(ra.get("define"), rb.get("define")),
                  valuesets=_mapping_diff(ra.get("valuesets"), rb.get("valuesets")),
                  sections=[(name, title, _section_diff(ra.get(name), rb.get(name))) for name, title in SECTIONS],
                  lines=lines)


def _drafts(state, pid: str):
    in_force = {p.id: p.version for p in state.library.in_force(state.now().date())}
    cur = in_force.get(pid)
    return [p for p in sorted((p for p in state.library.protocols if p.id == pid), key=lambda p: version_key(p.version))
            if p.status == "draft" and (cur is None or version_key(p.version) > version_key(cur))]


def _impact_form(request, who, state, pid: str, **ctx):
    drafts = _drafts(state, pid)
    latest = papi._versions(state, pid)[-1]
    ctx.setdefault("yaml", FsPath(latest.source).read_text(encoding="utf-8"))
    ctx.setdefault("source", f"file:{drafts[-1].version}" if drafts else "text")
    ctx.setdefault("as_of", state.now().date().isoformat())
    ctx.setdefault("problems", None)
    ctx.setdefault("checked", None)
    ctx.setdefault("listing", None)
    return render(request, "protocol_impact.html", who, page_title=f"Impact preview: {pid}", pid=pid, drafts=drafts,
                  in_force=next((p for p in state.library.in_force(state.now().date()) if p.id == pid), None), **ctx)


@router.get("/protocols/{protocol_id}/impact")
def impact_page(request: Request, protocol_id: Pid, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "protocol:impact")
    papi._versions(state, protocol_id)  # 404 when unknown
    return _impact_form(request, who, state, protocol_id)


@router.post("/protocols/{protocol_id}/impact")
def impact_run(request: Request, protocol_id: Pid, source: str = Form("text", max_length=200),
               yaml: str = Form("", max_length=500_000), as_of: str = Form(""),
               csrf_token_: str = Form("", alias="csrf_token"), who: Principal = Depends(page_user)):
    """Start a background run (engine/app/impact_runs.py) of the chosen draft, then show its page."""
    state = _protocol_form(request, who, protocol_id, "protocol:impact", csrf_token_)
    try:
        day = dt.date.fromisoformat(as_of) if as_of else state.now().date()
    except ValueError:
        return _impact_form(request, who, state, protocol_id, yaml=yaml, source=source, as_of=as_of,
                            problems=["The reference date must be a date (YYYY-MM-DD)."])
    if source.startswith("file:"):
        draft = next((p for p in _drafts(state, protocol_id) if p.version == source[5:]), None)
        if draft is None:
            raise HTTPException(status_code=404, detail=f"{protocol_id} has no draft version {source[5:]}")
    else:
        try:
            body = ImpactIn(yaml=yaml, as_of=day)
        except ValidationError as e:
            return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text", as_of=as_of,
                                problems=[err["msg"] for err in e.errors()])
        draft, refused = papi._impact_draft(state, body)
        if refused is not None:
            v = ValidationOut.model_validate_json(refused.body)
            return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text", as_of=day.isoformat(),
                                problems=[p.text for p in v.problems] or ["The protocol is not valid."])
        source = "text"
    run = impact_runs.runner(state).start(who, state.library, draft, day, source)
    log_access(state, request, who, "read", "protocol-impact-run",
               detail={"run": run.id, "protocol": draft.key, "started": True, "via": "web"})
    return redirect(request, f"{PREFIX}/protocols/{protocol_id}/impact/runs/{run.id}")


@router.post("/protocols/{protocol_id}/check")
def check_text(request: Request, protocol_id: Pid, yaml: str = Form("", max_length=500_000),
               csrf_token_: str = Form("", alias="csrf_token"), who: Principal = Depends(page_user)):
    """Check the text as publishing would: the text again with line numbers, each problem at its line."""
    state = _protocol_form(request, who, protocol_id, "protocol:validate", csrf_token_)
    try:
        v = papi.validate(YamlIn(yaml=yaml), who, state)
    except ValidationError as e:
        return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text",
                            problems=[err["msg"] for err in e.errors()])
    at: dict[int, list] = {}
    for p in v.problems:
        at.setdefault(p.line, []).append(p)
    listing = [(n, line, at.get(n, [])) for n, line in enumerate(yaml.split("\n"), 1)]
    return _impact_form(request, who, state, protocol_id, yaml=yaml, source="text", checked=v, listing=listing,
                        problems=None)


@router.get("/protocols/{protocol_id}/impact/runs/{run_id}")
def impact_run_page(request: Request, protocol_id: Pid, run_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
                    who: Principal = Depends(page_user)):
    """A run's progress (a <progress> bar; the page reloads itself every 2 s with a meta refresh, no
    JavaScript), then its result; "interrupted - start again" after a restart."""
    state = state_of(request)
    need(request, who, "protocol:impact")
    row = impact_runs.get(state, who, run_id)
    if row is None or row.protocol != protocol_id:
        raise HTTPException(status_code=404, detail=f"no impact run {run_id} of yours for {protocol_id}")
    result = row.result if row.status == "done" else None
    if result is not None:
        log_access(state, request, who, "read", "protocol-impact", patients=example_patients(result),
                   detail={"protocol": f"{row.protocol}@{row.to_version}", "patients": row.done, "run": row.id,
                           "via": "web"})
    return render(request, "protocol_impact_run.html", who, page_title=f"Impact preview: {protocol_id}", pid=protocol_id,
                  run=row, result=result, refresh=row.status in impact_runs.UNFINISHED)
