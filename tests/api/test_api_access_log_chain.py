"""Issue 14 item 9 (part): the access log is tamper-evident. Each row carries SHA-256(previous row's
hash + this row's canonical content); `carepath audit verify-log` walks the chain and names the first
broken link. Runs on SQLite and PostgreSQL (`db_url`)."""
from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlmodel import Session, select
from typer.testing import CliRunner

from api.deps import log_access
from cli.main import app as cli
from engine.registry import db
from engine.registry.access import AccessLogRow
from engine.registry.logchain import GENESIS, verify
from tests.api.support import AMINA, make_api, close_api, copy_protocols


def _activity(a) -> None:
    a.get(f"/patients/{AMINA}/care-plan", user="practice.staff")
    a.get("/worklist", user="mdt.member")
    a.get("/users", user="auditor")  # refused, logged
    a.client.post("/auth/token", data={"username": "admin", "password": "wrong password"})
    a.get("/access-log", user="admin")


def _ids(a) -> list[int]:
    with Session(a.state.engines.read) as s:
        return list(s.exec(select(AccessLogRow.id).order_by(AccessLogRow.id)))


def _cli(url: str):
    return CliRunner().invoke(cli, ["audit", "verify-log", "--database-url", url])


def test_chain_verifies_after_normal_activity(seeded_api):
    _activity(seeded_api)
    ids = _ids(seeded_api)
    result = verify(seeded_api.state.engines.read)
    assert result.ok and result.rows == len(ids) > 5 and result.problem is None
    with Session(seeded_api.state.engines.read) as s:
        rows = list(s.exec(select(AccessLogRow).order_by(AccessLogRow.id)))
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.row_hash for a, b in zip(rows, rows[1:]))
    out = _cli(seeded_api.url)
    assert out.exit_code == 0, out.output
    assert "OK" in out.output and f"{len(ids)} rows" in out.output


def test_a_changed_row_is_reported(seeded_api):
    _activity(seeded_api)
    ids = _ids(seeded_api)
    victim = ids[len(ids) // 2]
    with seeded_api.state.engines.write.begin() as conn:
        conn.execute(sa.text("UPDATE access_log SET detail = :d WHERE id = :i"), {"d": '{"reason": "nothing to see"}', "i": victim})
    result = verify(seeded_api.state.engines.read)
    assert not result.ok and result.broken_at == victim and "content" in result.problem
    out = _cli(seeded_api.url)
    assert out.exit_code == 1 and f"row {victim}" in out.output, out.output


def test_a_changed_patient_list_or_user_is_reported(seeded_api):
    _activity(seeded_api)
    ids = _ids(seeded_api)
    with seeded_api.state.engines.write.begin() as conn:
        conn.execute(sa.text("UPDATE access_log SET username = 'someone.else' WHERE id = :i"), {"i": ids[3]})
    assert verify(seeded_api.state.engines.read).broken_at == ids[3]


def test_a_deleted_row_is_reported(seeded_api):
    _activity(seeded_api)
    ids = _ids(seeded_api)
    victim = ids[len(ids) // 2]
    with seeded_api.state.engines.write.begin() as conn:
        conn.execute(sa.text("DELETE FROM access_log WHERE id = :i"), {"i": victim})
    result = verify(seeded_api.state.engines.read)
    after = ids[ids.index(victim) + 1]
    assert not result.ok and result.broken_at == after
    assert "previous" in result.problem and str(victim) in result.problem
    out = _cli(seeded_api.url)
    assert out.exit_code == 1 and f"row {after}" in out.output, out.output


def test_a_recomputed_row_hash_still_breaks_the_next_link(seeded_api):
    # An insider who rewrites a row and recomputes its own hash breaks the link to the row after it.
    from engine.registry.logchain import row_hash
    _activity(seeded_api)
    ids = _ids(seeded_api)
    victim = ids[2]
    with Session(seeded_api.state.engines.write) as s:
        row = s.get(AccessLogRow, victim)
        row.detail = {"forged": True}
        row.row_hash = row_hash(row.prev_hash, row)
        s.add(row)
        s.commit()
    result = verify(seeded_api.state.engines.read)
    assert result.broken_at == ids[3] and "previous" in result.problem


def test_concurrent_writers_keep_the_chain(seeded_api):
    state = seeded_api.state
    before = len(_ids(seeded_api))
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                if i % 3 == 0:  # a row that joins a write transaction, as task actions do
                    with Session(state.engines.write) as s:
                        log_access(state, None, None, "write", "probe", patients=[AMINA], detail={"t": n, "i": i}, session=s)
                        s.commit()
                else:
                    log_access(state, None, None, "read", "probe", detail={"t": n, "i": i}, username=f"thread{n}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = verify(state.engines.read)
    assert result.ok, result.problem
    assert result.rows == before + 6 * 15


def test_migration_backfills_existing_rows(db_url, tmp_path):
    engine = db.make_engine(db_url)
    try:
        db.upgrade(engine, "0004")
        with engine.begin() as conn:
            for i in range(5):
                conn.execute(sa.text(
                    "INSERT INTO access_log (at, user_id, username, role, action, method, path, resource, status, patients, detail) "
                    "VALUES (:at, :uid, :u, 'admin', 'read', 'GET', '/x', 'probe', 200, :p, :d)"),
                    {"at": f"2026-01-0{i + 1} 10:00:00.123456", "uid": i, "u": f"user{i}", "p": f'["{AMINA}"]',
                     "d": '{"n": %d, "z": "\\u00e9"}' % i})
        db.upgrade(engine)
        result = verify(engine)
        assert result.ok and result.rows == 5, result.problem
        # and the service chains on from the backfilled rows
        a = make_api(db_url, copy_protocols(tmp_path / "protocols"), seed=False)
        try:
            a.get("/users", user="admin")
        finally:
            close_api(a)
        result = verify(engine)
        assert result.ok and result.rows > 5, result.problem
    finally:
        engine.dispose()


def test_a_recorded_head_catches_a_cut_back_or_rewritten_tail(seeded_api):
    _activity(seeded_api)
    first = verify(seeded_api.state.engines.read)
    head = f"{first.head_id}:{first.head_hash}"
    assert _cli(seeded_api.url).output.strip().endswith(f"head: row {first.head_id} {first.head_hash}")
    seeded_api.get("/worklist", user="mdt.member")  # more activity after the head was recorded
    out = CliRunner().invoke(cli, ["audit", "verify-log", "--database-url", seeded_api.url, "--expect-head", head])
    assert out.exit_code == 0, out.output
    with seeded_api.state.engines.write.begin() as conn:  # an insider cuts the log back to before the head
        conn.execute(sa.text("DELETE FROM access_log WHERE id >= :i"), {"i": first.head_id})
    assert verify(seeded_api.state.engines.read).ok  # the chain alone cannot tell
    out = CliRunner().invoke(cli, ["audit", "verify-log", "--database-url", seeded_api.url, "--expect-head", head])
    assert out.exit_code == 1 and f"row {first.head_id}" in out.output and "missing" in out.output, out.output
