"""Protocols over HTTP: list, view, source, versions, validate, impact preview, publish."""
from __future__ import annotations

from pathlib import Path

from tests.api.support import ROOT

ORIGINAL = (ROOT / "protocols" / "t2dm-annual-care.yaml").read_text(encoding="utf-8")
SARAH = "9876543210"  # HbA1c 46: below 58, above 45


def version(text: str, v: str) -> str:
    assert "\nversion: 1.0.0\n" in text
    return text.replace("\nversion: 1.0.0\n", f"\nversion: {v}\n", 1)


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
    assert (imp["from_version"], imp["to_version"], imp["patients_evaluated"]) == ("1.0.0", "1.1.0", 6)
    assert (imp["entering_register"], imp["leaving_register"]) == (0, 0)
    assert imp["tasks_added"] == 1 and imp["tasks_removed"] == 0
    assert imp["tasks_by_role"] == [{"key": "gp", "added": 1, "removed": 0}]
    assert imp["tasks_by_practice"] == [{"key": "A81001", "added": 1, "removed": 0}]
    assert imp["flags_added"] == 1
    [ex] = imp["examples"]
    assert ex["nhs_number"] == SARAH and ex["tasks_added"] == ["Review glucose-lowering therapy"]
    assert files(api.protocols_dir) == before  # nothing published
    # an invalid text gets the validator's problems instead
    bad = api.post("/protocols/impact", json={"yaml": version(ORIGINAL, "1.1.0").replace("age >= 17", "age >= seventeen")})
    assert bad.status_code == 422 and bad.json()["problems"]


def test_publish(seeded_api):
    api = seeded_api
    before = files(api.protocols_dir)
    bad = api.post("/protocols/publish", json={"yaml": version(ORIGINAL, "1.1.0").replace("level: red", "level: crimson")})
    assert bad.status_code == 422 and any(p["severity"] == "error" for p in bad.json()["problems"])
    assert files(api.protocols_dir) == before  # refused whole: no file, no pending leftovers
    assert api.get("/protocols/t2dm-annual-care").json()["version"] == "1.0.0"

    r = api.post("/protocols/publish", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0")), "note": "NG28 update"})
    assert r.status_code == 201, r.text
    pub = r.json()
    assert (pub["version"], pub["file"], pub["in_force"], pub["published_by"]) == (
        "1.1.0", "t2dm-annual-care@1.1.0.yaml", True, "clinical.lead")
    assert files(api.protocols_dir) == before | {"t2dm-annual-care@1.1.0.yaml", "published.lock"}
    assert (api.protocols_dir / "t2dm-annual-care.yaml").read_text(encoding="utf-8") == ORIGINAL  # old version kept
    hist = api.get("/protocols/t2dm-annual-care/versions").json()
    assert [(v["version"], v["in_force"], v["published_by"], v["note"]) for v in hist] == [
        ("1.1.0", True, "clinical.lead", "NG28 update"), ("1.0.0", False, None, None)]
    assert api.get("/protocols/t2dm-annual-care/source", params={"version": "1.0.0"}).json()["yaml"] == ORIGINAL
    # the same version again is refused; re-evaluation now uses the new version
    again = api.post("/protocols/publish", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0"))})
    assert again.status_code == 422 and "already published" in again.text
    diff = api.post(f"/patients/{SARAH}/reevaluate").json()
    assert [c["title"] for c in diff["tasks_opened"]] == ["Review glucose-lowering therapy"]
    task = next(t for t in api.get("/worklist", params={"nhs_number": SARAH}).json()["items"] if t["role"] == "gp")
    assert task["version"] == "1.1.0"
    log = api.get("/access-log", user="admin", params={"username": "clinical.lead", "action": "write"}).json()["items"]
    assert any(x["resource"] == "protocol" and x["detail"].get("published") == "t2dm-annual-care@1.1.0" for x in log)


def test_published_versions_are_frozen_like_the_cli_ones(fresh_api):
    """Publishing over HTTP records the version in published.lock as `carepath publish` does, so
    `carepath validate` (load_library) refuses any later change to the published file."""
    from engine.protocols.checks import file_hash, read_manifest
    from engine.protocols.library import load_library
    api, folder = fresh_api, fresh_api.protocols_dir
    r = api.post("/protocols/publish", json={"yaml": lower_threshold(version(ORIGINAL, "1.1.0"))})
    assert r.status_code == 201, r.text
    published = folder / "t2dm-annual-care@1.1.0.yaml"
    assert read_manifest(folder / "published.lock") == {"t2dm-annual-care@1.1.0": {
        "file": "t2dm-annual-care@1.1.0.yaml", "sha256": file_hash(published), "published": api.clock().date()}}
    assert not [p for p in load_library([folder]).problems if p.severity == "error"]
    # a second publication adds to the same lock
    assert api.post("/protocols/publish", json={"yaml": lower_threshold(version(ORIGINAL, "1.2.0"))}).status_code == 201
    assert set(read_manifest(folder / "published.lock")) == {"t2dm-annual-care@1.1.0", "t2dm-annual-care@1.2.0"}
    # editing a published version afterwards is an error
    published.write_text(published.read_text(encoding="utf-8").replace(">= 45 mmol/mol", ">= 50 mmol/mol"), encoding="utf-8")
    changed = [p for p in load_library([folder]).problems if p.severity == "error"]
    assert [p.message for p in changed] == [
        f"t2dm-annual-care@1.1.0 was published on {api.clock().date()} and its content has changed since"]


def test_a_second_service_sees_the_published_version(seeded_api):
    """Publishing in one process is picked up by another on the same folder (file fingerprint)."""
    from api.app import LibraryHolder
    other = LibraryHolder(seeded_api.protocols_dir, check_every=0)
    assert [p.version for p in other.get().protocols] == ["1.0.0"]
    seeded_api.post("/protocols/publish", json={"yaml": version(ORIGINAL, "1.0.1")})
    assert sorted(p.version for p in other.get().protocols) == ["1.0.0", "1.0.1"]
