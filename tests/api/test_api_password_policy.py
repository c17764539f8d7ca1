"""Password and username rules (issue 14 item 8), the same for `carepath users` and `/users`."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from engine.app.users import DEMO_PASSWORD_SUFFIX, DEMO_USERS, password_problem
from cli.main import app as cli
from tests.api.support import EXTRA_USERS

DATABASES = ["sqlite"]  # password and username rules are checked before anything is stored (tests/conftest.py)

WEAK = ["12345678", "password", " " * 8, " " * 12, "password1234", "123456789012", "qwertyuiopasdf",
        "aaaaaaaaaaaaaaaa", "carepath2026!", "nurse.new2026", "x" * 129]
GOOD = ["correct horse battery", "long enough pw", "Winter frost on 9 hedges", "ünïcödé pässwörd lång", "a" * 5 + " 7 tigers ate my sofa" + "z" * 100]


@pytest.mark.parametrize("password", WEAK)
def test_weak_passwords_are_refused(password):
    assert password_problem(password, "nurse.new")


@pytest.mark.parametrize("password", GOOD)
def test_long_unguessable_passwords_are_accepted(password):
    assert password_problem(password, "nurse.new") is None


def test_demo_passwords_pass_the_policy():
    """They are seeded through the same add_user as everyone else: no exemption."""
    for username in [*DEMO_USERS, *EXTRA_USERS]:
        assert password_problem(username + DEMO_PASSWORD_SUFFIX, username) is None, username


def test_api_refuses_weak_passwords(fresh_api):
    for password in ["12345678", "password", " " * 8, "password1234", "nurse.new2026"]:
        r = fresh_api.post("/users", user="admin", json={"username": "nurse.new", "password": password, "role": "auditor"})
        assert r.status_code == 422, (password, r.text)
    r = fresh_api.post("/users", user="admin", json={"username": "nurse.new", "password": "correct horse battery",
                                                     "role": "auditor"})
    assert r.status_code == 201
    for password in ["password1234", "x" * 11]:
        r = fresh_api.client.patch("/users/nurse.new", headers=fresh_api.h("admin"), json={"password": password})
        assert r.status_code == 422, password
    r = fresh_api.client.patch("/users/nurse.new", headers=fresh_api.h("admin"), json={"password": "x" * 64 + " 64 is fine"})
    assert r.status_code == 200


def _cli(args, db, password=None):
    env = {"DATABASE_URL": db}
    if password is not None:
        env["CAREPATH_NEW_PASSWORD"] = password
    return CliRunner().invoke(cli, args, env=env)


def test_cli_applies_the_same_rules(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    for password in ["12345678", "password", " " * 8]:  # all accepted before (issue 14)
        r = _cli(["users", "add", "nurse.new", "--role", "auditor"], db, password)
        assert r.exit_code == 2 and "password" in r.output, (password, r.output)
    for name in ["Weird User<script>", "a", "-dash", "x" * 101, "Upper.Case"]:  # the API's schema refuses these too
        r = _cli(["users", "add", name, "--role", "auditor"], db, "correct horse battery")
        assert r.exit_code == 2 and "username" in r.output, (name, r.output)
    r = _cli(["users", "add", "nurse.new", "--role", "auditor"], db, "correct horse battery")
    assert r.exit_code == 0, r.output
    r = _cli(["users", "set", "nurse.new", "--password"], db, None)
    assert r.exit_code != 0  # prompted: no input here
    r = CliRunner().invoke(cli, ["users", "set", "nurse.new", "--password"], env={"DATABASE_URL": db},
                           input="password1234\npassword1234\n")
    assert r.exit_code == 2 and "too easy to guess" in r.output
