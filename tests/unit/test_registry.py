"""Registry on a real database: SQLite and PostgreSQL (`db_url`, tests/conftest.py)."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import Session, SQLModel, func, select

from engine.records.fhir.common import BundleError
from engine.records.model import Coding, Fact, Patient, PatientRecord
from engine.registry import db
from engine.registry.ingest import IngestError, ingest_fhir_bundle, ingest_records, iter_records, load_record
from engine.registry.tables import FactRow, IngestBatch, PatientRow, PatientSourceId

ECQM = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "ecqm"
NHS_A, NHS_B, NHS_C = "9434765919", "9434765870", "9000000009"


def fact(id: str, code: str = "44054006", *, start=dt.datetime(2024, 1, 1), source="gp", **kw) -> Fact:
    return Fact(id=id, kind=kw.pop("kind", "observation"), codes=[Coding(system="sct", code=code)], start=start, source_system=source, **kw)


def record(nhs: str, *facts: Fact, **patient) -> PatientRecord:
    return PatientRecord(patient=Patient(nhs_number=nhs, birth_date=patient.pop("birth_date", dt.date(1960, 1, 1)), **patient), facts=list(facts))


def counts(engine) -> dict[str, int]:
    with Session(engine) as s:
        return {t.__tablename__: s.exec(select(func.count()).select_from(t)).one() for t in (PatientRow, PatientSourceId, FactRow, IngestBatch)}


def load(engine, nhs: str) -> PatientRecord | None:
    with Session(engine) as s:
        return load_record(s, nhs)


# ---------------------------------------------------------------------------------------------
# Schema: Alembic only, and it matches the SQLModel tables


def test_migrations_build_exactly_the_model_schema(db_url):
    db.upgrade(db_url)
    db.upgrade(db_url)  # a second run is a no-op
    e = db.make_engine(db_url)
    try:
        with e.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
        assert diffs == []
        head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
        assert db.current_revision(e) == head == "0017"
        assert set(sa.inspect(e).get_table_names()) == {"alembic_version", "patient", "patient_source_id", "fact", "ingest_batch",
                                                        "task", "task_event", "flag", "patient_evaluation", "patient_measure",
                                                        "app_user", "access_log", "audit_snapshot", "mdt_outcome",
                                                        "protocol_publication", "protocol_draft", "service_key", "auth_session", "login_throttle",
                                                        "pending_evaluation", "data_problem", "impact_run",
                                                        "bulk_ingest_run", "bulk_ingest_refusal"}
        checks = {c["name"] for c in sa.inspect(e).get_check_constraints("fact")}
        assert "ck_fact_period" in checks
    finally:
        e.dispose()


def test_migrations_downgrade_to_nothing(db_url):
    from alembic import command

    e = db.make_engine(db_url)
    try:
        db.upgrade(e)
        cfg = db.alembic_config()
        with e.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(sa.inspect(e).get_table_names()) == {"alembic_version"}
    finally:
        e.dispose()


def test_no_create_all_in_registry_code():
    src = Path(db.__file__).parent
    offenders = [p.name for p in src.rglob("*.py") if "create_all" in p.read_text()]
    assert offenders == []


def test_database_url_default_is_sqlite_under_var(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert db.database_url() == "sqlite:///var/carepath.db"
    assert (tmp_path / "var").is_dir()
    db.upgrade()  # default URL, relative to the working directory
    assert (tmp_path / "var" / "carepath.db").is_file()
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p%40ss@db.example:5432/carepath")
    assert db.database_url() == "postgresql+psycopg://u:p%40ss@db.example:5432/carepath"


def test_sqlite_enforces_foreign_keys(tmp_path):
    e = db.make_engine(f"sqlite:///{tmp_path}/fk.db")
    db.upgrade(e)
    with pytest.raises(sa.exc.IntegrityError):
        with Session(e) as s:
            s.add(PatientSourceId(patient_id=12345, source_system="x", source_id="y"))
            s.commit()
    e.dispose()


# ---------------------------------------------------------------------------------------------
# Ingest


def test_round_trip_of_a_rich_record(engine):
    rec = record(
        NHS_A,
        fact("c1", kind="condition", start=dt.datetime(2015, 3, 1), end=dt.datetime(2020, 1, 1, 12, 30, 1, 250000),
             attrs={"clinical_status": "resolved", "category": ["problem-list-item"], "nested": {"a": [1, 2.5, None, True]}}),
        fact("o1", "4548-4", value=61.5, unit="mmol/mol", status="final", care_setting="acute"),
        fact("o2", value_codes=[Coding(system="sct", code="160734000", display="Lives in nursing home")]),
        fact("x1", kind="exception", exception_type="declined", care_setting="community"),
        sex="female", practice="A81001", locality="Brent", mdt="MDT-1", death_date=dt.date(2025, 1, 1),
        registered_on=dt.date(1990, 1, 1), given_name="Ann", family_name="Jones", source_ids={"gp": "E1", "fhir": "abc"},
    )
    summary = ingest_records(engine, [rec], source="test")
    assert summary.affected == {NHS_A} and summary.added == 4 and summary.patients[NHS_A].created
    assert str(summary) == f"batch {summary.batch_id} from test: 1 patient(s) (1 new), facts 4 added / 0 updated / 0 unchanged; 1 to re-evaluate"
    assert load(engine, NHS_A) == rec
    assert load(engine, NHS_B) is None


def _merged(earlier: PatientRecord | None, later: PatientRecord) -> PatientRecord:
    """What the registry should hold after two deliveries for one patient from one source: the
    later delivery's known demographics win, facts are matched by (source, id) and replaced in place."""
    if earlier is None:
        return later
    known = {k: v for k, v in later.patient.model_dump().items()
             if v is not None and v != {} and not (k == "sex" and v == "unknown")}
    patient = earlier.patient.model_copy(update={k: v for k, v in known.items() if k != "source_ids"})
    facts = {(f.source_system, f.id): f for f in earlier.facts}
    facts.update({(f.source_system, f.id): f for f in later.facts})
    return PatientRecord(patient=patient, facts=list(facts.values()))


