"""Protocols over HTTP: list, view, source, versions, validate, impact preview, publish."""
from __future__ import annotations

from pathlib import Path

from tests.api.support import ROOT

ORIGINAL = (ROOT / "protocols" / "t2dm-annual-care.yaml").read_text(encoding="utf-8")
SARAH = "9876543210"  # HbA1c 46: below 58, above 45


def version(text: str, v: str) -> str:
    """t2dm 1.0.0 (the service's protocol here) as version v. 1.0.0 uses made-up codes (the synthetic code system,
    hypoglycaemia-causing medicines): publishing refuses them unless the protocol is marked demo_only, which these
    tests' versions are (test_publish_refuses_made_up_codes shows the refusal)."""
    assert "\nversion: 1.0.0\n" in text
    return text.replace("\nversion: 1.0.0\n", f"\nversion: {v}\ndemo_only: true\n", 1)


def lower_threshold(text: str) -> str:
    old = "when: last_hba1c.value >= 58 mmol/mol and not frail"
    assert old in text
    return text.replace(old, "when: last_hba1c.value >= 45 mmol/mol and not frail")


def files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def test_list_view_source_versions(api):
    [p] = api.get("/protocols", user="auditor").json()
    assert (p["id"], p["in_force_version"], p["versions"]) == ("t2dm-annual-care", "1.0.0", ["1.0.0"])
    d = api.get("/protocols/t2dm-annual-care", user="practice.staff").json()
    assert d["in_force"] and d["file"] == "t2dm-annual-care.yaml"
    assert {"hba1c", "foot-check"} <= {a["id"] for a in d["activities"]}
    rule = next(r for r in d["rules"] if r["id"] == "active-foot-problem")
    assert rule["escalation"]["to"] == "mdt" and rule["task"]["priority"] == "urgent"
    assert {m["id"] for m in d["measures"]} == {"DM020", "DM021", "DM036"}
    assert api.get("/protocols/t2dm-annual-care/source").json()["yaml"] == ORIGINAL
    [v] = api.get("/protocols/t2dm-annual-care/versions").json()
    assert v["in_force"] and v["published_by"] is None  # shipped with the code, not published through the API
    assert api.get("/protocols/nope").status_code == 404
    assert api.get("/protocols/t2dm-annual-care", params={"version": "9.9.9"}).status_code == 404


def test_validate_reports_problems_with_positions(api):
    bad = version(ORIGINAL, "1.1.0").replace("when: last_hba1c.value >= 58", "when: last_hbac1.value >= 58")
    r = api.post("/protocols/validate", json={"yaml": bad}).json()
    assert not r["valid"]
    err = next(p for p in r["problems"] if p["severity"] == "error")
    assert err["file"] == "<submitted>" and err["line"] > 100 and err["column"] > 1
    assert err["suggestion"] == "last_hba1c" and err["text"].startswith(f"<submitted>:{err['line']}:{err['column']}: error:")
    same = api.post("/protocols/validate", json={"yaml": ORIGINAL}).json()  # already published
    assert not same["valid"] and "already published" in same["problems"][-1]["message"]
    older = api.post("/protocols/validate", json={"yaml": version(ORIGINAL, "0.9.0")}).json()
    assert "not newer" in older["problems"][-1]["message"]
    good = api.post("/protocols/validate", json={"yaml": version(ORIGINAL, "1.1.0")}).json()
    assert good["valid"] and good["version"] == "1.1.0"
    assert not api.post("/protocols/validate", json={"yaml": "agreement: x\n"}).json()["valid"]
    assert not api.post("/protocols/validate", json={"yaml": ": : :\n\t- ["}).json()["valid"]
    assert not any(n.startswith(".pending") for n in files(api.protocols_dir))


