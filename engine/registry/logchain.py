"""The access log's hash chain (tamper evidence, issue 14 item 9).

Every `access_log` row stores `prev_hash` (the `row_hash` of the row before it, by id; 64 zeros for
the first) and `row_hash = SHA-256(prev_hash + "\\n" + canonical content)`, where the canonical
content is the row's fields other than its id and hashes as sorted-key, compact, ASCII JSON (the
time as naive UTC `YYYY-MM-DD HH:MM:SS.ffffff`). Changing any field of a row changes its hash;
deleting a row, or rewriting one and recomputing its hash, breaks the link from the row after it.
`verify()` walks the chain and names the first broken link (`carepath audit verify-log`).

What it does not do: an insider with write access to the database who rewrites a row *and every
row after it* produces a valid chain, and deleting the newest rows leaves a valid (shorter) chain.
Both are caught only by comparing with a head (last id and hash) recorded elsewhere beforehand:
`verify` reports the head for that purpose (docs/security.md).

Appending is serialised so concurrent writers cannot fork the chain: the new row reads the last
hash inside the writer's transaction while holding a lock — on PostgreSQL a transaction-scoped
advisory lock (`pg_advisory_xact_lock`), on SQLite the database write lock that the service's write
engine takes with `BEGIN IMMEDIATE` (api/db.py). The lock is held until that transaction ends, so
the next writer reads this row's hash. Ids are assigned under the same lock, so id order is chain
order. On PostgreSQL (psycopg) the lock and the last hash's read go to the server in one message as
two statements: one statement holding both would read with the snapshot it took before waiting for
the lock and fork the chain (tests/api/test_api_access_log_chain.py, concurrent writers, fails so).

This module uses SQLAlchemy Core only (no models), so the migration that added the chain
(0007_access_log_chain) can backfill existing rows with exactly this function.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from engine.registry.dialect import is_postgresql

GENESIS = "0" * 64
FIELDS = ("at", "user_id", "username", "role", "action", "method", "path", "resource", "status", "patients", "detail")
LOCK_KEY = 0x6361726570617468 & 0x7FFFFFFFFFFFFFFF  # "carepath": the advisory lock for appending to the log

access_log = sa.table(
    "access_log",
    sa.column("id", sa.Integer), sa.column("at", sa.DateTime), sa.column("user_id", sa.Integer),
    sa.column("username", sa.String), sa.column("role", sa.String), sa.column("action", sa.String),
    sa.column("method", sa.String), sa.column("path", sa.String), sa.column("resource", sa.String),
    sa.column("status", sa.Integer), sa.column("patients", sa.JSON), sa.column("detail", sa.JSON),
    sa.column("prev_hash", sa.String), sa.column("row_hash", sa.String),
)


def _get(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


def _when(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


def plain_json(value: Any) -> Any:
    """The value as it comes back from a JSON column (tuples -> lists, keys -> strings, others -> str)."""
    return json.loads(json.dumps(value, default=str))


def canonical(row: Any) -> str:
    """The row's content (every field but the id and the hashes) as canonical JSON."""
    content = {f: _get(row, f) for f in FIELDS}
    content["at"] = _when(content["at"])
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def row_hash(prev_hash: str, row: Any) -> str:
    return hashlib.sha256(f"{prev_hash}\n{canonical(row)}".encode("ascii")).hexdigest()


def lock_and_last_hash(conn: Connection) -> str:
    """Inside the caller's (write) transaction: take the append lock and return the last row's hash."""
    last_row = sa.select(access_log.c.row_hash).order_by(access_log.c.id.desc()).limit(1)
    if is_postgresql(conn) and conn.dialect.driver == "psycopg":
        # One round trip: the lock and the read as two statements in one message (no parameters, so
        # psycopg sends it with the simple query protocol). Each statement takes its own snapshot
        # (READ COMMITTED), so the read sees the row of whoever held the lock before; the read
        # inside the lock's own statement (a subquery) would not: its snapshot predates the wait.
        sql = f"SELECT pg_advisory_xact_lock({int(LOCK_KEY)}); " + str(last_row.compile(dialect=conn.dialect,
                                                                                         compile_kwargs={"literal_binds": True}))
        result = conn.exec_driver_sql(sql)
        try:
            if not result.cursor.nextset():
                raise RuntimeError("the access log's last hash did not come back with its lock")
            got = result.cursor.fetchone()
        finally:
            result.close()
        return (got[0] if got else None) or GENESIS
    if is_postgresql(conn):
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK_KEY})
    last = conn.execute(last_row).scalar()
    return last or GENESIS


def seal(conn: Connection, row: Any) -> None:
    """Give `row` (an AccessLogRow about to be inserted in `conn`'s transaction) its place in the chain.
    Its patients / detail are normalised to what the JSON column will give back, so the hash verifies."""
    row.patients = plain_json(row.patients or [])
    row.detail = plain_json(row.detail or {})
    row.prev_hash = lock_and_last_hash(conn)
    row.row_hash = row_hash(row.prev_hash, row)


