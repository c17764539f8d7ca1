"""The worklist page's filter counts from one GROUP BY (api.web.worklist._facets_in_one_pass, which filters the
grouped rows in Python) are the counts each filter's own `View.query` gives (every other filter applied: the page's
`_facets_filter_by_filter`, used for the risk-tier and my-tasks filters), for each clinical role's scope and a
spread of filters."""
from __future__ import annotations

from sqlmodel import Session, select

from api.deps import Principal
from api.security import Scope
from api.web import worklist as w
from engine.registry.access import UserRow

FILTERS = [{}, {"status": ["open"]}, {"status": ["completed", "declined", "open"]}, {"priority": ["high", "urgent"]},
           {"role": "gp"}, {"overdue": "yes"}, {"overdue": "no", "role": "practice-nurse"}, {"practice": "A81001"},
           {"practice": "densham"}, {"protocol": "t2dm-annual-care", "priority": ["routine"]}, {"mdt": "central-1"},
           {"mdt": "central-2", "overdue": "yes", "status": ["open", "accepted", "completed"]}]


def _view(**k) -> w.View:
    d = dict(status=None, priority=None, role=None, practice=None, protocol=None, mdt=None, overdue="", risk="",
             sort="priority", page=1, size=50, mine="")
    return w.View(**{**d, **k})


def test_one_pass_counts_are_each_filters_own(api):
    state = api.client.app.state.carepath
    now = state.now()
    with Session(state.engines.read) as s:
        checked = 0
        for username in ("clinical.lead", "mdt.member", "practice.staff"):
            u = s.exec(select(UserRow).where(UserRow.username == username)).one()
            who = Principal(id=u.id, username=u.username, role=u.role, mdt=u.mdt, practice=u.practice,
                            locality=u.locality, scope=Scope.of(u))
            for f in FILTERS:
                v = _view(**f)
                want = w._facets_filter_by_filter(s, v, who, now, tiers={})  # each filter's own query
                assert w._facets_in_one_pass(s, v, who, now) == want, (username, f)
                checked += bool(want["total"])
        assert checked >= 10  # most combinations have tasks to count
        assert w._facets_in_one_pass(s, _view(risk="3"), who, now) is None  # counted filter by filter instead
