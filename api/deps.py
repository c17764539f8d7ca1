"""FastAPI dependencies: state, sessions, the current user (bearer token or session cookie),
permission checks, patient scoping and the access log."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from fastapi import Depends, HTTPException, Request
from fastapi.security import OAuth2PasswordBearer
from sqlmodel import Session, select

from api import sessions
from api.state import COOKIE_NAME, AppState
from api.security import AUDITOR, PERMISSIONS, Scope
from engine.registry.access import AccessLogRow
from engine.registry.logchain import append, seal
from engine.registry.tables import PatientRow

oauth2 = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)


def get_state(request: Request) -> AppState:
    return request.app.state.carepath


def read_session(state: AppState = Depends(get_state)) -> Iterator[Session]:
    with Session(state.engines.read) as s:
        yield s


@dataclass(frozen=True)
class Principal:
    id: int
    username: str
    role: str
    mdt: str | None
    practice: str | None
    locality: str | None
    scope: Scope
    session: str = ""  # SHA-256 of the server-side session id (api/sessions.py)
    clinical_roles: tuple[str, ...] = ()  # the care roles they work in (engine.app.task_outcomes)

    @property
    def pseudonymised(self) -> bool:
        return self.role == AUDITOR


def log_access(state: AppState, request: Request | None, who: Principal | None, action: str, resource: str, *,
               patients: Iterable[str] = (), status: int = 200, detail: dict | None = None,
               session: Session | None = None, username: str | None = None) -> None:
    """Append to the access log. With `session`, the row joins that (write) transaction. The row is
    hash-chained to the one before it under a lock held until that transaction ends (logchain.seal)."""
    values = dict(user_id=who.id if who else None, username=who.username if who else username,
                  role=who.role if who else None, action=action,
                  method=request.method if request else "-", path=str(request.url.path)[:500] if request else "-",
                  resource=resource, status=status, patients=sorted(set(patients)), detail=detail or {},
                  at=state.now())
    if session is not None:
        row = AccessLogRow(**values)
        seal(session.connection(), row)
        session.add(row)
        session.flush()  # a second row in the same transaction chains onto this one
        return
    with state.engines.write.begin() as conn:  # a transaction of its own: lock, chain, insert (one round trip
        append(conn, values)                   # on PostgreSQL), commit


def _unauthorised(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, state: AppState = Depends(get_state), bearer: str | None = Depends(oauth2)) -> Principal:
    token = bearer or request.cookies.get(COOKIE_NAME)
    checked = sessions.check_request(state, request.scope, token)
    if checked.problem:
        raise _unauthorised(checked.problem)
    user, row = checked.user, checked.session
    sessions.touch(state, row)
    return Principal(id=user.id, username=user.username, role=user.role, mdt=user.mdt, practice=user.practice,
                     locality=user.locality, scope=Scope.of(user), session=row.id_hash,
                     clinical_roles=tuple(user.clinical_roles or ()))


def require(permission: str):
    roles = PERMISSIONS[permission]

    def dependency(request: Request, who: Principal = Depends(current_user), state: AppState = Depends(get_state)) -> Principal:
        if who.role not in roles:
            log_access(state, request, who, "denied", permission, status=403, detail={"reason": f"role {who.role}"})
            raise HTTPException(status_code=403, detail=f"a {who.role} may not do this ({permission}: {', '.join(sorted(roles))})")
        return who

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency


NO_PATIENT = "no patient with that NHS number in your scope"


def patient_in_scope(session: Session, state: AppState, request: Request, who: Principal, nhs_number: str,
                     resource: str) -> PatientRow:
    """The patient, or 404. A patient who is not registered and one outside the user's scope get the
    same status and message (the caller cannot learn whether an NHS number is registered); both
    refusals are logged, the log saying which it was."""
    row = session.exec(select(PatientRow).where(PatientRow.nhs_number == nhs_number)).first()
    if row is None or who.pseudonymised or not who.scope.allows(row):
        if row is None:  # not a patient: the number goes in the detail, for spotting someone trying numbers
            log_access(state, request, who, "denied", resource, status=404,
                       detail={"reason": "no such patient", "nhs_number": nhs_number})
        else:
            log_access(state, request, who, "denied", resource, patients=[nhs_number], status=404,
                       detail={"reason": "patient outside the user's scope"})
        raise HTTPException(status_code=404, detail=NO_PATIENT)
    return row


def scoped(query, who: Principal):
    """Restrict a query that joins PatientRow to the user's scope."""
    clause = who.scope.clause()
    return query if clause is None else query.where(clause)