# One access-log row chained onto the last one with its hash computed by PostgreSQL (sha256 of the same ASCII
# bytes row_hash hashes: the previous hash, a newline, the canonical content worked out here).
_PG_APPEND = (
    "INSERT INTO access_log (at, user_id, username, role, action, method, path, resource, status, patients, detail, "
    "prev_hash, row_hash) "
    "SELECT %(at)s, %(user_id)s, %(username)s, %(role)s, %(action)s, %(method)s, %(path)s, %(resource)s, %(status)s, "
    "%(patients)s, %(detail)s, last.h, encode(sha256(convert_to(last.h || E'\\n' || %(canonical)s, 'UTF8')), 'hex') "
    "FROM (SELECT coalesce((SELECT row_hash FROM access_log ORDER BY id DESC LIMIT 1), %(genesis)s) AS h) AS last")


def append(conn: Connection, values: Mapping[str, Any]) -> None:
    """Insert one row (`values`: FIELDS) chained onto the last, inside `conn`'s transaction, the append lock
    held until it ends: the same row, hashes included, as `seal` and an INSERT give. On PostgreSQL with
    psycopg, the lock and the INSERT (which reads the last hash and computes the row's) go to the server in
    one round trip (a pipeline of two statements, each with its own snapshot, so the INSERT's read of the
    last hash comes after the lock is granted); elsewhere `seal`, then an INSERT."""
    row = {f: values.get(f) for f in FIELDS}
    row["patients"] = plain_json(row["patients"] or [])
    row["detail"] = plain_json(row["detail"] or {})
    if is_postgresql(conn) and conn.dialect.driver == "psycopg":
        from psycopg.types.json import Json

        dumps = conn.dialect._json_serializer or json.dumps  # what the JSON columns are written with
        params = dict(row, patients=Json(row["patients"], dumps=dumps), detail=Json(row["detail"], dumps=dumps),
                      canonical=canonical(row), genesis=GENESIS)
        raw = conn.connection.driver_connection
        with raw.pipeline(), raw.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            cur.execute(_PG_APPEND, params)
        return
    prev = lock_and_last_hash(conn)
    conn.execute(sa.insert(access_log).values(**row, prev_hash=prev, row_hash=row_hash(prev, row)))


@dataclass
class Verification:
    ok: bool
    rows: int
    broken_at: int | None = None
    problem: str | None = None
    head_id: int | None = None
    head_hash: str | None = None


def verify(bind: Engine | Connection, batch: int = 5000, expect_head: tuple[int, str] | None = None) -> Verification:
    """Walk the chain in id order; stop at the first broken link. With `expect_head` (an id and hash
    that `verify` reported earlier), also check that row is still there with that hash: a rewritten
    or truncated tail, which leaves a valid chain, shows up there."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return verify(conn, batch, expect_head)
    conn = bind
    head_seen = False
    expected, prev_id, n = GENESIS, None, 0
    for r in _in_id_order(conn, batch):
        if r["prev_hash"] != expected:
            gap = ""
            if prev_id is not None and r["id"] != prev_id + 1:
                missing = f"{prev_id + 1}" if r["id"] == prev_id + 2 else f"{prev_id + 1}-{r['id'] - 1}"
                gap = f" (id {missing} missing: deleted?)"
            before = f"row {prev_id}" if prev_id is not None else "the start of the log"
            return Verification(False, n, r["id"], f"row {r['id']}: its previous hash {str(r['prev_hash'])[:16]}... does not "
                                f"match {before} ({expected[:16]}...): a row before it was deleted or changed{gap}",
                                prev_id, expected)
        computed = row_hash(r["prev_hash"], r)
        if r["row_hash"] != computed:
            return Verification(False, n, r["id"], f"row {r['id']}: its content does not match its hash "
                                f"(stored {str(r['row_hash'])[:16]}..., content gives {computed[:16]}...): "
                                f"the row was changed after it was written", prev_id, expected)
        if expect_head and r["id"] == expect_head[0]:
            head_seen = True
            if r["row_hash"] != expect_head[1]:
                return Verification(False, n, r["id"], f"row {r['id']}: its hash {r['row_hash'][:16]}... is not the recorded "
                                    f"head {expect_head[1][:16]}...: the log from here on was rewritten", prev_id, expected)
        expected, prev_id, n = r["row_hash"], r["id"], n + 1
    if expect_head and not head_seen:
        return Verification(False, n, expect_head[0], f"row {expect_head[0]}, the recorded head, is missing: "
                            f"the log was cut back to row {prev_id}", prev_id, expected)
    return Verification(True, n, head_id=prev_id, head_hash=expected if prev_id is not None else None)


def backfill(conn: Connection, batch: int = 5000) -> int:
    """Chain every row that has no hash yet, in id order, after the last chained row (migration 0007)."""
    expected, n = GENESIS, 0
    for r in _in_id_order(conn, batch):
        if r["row_hash"] is not None:
            expected = r["row_hash"]
            continue
        h = row_hash(expected, r)
        conn.execute(access_log.update().where(access_log.c.id == r["id"]).values(prev_hash=expected, row_hash=h))
        expected, n = h, n + 1
    return n


def _in_id_order(conn: Connection, batch: int):
    """Every access-log row in id order, read in batches (memory stays flat on a long log)."""
    after = None
    while True:
        q = sa.select(access_log).order_by(access_log.c.id).limit(batch)
        if after is not None:
            q = q.where(access_log.c.id > after)
        rows = conn.execute(q).mappings().all()
        if not rows:
            return
        yield from rows
        after = rows[-1]["id"]
