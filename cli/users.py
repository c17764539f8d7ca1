"""`carepath users add|list|set`: the API's users (one rule for passwords: engine/app/users.py)."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from cli.common import console, err


users_app = typer.Typer(help="Manage the API's users (roles: clinical-lead, mdt-member, practice-staff, auditor, admin).",
                        no_args_is_help=True)


def _users_session(database_url: Optional[str]):
    from sqlmodel import Session

    from engine.registry.db import database_url as default_url, make_engine, upgrade
    engine = make_engine(database_url or default_url())
    upgrade(engine)
    return Session(engine)


def _password(password: Optional[str]) -> str:
    if password:
        return password
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(username: str = typer.Argument(...),
              role: str = typer.Option(..., "--role", help="clinical-lead | mdt-member | practice-staff | auditor | admin"),
              password: Optional[str] = typer.Option(None, "--password", envvar="CAREPATH_NEW_PASSWORD",
                                                     help="Prompted for when not given"),
              full_name: Optional[str] = typer.Option(None, "--name"),
              mdt: Optional[str] = typer.Option(None, "--mdt", help="Scope: the user's MDT"),
              practice: Optional[str] = typer.Option(None, "--practice", help="Scope: the user's practice (ODS code)"),
              locality: Optional[str] = typer.Option(None, "--locality", help="Scope: the user's locality"),
              clinical_role: Optional[list[str]] = typer.Option(None, "--clinical-role",
                                                                help="A care role they work in (gp, practice-nurse, care-coordinator ...); repeat for more. Tasks are completed only by their role, a care coordinator or a clinical lead"),
              database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL")):
    """Add a user (the password is stored as an argon2 hash)."""
    from engine.app.users import UserError, add_user
    with _users_session(database_url) as s:
        try:
            row = add_user(s, username, _password(password), role, full_name=full_name, mdt=mdt, practice=practice,
                           locality=locality, clinical_roles=clinical_role)
        except UserError as e:
            err.print(str(e))
            raise typer.Exit(2) from None
        s.commit()
        console.print(f"added {row.username} ({row.role})", highlight=False)


@users_app.command("list")
def users_list(database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL")):
    """List users, their roles and scopes."""
    from sqlmodel import select

    from engine.registry.access import UserRow
    with _users_session(database_url) as s:
        t = Table("Username", "Name", "Role", "Care roles", "MDT", "Practice", "Locality", "Active", "Last login")
        for u in s.exec(select(UserRow).order_by(UserRow.username)):
            t.add_row(u.username, u.full_name or "", u.role, ", ".join(u.clinical_roles or []), u.mdt or "", u.practice or "", u.locality or "",
                      "yes" if u.active else "no", str(u.last_login_at or ""))
        console.print(t)


@users_app.command("set")
def users_set(username: str = typer.Argument(...),
              role: Optional[str] = typer.Option(None, "--role"),
              new_password: bool = typer.Option(False, "--password", help="Prompt for a new password"),
              active: Optional[bool] = typer.Option(None, "--active/--disabled"),
              mdt: Optional[str] = typer.Option(None, "--mdt"), practice: Optional[str] = typer.Option(None, "--practice"),
              locality: Optional[str] = typer.Option(None, "--locality"),
              clinical_role: Optional[list[str]] = typer.Option(None, "--clinical-role",
                                                                help="A care role they work in (gp, practice-nurse, care-coordinator ...); repeat for more. Tasks are completed only by their role, a care coordinator or a clinical lead"),
              database_url: Optional[str] = typer.Option(None, "--database-url", envvar="DATABASE_URL")):
    """Change a user's role, scope, password or status (revokes their tokens and sessions)."""
    from sqlmodel import select

    from engine.app.users import UserError, update_user
    from engine.registry.access import UserRow
    with _users_session(database_url) as s:
        row = s.exec(select(UserRow).where(UserRow.username == username.strip().lower())).first()
        if row is None:
            err.print(f"no user {username!r}")
            raise typer.Exit(2)
        try:
            update_user(s, row, password=_password(None) if new_password else None, role=role, active=active, mdt=mdt,
                        practice=practice, locality=locality, clinical_roles=clinical_role or None)
        except UserError as e:
            err.print(str(e))
            raise typer.Exit(2) from None
        s.commit()
        console.print(f"updated {row.username}", highlight=False)


# ---- population scale: synthetic population, batch evaluation, benchmark -------------------------------