def test_every_ecqm_bundle_round_trips_through_the_registry(engine):
    originals, noted = {}, {}
    paths = sorted(ECQM.glob("CMS*/cases/*/bundle.json"))
    assert len(paths) >= 406, f"expected the eight eCQM decks beside the repository at {ECQM}"
    for path in paths:
        result, summary = ingest_fhir_bundle(engine, json.loads(path.read_text()))
        (rec,) = result.records
        originals[rec.patient.nhs_number] = _merged(originals.get(rec.patient.nhs_number), rec)
        assert summary.affected == {rec.patient.nhs_number}
        notes = [n for f in rec.facts for n in f.attrs.get("data_quality", [])]
        if notes:
            noted[f"{path.parts[-4]}/{path.parts[-2]}"] = notes
            assert all(any(n in w for w in summary.warnings) for n in notes)  # the caller is told too
    # MADiE copied some cases between decks with their Patient ids (CMS22 and CMS69 share 4): one
    # source id is one person, so those deliveries merge into one patient, facts last-delivery-wins.
    assert len(originals) == len(paths) - 4
    with Session(engine) as s:
        loaded = {r.patient.nhs_number: r for r in iter_records(s)}
        batches = s.exec(select(IngestBatch)).all()
    assert loaded == originals  # data-quality notes are stored with the facts they describe
    assert len(batches) == len(paths) and all(b.content_hash and len(b.content_hash) == 64 for b in batches)
    # Entries carepath cannot use are listed on their batch with a reason, never dropped silently: in
    # CMS122/CMS165 the two Coverage resources without a period; in the new decks, Coverages with a
    # text-only type, Conditions without a date, references to a Patient outside the bundle and the
    # notDone modifier (an observation *not* done, which must not read as done).
    reasons = [r.split(": ", 1)[1] for b in batches for r in b.skipped]
    known = ("no usable code in Coverage.type", "no date (Coverage.period)", "no date (onset[x] / recordedDate)",
             "is not a Patient in this bundle", "qicore-notDone changes the meaning of the resource")
    assert reasons and all(any(k in r for k in known) for r in reasons), sorted(set(reasons))
    assert sum("no date (Coverage.period)" in r for r in reasons) == 2
    # The three bundles the importer used to refuse are kept, each with its data-quality note.
    assert sorted(noted) == ["CMS144/NUMERPass-BetaBlockOrdDuringEncLVSDEF", "CMS22/DENEXCEPPass-2HTN140DeclinedAll",
                             "CMS22/NUMERPass-SecondReadingOver130"], noted
    assert all("different content" in n for k, v in noted.items() if k.startswith("CMS22") for n in v)
    assert all("not used" in n for n in noted["CMS144/NUMERPass-BetaBlockOrdDuringEncLVSDEF"])


