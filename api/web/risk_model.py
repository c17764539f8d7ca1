"""The risk-model check as a page: does the risk score find the people who are then admitted?

The same report as `carepath outcomes risk-model` (engine/app/outcomes/risk_model.py) over the registry's own
records: the risk-stratification protocol evaluated as of a date, the emergency admissions of the 12 months
after it, the c-statistic and calibration of the local score beside the eFI and the Hospital Frailty Risk
Score, and admissions per tier. Aggregates only; auditors see counts from 1 to 7 as "<8". A report is kept
for the same registry content (patients and facts), date and protocol version, so a second visit is quick.
"""
from __future__ import annotations

import datetime as dt
import tempfile
import threading
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func
from sqlmodel import Session, select

from api.deps import Principal
from api.web.charts import count_text
from api.web.common import PREFIX, PageRoute, need, page_user, render, state_of
from engine.app.outcomes.risk_model import (calibration_svg, choose_protocol, outcome_end, records_end,
                                            registry_population, risk_model_report)
from engine.language.model import version_key
from engine.registry.tables import FactRow, PatientRow

router = APIRouter(prefix=PREFIX, route_class=PageRoute, include_in_schema=False)
Day = Annotated[str | None, Query(pattern=r"^(\d{4}-\d{2}-\d{2})?$")]
Version = Annotated[str | None, Query(pattern=r"^([0-9]+\.[0-9]+\.[0-9]+)?$")]
PROTOCOL = "risk-stratification"
_cache: dict[tuple, dict] = {}
_lock = threading.Lock()


def _registry_key(engine) -> tuple:
    with Session(engine) as s:
        return (s.exec(select(func.count()).select_from(PatientRow)).one(),
                s.exec(select(func.count(), func.max(FactRow.id)).select_from(FactRow)).one())


@router.get("/outcomes/risk-model")
def risk_model_page(request: Request, as_of: Day = None, version: Version = None, who: Principal = Depends(page_user)):
    state = state_of(request)
    need(request, who, "audit:read")
    lib = state.library
    versions = sorted({p.version for p in lib.protocols if p.id == PROTOCOL and p.status != "draft"}, key=version_key)
    engine = state.engines.read
    key = _registry_key(engine)
    report, error, last = None, None, None
    with _lock:  # one computation at a time; the same registry content, date and version are reused
        with tempfile.TemporaryDirectory(prefix="carepath-risk-page-") as tmp:
            data = None
            try:
                cached_last = _cache.get(("last", key))
                if cached_last is None:
                    data = registry_population(engine, FsPath(tmp) / "population.duckdb")
                    cached_last = _cache[("last", key)] = {"day": records_end(data)}
                last = cached_last["day"]
                day = dt.date.fromisoformat(as_of) if as_of else (
                    last - (outcome_end(last) - last) if last else None)
                if day is None:
                    error = "There are no records in the registry yet."
                else:
                    proto = choose_protocol(lib.protocols, f"{PROTOCOL}@{version}" if version else PROTOCOL, day)
                    rkey = (key, day, proto.key)
                    report = _cache.get(rkey)
                    if report is None:
                        if data is None:
                            data = registry_population(engine, FsPath(tmp) / "population.duckdb")
                        report = _cache[rkey] = risk_model_report(data, proto, day)
            except ValueError as e:
                error = str(e)
    suppress = who.role == "auditor"
    return render(request, "risk_model.html", who, page_title="Risk model check", report=report, error=error,
                  versions=versions, version=version, records_end=last,
                  as_of_day=dt.date.fromisoformat(report["as_of"]) if report else None,
                  end_day=dt.date.fromisoformat(report["outcome_window"][1]) if report else None,
                  svg=calibration_svg(report) if report else None, suppress=suppress, count=count_text)
