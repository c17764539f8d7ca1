"""Log in (bearer token or session cookie), revocation, users, the access log."""
from __future__ import annotations

import datetime as dt

from api.security import Tokens, hash_password, verify_password
from tests.api.support import AMINA


def test_passwords_are_argon2id_hashes():
    h = hash_password("correct horse battery")
    assert h.startswith("$argon2id$") and "correct" not in h
    assert verify_password(h, "correct horse battery")[0] and not verify_password(h, "wrong")[0]


def test_token_login_and_me(fresh_api):
    r = fresh_api.client.post("/auth/token", data={"username": "mdt.member", "password": "mdt.member-demo-pw"})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["user"]["mdt"] == "central-1"
    me = fresh_api.client.get("/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me["username"] == "mdt.member" and me["role"] == "mdt-member" and me["last_login_at"]


def test_wrong_password_unknown_user_and_garbage_tokens(fresh_api):
    c = fresh_api.client
    assert c.post("/auth/token", data={"username": "mdt.member", "password": "nope"}).status_code == 401
    assert c.post("/auth/token", data={"username": "nobody", "password": "nope"}).status_code == 401
    for bad in ("garbage", fresh_api.token("mdt.member")[:-2] + "xx"):
        assert c.get("/auth/me", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    log = fresh_api.get("/access-log", user="admin", params={"action": "login"}).json()["items"]
    assert any(x["username"] == "nobody" and x["status"] == 401 for x in log)


def test_expired_token_is_refused():
    t = Tokens("k", ttl_seconds=-1)
    from engine.registry.access import UserRow
    assert t.read(t.issue(UserRow(id=1, username="x", role="admin", password_hash="-", token_version=0))) is None
    assert Tokens("k", 60).read(Tokens("other-key", 60).issue(UserRow(id=1, username="x", role="admin", password_hash="-"))) is None


def test_session_cookie_login_and_logout(fresh_api):
    c = fresh_api.client
    r = c.post("/auth/login", data={"username": "practice.staff", "password": "practice.staff-demo-pw"})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "carepath_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert c.get("/auth/me").json()["username"] == "practice.staff"  # the cookie alone
    assert c.post("/auth/logout").status_code == 204
    assert c.get("/auth/me").status_code == 401
    c.cookies.clear()


def test_logout_everywhere_revokes_tokens(fresh_api):
    tok = fresh_api.token("auditor")
    h = {"Authorization": f"Bearer {tok}"}
    assert fresh_api.client.post("/auth/logout", headers=h, params={"everywhere": "true"}).status_code == 204
    assert fresh_api.client.get("/auth/me", headers=h).status_code == 401


def test_users_admin(fresh_api):
    r = fresh_api.post("/users", user="admin", json={"username": "nurse.new", "password": "long enough pw", "role": "practice-staff",
                                                     "practice": "a81002", "full_name": "New Nurse"})
    assert r.status_code == 201 and r.json()["practice"] == "A81002"
    assert fresh_api.post("/users", user="admin", json={"username": "nurse.new", "password": "long enough pw",
                                                        "role": "auditor"}).status_code == 409
    assert fresh_api.post("/users", user="admin", json={"username": "x", "password": "short", "role": "auditor"}).status_code == 422
    assert "nurse.new" in {u["username"] for u in fresh_api.get("/users", user="admin").json()}
    tok = fresh_api.client.post("/auth/token", data={"username": "nurse.new", "password": "long enough pw"}).json()["access_token"]
    h = {"Authorization": f"Bearer {tok}"}
    assert fresh_api.client.get("/worklist", headers=h).status_code == 200
    # moving her to another practice revokes her tokens; disabling stops logins
    assert fresh_api.client.patch("/users/nurse.new", headers=fresh_api.h("admin"), json={"practice": "A81001"}).status_code == 200
    assert fresh_api.client.get("/worklist", headers=h).status_code == 401
    assert fresh_api.client.patch("/users/nurse.new", headers=fresh_api.h("admin"), json={"active": False}).json()["active"] is False
    assert fresh_api.client.post("/auth/token", data={"username": "nurse.new", "password": "long enough pw"}).status_code == 401
    assert fresh_api.client.patch("/users/nobody", headers=fresh_api.h("admin"), json={"active": False}).status_code == 404


def test_every_patient_read_is_logged_and_auditors_see_pseudonyms(seeded_api):
    seeded_api.get(f"/patients/{AMINA}/care-plan", user="practice.staff")
    seeded_api.get("/worklist", user="practice.staff", params={"nhs_number": AMINA})
    rows = seeded_api.get("/access-log", user="admin", params={"username": "practice.staff", "action": "read"}).json()["items"]
    assert [r["resource"] for r in rows[:2]] == ["worklist", "care-plan"]
    assert all(r["patients"] == [AMINA] for r in rows[:2])
    audited = seeded_api.get("/access-log", user="auditor", params={"username": "practice.staff", "action": "read"}).json()["items"]
    assert audited[1]["patients"][0].startswith("P-") and AMINA not in audited[1]["path"]
    assert audited[1]["patients"][0] == seeded_api.state.pseudonymise(AMINA)


def test_password_guessing_is_delayed_not_locked(fresh_api):
    """Issue 14 item 7: ten wrong passwords used to lock the account for 15 minutes, right password
    included. Now: 5 free failures, then a growing delay (429 + Retry-After) and the right password
    works as soon as the delay has passed."""
    c, clock = fresh_api.client, fresh_api.clock
    for _ in range(5):
        assert c.post("/auth/token", data={"username": "auditor", "password": "guess"}).status_code == 401
    r = c.post("/auth/token", data={"username": "auditor", "password": "auditor-demo-pw"})
    assert r.status_code == 429 and r.headers["retry-after"] == "2"  # inside the first delay: not even checked
    assert c.post("/auth/token", data={"username": "admin", "password": "admin-demo-pw"}).status_code == 200  # per user
    clock.offset += dt.timedelta(seconds=3)
    assert c.post("/auth/token", data={"username": "auditor", "password": "guess"}).status_code == 401  # checked again
    r = c.post("/auth/token", data={"username": "auditor", "password": "auditor-demo-pw"})
    assert r.status_code == 429 and r.headers["retry-after"] == "4"  # the delay doubled
    clock.offset += dt.timedelta(seconds=5)
    assert c.post("/auth/token", data={"username": "auditor", "password": "auditor-demo-pw"}).status_code == 200
    for _ in range(5):  # the right password cleared the count
        assert c.post("/auth/token", data={"username": "auditor", "password": "guess"}).status_code == 401
    log = fresh_api.get("/access-log", user="admin", params={"username": "auditor", "action": "login"}).json()["items"]
    assert [x["status"] for x in log[:6]] == [401] * 5 + [200] and any(x["status"] == 429 for x in log)


def test_delay_is_capped_so_an_attacker_cannot_lock_the_account_out(fresh_api):
    c, clock = fresh_api.client, fresh_api.clock
    policy = fresh_api.state.login_policy
    waits = []
    for _ in range(14):  # an attacker who always waits out the delay and guesses again
        r = c.post("/auth/token", data={"username": "clinical.lead", "password": "guess"})
        assert r.status_code == 401
        r = c.post("/auth/token", data={"username": "clinical.lead", "password": "guess"})
        if r.status_code == 429:
            waits.append(int(r.headers["retry-after"]))
            clock.offset += dt.timedelta(seconds=waits[-1])
    assert waits[:4] == [2, 4, 8, 16] and max(waits) == policy.cap_seconds == 300
    # however long it went on, the lead gets in once the current delay has passed
    assert c.post("/auth/token", data={"username": "clinical.lead", "password": "clinical.lead-demo-pw"}).status_code == 200
