"""The registry's stored measure results keep each counted patient's value of a measure with `value:`
(issue 19, migration 0015): `patient_measure.value` is the number the stored evaluation holds for patients in
the denominator and not excluded, NULL for everyone else (never 0 in its place), and migration 0015 fills it
again from the stored evaluations; the audit's figures add the values up and FHIR MeasureReports carry them
(continuous-variable populations, measureScore: the patient's value, or the unit's sum). Both databases: the
fill reads the stored JSON, which each extracts its way."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from alembic import command
from sqlmodel import Session, select

from engine.app import fhir_out
from engine.app.audit import figures
from engine.app.audit_sql import live_figures
from engine.app.service import reevaluate_many
from engine.language.library import load_library
from engine.registry import db
from engine.registry.ingest import ingest_records
from engine.registry.outputs import PatientEvaluationRow, PatientMeasureRow
from engine.registry.tables import PatientRow
from engine.synthetic.generate import generate
from engine.synthetic.outcomes import OutcomeModel

ROOT = Path(__file__).resolve().parents[2]
AS_OF = dt.date(2026, 11, 30)


def _values(engine) -> dict:
    with Session(engine) as s:
        return {(r.patient_id, r.measure): r.value for r in s.exec(select(PatientMeasureRow)
                                                                   .where(PatientMeasureRow.protocol == "pilot-outcomes"))}


def test_stored_measure_rows_keep_the_value_and_migration_0015_fills_it(engine, tmp_path):
    protocols = tmp_path / "protocols"
    protocols.mkdir()
    shutil.copy(ROOT / "protocols" / "pilot-outcomes.yaml", protocols)
    shutil.copytree(ROOT / "protocols" / "shared", protocols / "shared")
    shutil.copytree(ROOT / "protocols" / "valuesets", protocols / "valuesets")
    lib = load_library([protocols])
    records = [r for r in generate(200, seed=3, as_of=AS_OF, outcomes=OutcomeModel())
               if AS_OF.year - r.patient.birth_date.year >= 80][:12]
    ingest_records(engine, records, source="generated")
    reevaluate_many(engine, [r.patient.nhs_number for r in records], lib, as_of=AS_OF, now=dt.datetime(2026, 12, 1, 9))

    want = {}
    with Session(engine) as s:
        for ev in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.protocol == "pilot-outcomes")):
            for m in ev.result["measures"]:
                counted = m["denominator"] and not m["exclusion"] and not m.get("cannot_determine")
                want[(ev.patient_id, m["measure"])] = float(m["value"]) if counted and m.get("value") is not None else None
    got = _values(engine)
    assert got == want
    assert any(v for v in got.values())  # someone had an emergency admission in the period
    assert any(v == 0 for v in got.values())  # counted with none: 0, not NULL
    assert all(v is None for (_, m), v in got.items() if m.startswith("ae-"))  # A&E cannot be determined: NULL

    # FHIR: each patient's individual report carries their value; the area's summary the values added up
    period = (dt.date(2025, 12, 1), AS_OF)
    with Session(engine) as s:
        for ev in s.exec(select(PatientEvaluationRow).where(PatientEvaluationRow.protocol == "pilot-outcomes")):
            p = s.get(PatientRow, ev.patient_id)
            for m in ev.result["measures"]:
                rep = fhir_out.individual_report(p, ev.protocol, ev.version, m, period, dt.datetime(2026, 12, 1, 9))
                g = rep["group"][0]
                pops = {x["code"]["coding"][0]["code"]: x["count"] for x in g["population"]}
                v = want[(ev.patient_id, m["measure"])]
                assert g.get("measureScore", {}).get("value") == v
                assert pops["measure-observation"] == int(v is not None) and "numerator" not in pops
        live = live_figures(s, "area", "pilot-outcomes")
    for key, c in live.per_unit.items():
        fig = figures(c, live.area.get(key[:2]))
        values = [v for (_, m), v in want.items() if m == c.measure and v is not None]
        rep = fhir_out.summary_report(fig, period, dt.datetime(2026, 12, 1, 9), has_value=True)
        g = rep["group"][0]
        pops = {x["code"]["coding"][0]["code"]: x["count"] for x in g["population"]}
        assert pops["measure-observation"] == len(values)
        if values:
            assert g["measureScore"]["value"] == sum(values)
            assert g["measureScore"]["extension"][0]["valueCode"] == "sum"
        else:
            assert "measureScore" not in g

    cfg = db.alembic_config()  # stored before 0015: the migration fills the values from the stored results
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0014")
    db.upgrade(engine)
    assert _values(engine) == want
