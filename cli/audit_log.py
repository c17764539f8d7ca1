"""`carepath audit verify-log`: check the access log's hash chain."""
from __future__ import annotations

from typing import Optional

import typer

from cli.common import console


audit_app = typer.Typer(help="Checks on the service's own records.", no_args_is_help=True)


@audit_app.command("verify-log")
def audit_verify_log(database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL",
                                                                help="Registry database (default sqlite:///var/carepath.db)"),
                     expect_head: Optional[str] = typer.Option(None, "--expect-head", metavar="ID:HASH",
                                                               help="A head printed by an earlier run: check it is still there")):
    """Walk the access log's hash chain: OK with the row count and the head (record it elsewhere to catch
    a rewritten or cut-back tail with --expect-head), or the first broken link (row id, what differs) and
    exit status 1."""
    from engine.registry.db import database_url as default_url, make_engine
    from engine.registry.logchain import verify

    head = None
    if expect_head:
        hid, _, hhash = expect_head.partition(":")
        if not hid.isdigit() or len(hhash) != 64:
            raise typer.BadParameter("--expect-head is ID:HASH as printed by verify-log (head: row ID HASH)")
        head = (int(hid), hhash.lower())
    engine = make_engine(database_url or default_url())
    try:
        result = verify(engine, expect_head=head)
    finally:
        engine.dispose()
    if result.ok:
        head = f"; head: row {result.head_id} {result.head_hash}" if result.head_id is not None else ""
        console.print(f"access log OK: {result.rows} rows, chain intact{head}", highlight=False)
        return
    console.print(f"access log BROKEN at row {result.broken_at} (after {result.rows} good rows): {result.problem}",
                  highlight=False)
    raise typer.Exit(1)


# ---- authoring: test, impact, docs, draft, publish (cli/authoring.py) ------------------------------------