def test_same_delivery_twice_adds_nothing(engine):
    recs = [record(NHS_A, fact("f1"), fact("f2")), record(NHS_B, fact("f1"))]
    first = ingest_records(engine, recs, source="gp-extract", content_hash="h1")
    before = counts(engine)
    second = ingest_records(engine, recs, source="gp-extract", content_hash="h1")
    after = counts(engine)
    assert (first.added, second.added, second.updated, second.unchanged) == (3, 0, 0, 3)
    assert second.affected == set()
    assert after == {**before, "ingest_batch": before["ingest_batch"] + 1}  # the delivery is logged, nothing duplicated
    assert after["fact"] == 3 and after["patient"] == 2


def test_changed_fact_is_updated_in_place(engine):
    ingest_records(engine, [record(NHS_A, fact("f1", value=50.0), fact("f2"))], source="s")
    with Session(engine) as s:
        row_before = s.exec(select(FactRow).where(FactRow.source_id == "f1")).one()
    summary = ingest_records(engine, [record(NHS_A, fact("f1", value=70.0, unit="mmol/mol"), fact("f2"))], source="s")
    assert (summary.added, summary.updated, summary.unchanged) == (0, 1, 1)
    assert summary.patients[NHS_A].model_dump() == {"nhs_number": NHS_A, "created": False, "demographics_changed": False,
                                                    "added": 0, "updated": 1, "unchanged": 1, "affected": True}
    assert summary.affected == {NHS_A}
    with Session(engine) as s:
        row = s.exec(select(FactRow).where(FactRow.source_id == "f1")).one()
    assert row.id == row_before.id and row.batch_id == summary.batch_id != row_before.batch_id
    assert (row.value, row.unit) == (70.0, "mmol/mol")


def test_one_patient_per_nhs_number_across_sources(engine):
    gp = record(NHS_A, fact("f1", source="gp", care_setting="gp"), practice="A81001", given_name="Ann")
    acute = record(NHS_A, fact("f1", source="acute-epr", care_setting="acute", value=9.0), family_name="Jones", sex="female")
    ingest_records(engine, [gp], source="gp")
    summary = ingest_records(engine, [acute], source="acute")
    assert summary.patients[NHS_A].demographics_changed and summary.added == 1
    assert counts(engine)["patient"] == 1
    rec = load(engine, NHS_A)
    assert {(f.source_system, f.id, f.care_setting.value, f.value) for f in rec.facts} == {("gp", "f1", "gp", None), ("acute-epr", "f1", "acute", 9.0)}
    # Empty values from one source never erase what another sent.
    assert (rec.patient.practice, rec.patient.given_name, rec.patient.family_name, rec.patient.sex.value) == ("A81001", "Ann", "Jones", "female")


def test_batch_row_records_the_delivery(engine):
    summary = ingest_records(engine, [record(NHS_A, fact("f1"), fact("f2")), record(NHS_B)], source="bundle",
                             content_hash="abc", unsupported={"Practitioner": 2}, skipped=["/entry/3 Condition/x: no date"])
    with Session(engine) as s:
        batch = s.get(IngestBatch, summary.batch_id)
    assert (batch.source, batch.content_hash, batch.patients, batch.facts_added) == ("bundle", "abc", 2, 2)
    assert batch.unsupported == {"Practitioner": 2} and batch.skipped == ["/entry/3 Condition/x: no date"]
    assert summary.affected == {NHS_A, NHS_B}