def test_impact_preview(api):
    before = files(api.protocols_dir)
    r = api.post("/protocols/impact", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0"))})
    assert r.status_code == 200, r.text
    imp = r.json()
    assert (imp["old"], imp["new"], imp["patients"]) == ("1.0.0", "1.1.0", 6)
    assert (imp["entering"], imp["leaving"]) == (0, 0)
    assert imp["tasks_added"] == {"Review glucose-lowering therapy": 1} and imp["tasks_removed"] == {}
    assert imp["by_role"] == {"gp": {"added": 1, "removed": 0}}
    assert imp["by_practice"]["A81001"]["tasks_added"] == 1
    # clinical and compliance flags are counted apart and labelled: the rule raises one clinical flag
    assert imp["totals"]["clinical_flags_added"] == 1 and imp["totals"]["compliance_flags_added"] == 0
    assert list(imp["clinical_flags_added"].values()) == [1]
    assert {e["nhs_number"] for e in imp["examples"]} == {SARAH}
    assert any(e["change"] == "task added: Review glucose-lowering therapy" and "at least 45 mmol/mol" in e["why"]
               for e in imp["examples"])
    assert files(api.protocols_dir) == before  # nothing published
    # an invalid text gets the validator's problems instead
    bad = api.post("/protocols/impact", json={"yaml": version(ORIGINAL, "1.1.0").replace("age >= 17", "age >= seventeen")})
    assert bad.status_code == 422 and bad.json()["problems"]


def test_cli_and_service_give_the_same_impact(api, tmp_path):
    """Issue 12: `carepath impact` and the service (POST /protocols/impact, an impact run) are one
    preview: for the same draft, registry and date every number is the same."""
    import json

    from typer.testing import CliRunner

    from cli.main import app
    import shutil
    shutil.copytree(api.protocols_dir / "valuesets", tmp_path / "valuesets")
    draft = tmp_path / "t2dm-annual-care@1.1.0.yaml"  # a draft on file, outside the service's library
    # a clinical change (HbA1c review from 45) and a compliance one (the first care process every 3 months)
    draft.write_text(lower_threshold(version(ORIGINAL, "1.1.0")).replace("every: 12 months", "every: 3 months", 1),
                     encoding="utf-8")
    text = draft.read_text(encoding="utf-8")
    as_of = api.clock().date().isoformat()
    r = CliRunner().invoke(app, ["impact", "t2dm-annual-care@1.0.0", str(draft), "--population", api.url, "--as-of", as_of,
                                 "--protocols", str(api.protocols_dir), "--format", "json"])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.output)
    web = api.post("/protocols/impact", json={"yaml": text, "as_of": as_of}).json()
    assert cli == web
    run = api.post("/protocols/impact/runs", json={"yaml": text, "as_of": as_of}).json()
    done = _wait(api, run["id"])
    assert done["result"] == cli
    assert cli["patients"] == 6 and cli["totals"]["clinical_flags_added"] == 1
    assert cli["totals"]["compliance_flags_added"] > 0  # counted, and apart from the clinical ones


def _wait(api, run_id: int, user: str = "clinical.lead", timeout: float = 60) -> dict:
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = api.get(f"/protocols/impact/runs/{run_id}", user=user)
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return r.json()
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still {r.json()['status']}")


