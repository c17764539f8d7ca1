"""The access log for those who oversee it: admins (NHS numbers) and auditors (pseudonyms only, NHS
numbers masked everywhere in a row, filter by pseudonym). The rows, filters, masking and the refusal of
an NHS-number filter from an auditor are the API's own (`api.routers.users.access_log`), so the page can
show nothing the API would not."""
from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from api.deps import Principal
from api.routers.users import PSEUDONYM_PATTERN, access_log
from api.schemas import NHS_PATTERN
from api.web.common import PREFIX, PageRoute, need, page_user, render, state_of

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
Short = Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9._@:-]*$")]
PAGE = 50
ACTIONS = ("read", "write", "login", "denied")


def _or_empty(pattern: str) -> str:
    """An anchored pattern that also accepts an empty form field."""
    return r"^(?:" + pattern.removeprefix("^").removesuffix("$") + r")?$"


@router.get("/access-log")
def access_log_page(request: Request, username: Short = None, action: Short = None,
                    nhs_number: Annotated[str | None, Query(pattern=_or_empty(NHS_PATTERN))] = None,
                    pseudonym: Annotated[str | None, Query(pattern=_or_empty(PSEUDONYM_PATTERN))] = None,
                    since: Annotated[str | None, Query(pattern=r"^(?:[0-9]{4}-[0-9]{2}-[0-9]{2})?$")] = None,
                    page: int = Query(1, ge=1, le=100000),
                    who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "accesslog:read")
    try:  # an empty field (the form sends one) means no date
        day = dt.date.fromisoformat(since) if since else None
    except ValueError:
        raise HTTPException(status_code=422, detail="‘since’ should be a date (YYYY-MM-DD).") from None
    out = access_log(request, username or None, action or None, nhs_number or None, pseudonym or None,
                     dt.datetime.combine(day, dt.time()) if day else None, PAGE, (page - 1) * PAGE, who, state)
    pages = max(1, -(-out.total // PAGE))
    filters = {"username": username or "", "action": action or "", "nhs_number": nhs_number or "",
               "pseudonym": pseudonym or "", "since": day.isoformat() if day else ""}
    return render(request, "access_log.html", who, page_title="Access log", out=out, page=page, pages=pages,
                  filters=filters, actions=ACTIONS, pseudonymised=who.pseudonymised,
                  query={k: v for k, v in filters.items() if v})