def test_ingest_with_a_session_commits(engine):
    with Session(engine) as s:
        ingest_records(s, [record(NHS_A, fact("f1"))], source="s")
    assert counts(engine)["fact"] == 1


# ---------------------------------------------------------------------------------------------
# Atomicity: a failure anywhere leaves the registry exactly as it was


def test_database_error_mid_delivery_rolls_back_everything(engine):
    original = record(NHS_A, fact("f1", value=1.0), source_ids={"gp": "P1"})
    ingest_records(engine, [original], source="first")
    before = counts(engine)
    # A fact that skipped model validation and breaks the DB's CHECK (end before start).
    broken = fact("bad").model_copy(update={"start": dt.datetime(2024, 1, 2), "end": dt.datetime(2024, 1, 1)})
    delivery = [
        record(NHS_A, fact("f1", value=2.0), fact("f2"), practice="B82005"),  # update + add on an existing patient
        record(NHS_B, fact("g1"), source_ids={"gp": "P2"}),  # a new patient
        PatientRecord.model_construct(patient=Patient(nhs_number=NHS_C, birth_date=dt.date(1970, 1, 1)), facts=[fact("ok"), broken]),
    ]
    with pytest.raises(IngestError) as info:
        ingest_records(engine, delivery, source="second")
    assert info.value.nhs_number == NHS_C and "ck_fact_period" in str(info.value)
    assert counts(engine) == before
    assert load(engine, NHS_A) == original and load(engine, NHS_B) is None


def test_identity_conflict_rolls_back_and_explains(engine):
    ingest_records(engine, [record(NHS_A, source_ids={"fhir": "pat-1"})], source="s")
    before = counts(engine)
    with pytest.raises(IngestError, match=f"fhir patient id 'pat-1' already belongs to NHS number {NHS_A}"):
        ingest_records(engine, [record(NHS_C, fact("x")), record(NHS_B, fact("y"), source_ids={"fhir": "pat-1"})], source="s")
    assert counts(engine) == before


def test_failed_delivery_can_be_resent_after_fixing(engine):
    bad = PatientRecord.model_construct(patient=Patient(nhs_number=NHS_A, birth_date=dt.date(1970, 1, 1)),
                                        facts=[fact("f").model_copy(update={"end": dt.datetime(2000, 1, 1)})])
    with pytest.raises(IngestError):
        ingest_records(engine, [bad], source="s")
    summary = ingest_records(engine, [record(NHS_A, fact("f"))], source="s")
    assert summary.added == 1 and counts(engine)["ingest_batch"] == 1


# ---------------------------------------------------------------------------------------------
# Reading back


def test_iter_records_filters_and_pages(engine):
    nhs = ["9434765919", "9434765870", "9000000009", "9990000018", "9990000026"]
    recs = [record(n, fact(f"f{i}"), mdt="MDT-1" if i % 2 == 0 else "MDT-2", practice="A81001" if i < 3 else "B82005")
            for i, n in enumerate(nhs)]
    ingest_records(engine, recs, source="s")
    with Session(engine) as s:
        everyone = list(iter_records(s, chunk=2))
        mdt1 = [r.patient.nhs_number for r in iter_records(s, mdt="MDT-1", chunk=2)]
        both = [r.patient.nhs_number for r in iter_records(s, mdt="MDT-1", practice="b82005")]
    assert [r.patient.nhs_number for r in everyone] == sorted(nhs)
    assert {r.patient.nhs_number: r for r in everyone} == {r.patient.nhs_number: r for r in recs}
    assert mdt1 == sorted([nhs[0], nhs[2], nhs[4]]) and both == [nhs[4]]


def test_ingest_fhir_bundle_rejects_malformed_input_before_writing(engine):
    with pytest.raises(BundleError):
        ingest_fhir_bundle(engine, {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "x"}]})
    assert counts(engine)["ingest_batch"] == 0