def test_impact_run_in_the_background(api, monkeypatch):
    import threading

    import engine.app.impact_runs as ir
    monkeypatch.setattr(ir, "PROGRESS_EVERY", 1)  # progress written after every patient
    runner = __import__("engine.app.impact_runs", fromlist=["runner"]).runner(api.state)
    held, release = threading.Event(), threading.Event()

    def hold(run_id, n):  # stop after 3 patients until the test has seen the progress
        if n == 3:
            held.set()
            release.wait(30)
    runner.after_patient = hold
    try:
        r = api.post("/protocols/impact/runs", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0"))})
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["status"] in ("queued", "running") and run["result"] is None
        assert r.headers["location"] == run["url"] == f"/protocols/impact/runs/{run['id']}"
        assert held.wait(30)
        mid = api.get(run["url"]).json()
        assert (mid["status"], mid["done"], mid["total"], mid["result"]) == ("running", 3, 6, None)
        # someone else (even a clinical lead) is told there is no such run
        assert api.get(run["url"], user="lead.central").status_code == 404
    finally:
        runner.after_patient = None
        release.set()
    done = _wait(api, run["id"])
    assert (done["status"], done["done"], done["total"]) == ("done", 6, 6)
    res = done["result"]
    assert (res["old"], res["new"], res["patients"]) == ("1.0.0", "1.1.0", 6)
    assert res["tasks_added"] == {"Review glucose-lowering therapy": 1} and res["totals"]["clinical_flags_added"] == 1
    log = api.get("/access-log", user="admin", params={"username": "clinical.lead"}).json()["items"]
    shown = [x for x in log if x["resource"] == "protocol-impact" and x["detail"].get("run") == run["id"]]
    assert shown and shown[0]["patients"] == [SARAH]  # the example patients, when the result is shown
    assert any(x["resource"] == "protocol-impact-run" and x["detail"].get("run") == run["id"] for x in log)
    # invalid text: the validator's problems, no run
    bad = api.post("/protocols/impact/runs", json={"yaml": version(ORIGINAL, "1.1.0").replace("age >= 17", "age >= seventeen")})
    assert bad.status_code == 422 and bad.json()["problems"]
    assert api.get("/protocols/impact/runs/999999").status_code == 404


def test_a_run_cut_short_by_a_restart_says_interrupted(fresh_api, tmp_path):
    """Never 'running' forever: a run unfinished when the service stopped is marked interrupted when
    it starts again."""
    import uuid

    from sqlmodel import Session

    from api.app import create_app
    from engine.registry.access import ImpactRunRow
    api = fresh_api
    with Session(api.state.engines.write) as s:
        ids = []
        for status in ("running", "queued", "done"):
            row = ImpactRunRow(protocol="t2dm-annual-care", to_version="1.1.0", content_hash="x", source="text",
                               as_of=api.clock().date(), status=status, total=10, done=4, created_by="clinical.lead")
            s.add(row)
            s.flush()
            ids.append(row.id)
        s.commit()
    assert api.get(f"/protocols/impact/runs/{ids[0]}").json()["status"] == "running"
    again = create_app(api.url, api.protocols_dir, secret_key="t-" + uuid.uuid4().hex)  # the service starts again
    again.state.carepath.engines.dispose()
    got = [api.get(f"/protocols/impact/runs/{i}").json() for i in ids]
    assert [g["status"] for g in got] == ["interrupted", "interrupted", "done"]
    assert got[0]["done"] == 4 and "restarted" in got[0]["error"]


def test_large_registries_are_previewed_by_a_run(api, monkeypatch):
    from api.routers import protocols
    monkeypatch.setattr(protocols, "SYNC_IMPACT_LIMIT", 5)
    r = api.post("/protocols/impact", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0"))})
    assert r.status_code == 409 and "/protocols/impact/runs" in r.json()["detail"]


def publish(api, yaml: str, note: str | None = None, author: str = "clinical.lead", approver: str = "lead.central"):
    """Two-person publish: the author submits the version, a second clinical lead approves it (which publishes
    it). Returns the refusal when the submission is refused, else the approval's response."""
    r = api.post("/protocols/drafts", user=author, json={"yaml": yaml, **({"note": note} if note else {})})
    if r.status_code != 201:
        return r
    return api.post(f"/protocols/drafts/{r.json()['id']}/approve", user=approver)


def test_publish(seeded_api):
    api = seeded_api
    before = files(api.protocols_dir)
    bad = publish(api, version(ORIGINAL, "1.1.0").replace("level: red", "level: crimson"))
    assert bad.status_code == 422 and any(p["severity"] == "error" for p in bad.json()["problems"])
    assert files(api.protocols_dir) == before  # refused whole: no file, no pending leftovers
    assert api.get("/protocols/t2dm-annual-care").json()["version"] == "1.0.0"

    r = publish(api, lower_threshold(version(ORIGINAL, "1.1.0")), note="NG28 update")
    assert r.status_code == 201, r.text
    pub = r.json()
    assert (pub["version"], pub["file"], pub["in_force"], pub["published_by"], pub["approved_by"]) == (
        "1.1.0", "t2dm-annual-care@1.1.0.yaml", True, "clinical.lead", "lead.central")
    assert files(api.protocols_dir) == before | {"t2dm-annual-care@1.1.0.yaml", "published.lock"}
    assert (api.protocols_dir / "t2dm-annual-care.yaml").read_text(encoding="utf-8") == ORIGINAL  # old version kept
    hist = api.get("/protocols/t2dm-annual-care/versions").json()
    assert [(v["version"], v["in_force"], v["published_by"], v["approved_by"], v["note"]) for v in hist] == [
        ("1.1.0", True, "clinical.lead", "lead.central", "NG28 update"), ("1.0.0", False, None, None, None)]
    assert api.get("/protocols/t2dm-annual-care/source", params={"version": "1.0.0"}).json()["yaml"] == ORIGINAL
    # the same version again is refused; re-evaluation now uses the new version
    again = publish(api, lower_threshold(version(ORIGINAL, "1.1.0")))
    assert again.status_code == 422 and "already published" in again.text
    diff = api.post(f"/patients/{SARAH}/reevaluate").json()
    assert [c["title"] for c in diff["tasks_opened"]] == ["Review glucose-lowering therapy"]
    task = next(t for t in api.get("/worklist", params={"nhs_number": SARAH}).json()["items"] if t["role"] == "gp")
    assert task["version"] == "1.1.0"
    log = api.get("/access-log", user="admin", params={"username": "lead.central", "action": "write"}).json()["items"]
    assert any(x["resource"] == "protocol" and x["detail"].get("published") == "t2dm-annual-care@1.1.0"
               and x["detail"]["author"] == "clinical.lead" and x["detail"]["approved_by"] == "lead.central" for x in log)


def test_publishing_needs_a_second_clinical_lead(seeded_api):
    """Issue 16 item 9: the author submits; nothing is published until a different clinical lead approves;
    the author cannot approve their own version (refused and logged)."""
    api = seeded_api
    before = files(api.protocols_dir)
    r = api.post("/protocols/drafts", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0")), "note": "NG28"})
    assert r.status_code == 201, r.text
    draft = r.json()
    assert (draft["status"], draft["submitted_by"], draft["version"]) == ("awaiting-approval", "clinical.lead", "1.1.0")
    assert files(api.protocols_dir) == before  # nothing published yet
    assert [d["id"] for d in api.get("/protocols/drafts", user="lead.central").json()] == [draft["id"]]
    # the same version cannot wait twice
    assert api.post("/protocols/drafts", user="lead.central",
                    json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0"))}).status_code == 409
    # the author cannot approve it
    own = api.post(f"/protocols/drafts/{draft['id']}/approve")
    assert own.status_code == 403 and "cannot approve it" in own.json()["detail"]
    assert files(api.protocols_dir) == before and api.get("/protocols/t2dm-annual-care").json()["version"] == "1.0.0"
    log = api.get("/access-log", user="admin", params={"username": "clinical.lead", "action": "denied"}).json()["items"]
    assert log[0]["resource"] == "protocol-approve" and log[0]["detail"]["draft"] == draft["id"]
    # nor may anyone without the publish permission (an MDT member)
    assert api.post(f"/protocols/drafts/{draft['id']}/approve", user="mdt.member").status_code == 403
    # a second clinical lead approves: published, both recorded
    ok = api.post(f"/protocols/drafts/{draft['id']}/approve", user="lead.central")
    assert ok.status_code == 201 and (ok.json()["published_by"], ok.json()["approved_by"]) == ("clinical.lead", "lead.central")
    assert api.get("/protocols/drafts").json() == []
    assert api.post(f"/protocols/drafts/{draft['id']}/approve", user="lead.central").status_code == 409  # done
    assert api.post("/protocols/drafts/999999/approve", user="lead.central").status_code == 404
    from engine.language.checks import read_manifest
    entry = read_manifest(api.protocols_dir / "published.lock")["t2dm-annual-care@1.1.0"]
    assert (entry["author"], entry["approved_by"]) == ("clinical.lead", "lead.central")


def test_publish_refuses_made_up_codes(fresh_api):
    """The API's publish refuses the synthetic code system in a protocol not marked demo_only, as `carepath
    publish` does (one check: engine.language.codelist_checks.made_up_code_problems); validate says so too."""
    api = fresh_api
    before = files(api.protocols_dir)
    text = version(ORIGINAL, "1.1.0").replace("demo_only: true\n", "", 1)
    for route in ("/protocols/validate", "/protocols/drafts"):  # checking, and submitting for approval
        r = api.post(route, json={"yaml": text})
        body = r.json()
        errors = [p for p in body["problems"] if p["severity"] == "error"]
        assert [e["message"] for e in errors] == ["t2dm-annual-care@1.1.0: value set 'hypo_causing_medicine' uses the "
                                                  "synthetic code system (4 of 4 codes are made up) in a protocol that "
                                                  "is not marked demo_only"], body
        assert errors[0]["line"] == 35
        assert (r.status_code, body["valid"]) == ((200, False) if route.endswith("validate") else (422, False))
    assert files(api.protocols_dir) == before and api.get("/protocols/drafts").json() == []  # nothing submitted
    draft = api.post("/protocols/drafts", json={"yaml": version(ORIGINAL, "1.1.0")})  # demo_only: may be submitted
    assert draft.status_code == 201, draft.json()
    assert api.post(f"/protocols/drafts/{draft.json()['id']}/approve", user="lead.central").status_code == 201


def test_published_versions_are_frozen_like_the_cli_ones(fresh_api):
    """Publishing over HTTP records the version in published.lock as `carepath publish` does, so
    `carepath validate` (load_library) refuses any later change to the published file."""
    from engine.language.checks import file_hash, read_manifest
    from engine.language.library import load_library
    api, folder = fresh_api, fresh_api.protocols_dir
    r = publish(api, lower_threshold(version(ORIGINAL, "1.1.0")))
    assert r.status_code == 201, r.text
    published = folder / "t2dm-annual-care@1.1.0.yaml"
    assert read_manifest(folder / "published.lock") == {"t2dm-annual-care@1.1.0": {
        "file": "t2dm-annual-care@1.1.0.yaml", "sha256": file_hash(published), "published": api.clock().date(),
        "author": "clinical.lead", "approved_by": "lead.central"}}
    assert not [p for p in load_library([folder]).problems if p.severity == "error"]
    # a second publication adds to the same lock
    assert publish(api, lower_threshold(version(ORIGINAL, "1.2.0"))).status_code == 201
    assert set(read_manifest(folder / "published.lock")) == {"t2dm-annual-care@1.1.0", "t2dm-annual-care@1.2.0"}
    # editing a published version afterwards is an error
    published.write_text(published.read_text(encoding="utf-8").replace(">= 45 mmol/mol", ">= 50 mmol/mol"), encoding="utf-8")
    changed = [p for p in load_library([folder]).problems if p.severity == "error"]
    assert [p.message for p in changed] == [
        f"t2dm-annual-care@1.1.0 was published on {api.clock().date()} and its content has changed since"]


def test_a_second_service_sees_the_published_version(seeded_api):
    """Publishing in one process is picked up by another on the same folder (file fingerprint)."""
    from api.state import LibraryHolder
    other = LibraryHolder(seeded_api.protocols_dir, check_every=0)
    assert [p.version for p in other.get().protocols] == ["1.0.0"]
    assert publish(seeded_api, version(ORIGINAL, "1.0.1")).status_code == 201
    assert sorted(p.version for p in other.get().protocols) == ["1.0.0", "1.0.1"]
