"""A stored care-plan result names each task's `raised_at` / `due` as its task row has them (issue 17
item 5): the task row's SLA clock is set when the task is first raised and never moves, and every view
(care plan protocols[].tasks, open_tasks, worklist, FHIR) must agree with it, whether the protocol's
result was derived again (the evaluator stamps `raised_at` = now) or reused from the stored row
(selective re-evaluation; it carried the times of whenever it was computed)."""
from __future__ import annotations

import datetime as dt

from sqlmodel import Session, select

from engine.synthetic.demo import HBA1C, SCT, demo_records
from engine.app.service import reevaluate
from engine.language.library import load_library
from engine.records.model import Fact, PatientRecord
from engine.registry.ingest import ingest_records
from engine.registry.outputs import PatientEvaluationRow, TaskRow
from tests.api.support import AMINA, copy_protocols

AS_OF = dt.date(2026, 11, 23)


def result_vs_rows(engine) -> list[tuple]:
    """(task key, times in the stored result, times of the task row) for every task of every result."""
    with Session(engine) as s:
        rows = {}
        for t in s.exec(select(TaskRow).order_by(TaskRow.id)):
            rows[t.key] = (t.raised_at, t.due)  # the latest row per key
        out = []
        for e in s.exec(select(PatientEvaluationRow)):
            for t in e.result.get("tasks", []):
                out.append((t["key"], (dt.datetime.fromisoformat(t["raised_at"]), dt.datetime.fromisoformat(t["due"])),
                            rows.get(t["key"])))
    return out


def evaluate(engine, library, now: dt.datetime, selective: bool = True) -> None:
    with Session(engine) as s:
        reevaluate(s, AMINA, library, as_of=now.date(), now=now, selective=selective)
        s.commit()


def test_stored_results_carry_the_task_rows_times(engine, tmp_path):
    library = load_library([copy_protocols(tmp_path / "protocols")])
    amina = next(r for r in demo_records(AS_OF) if r.patient.nhs_number == AMINA)
    ingest_records(engine, [amina], source="test")
    first = dt.datetime.combine(AS_OF, dt.time(9, 0))
    evaluate(engine, library, first)
    pairs = result_vs_rows(engine)
    assert pairs and all(res == row for _, res, row in pairs)
    assert all(res[0] == first for _, res, _ in pairs)

    # A new HbA1c the protocol reads: its result is derived again, hours later; the tasks it still asks
    # for keep their rows (raised at 09:00, due as then), and so must the stored result.
    later = first + dt.timedelta(hours=5)
    hba1c = Fact(id="hba1c-new", kind="observation", codes=[{"system": SCT, "code": HBA1C}],
                 start=dt.datetime.combine(AS_OF, dt.time(8)), value=71, unit="mmol/mol", source_system="pathology-lims")
    ingest_records(engine, [PatientRecord(patient=amina.patient, facts=[hba1c])], source="test")
    evaluate(engine, library, later)
    pairs = result_vs_rows(engine)
    stale = [(k, res, row) for k, res, row in pairs if res != row]
    assert stale == [], "stored result disagrees with the task rows"
    assert any(res[0] == first for _, res, _ in pairs)  # the continuing tasks: raised at 09:00

    # Nothing new: the result is reused; still the rows' times.
    evaluate(engine, library, later + dt.timedelta(hours=1))
    assert all(res == row for _, res, row in result_vs_rows(engine))
