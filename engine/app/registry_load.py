"""A synthetic population in the SQL registry, for the service benchmarks (P2, P3 of issue 8).

    build_registry(750000)  ->  {"url": "sqlite:///.../benchmarks/.data/registry-750000-...db", "mdt": ..., ...}

Two steps, both resumable and both reused when the same registry was built before:

1. `bulk_load`: the generator's patients (engine.synthetic.generate) stored exactly as
   `ingest_records` stores them (same columns, content hashes and JSON: both call
   ingest.fact_values / ingest._demographics and the columns' own SQLAlchemy bind processors), but
   without one ORM round trip per patient: worker processes (fork) generate blocks of people and
   turn them into DBAPI parameter rows, the main process inserts them with `executemany` on the
   raw connection, one transaction per block group. One IngestBatch row for the whole load. Meant
   for a registry that holds none of these patients yet (a clash fails on the unique keys).
2. `populate_outputs`: one MDT's patients evaluated with the real evaluator (all protocols and
   agreements in force on the as-of date) in worker processes, their tasks, flags and evaluations
   stored by engine.app.service.store_evaluation (what `reevaluate` does) in the main process,
   in batched transactions. Patients of the MDT without a stored evaluation are the ones done, so
   an interrupted run carries on where it stopped.

SQLite by default, in a file under benchmarks/.data/ keyed like the Parquet populations
(patients, seed, as-of date, generator version); any database URL (PostgreSQL) with `database_url`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import Engine, func, text
from sqlmodel import Session, select

from engine.registry.dialect import is_postgresql
from engine.registry.db import make_engine, upgrade
from engine.registry.ingest import _demographics, fact_values, load_record
from engine.registry.tables import FactRow, IngestBatch, PatientRow, PatientSourceId, utcnow

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / ".data"  # generated registries, beside the Parquet populations

AS_OF = dt.date(2026, 11, 20)  # every protocol under protocols/ is in force
BLOCK = 1000  # people per worker job (a block's rows are pickled back to the main process)
COMMIT_EVERY = 25  # blocks per transaction
EVAL_CHUNK = 50  # patients per evaluation job

_JOB: dict = {}  # set before the worker pool forks; read by the workers


def generator_version() -> str:
    import engine.synthetic.generate as gen_module

    return hashlib.sha1(Path(gen_module.__file__).read_bytes()).hexdigest()[:8]  # data follows the generator code


FORMAT = 2  # what a built registry holds; 2: stored evaluations keep their inputs digests (selective re-evaluation)


def registry_key(patients: int, seed: int, as_of: dt.date) -> str:
    return f"registry-{patients}-s{seed}-{as_of.isoformat()}-g{generator_version()}-r{FORMAT}"


# ---- 1. bulk load --------------------------------------------------------------------------------------
def _columns(table, skip=("id",)) -> list:
    return [c for c in table.columns if c.name not in skip]


def _processors(dialect, cols) -> list:
    return [c.type._cached_bind_processor(dialect) for c in cols]


def _row(values: dict, cols, procs) -> tuple:
    out = []
    for c, proc in zip(cols, procs):
        v = values.get(c.name)
        out.append(proc(v) if proc is not None and v is not None else v)
    return tuple(out)


def _insert_sql(dialect, table, cols) -> str:
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in cols)
    return f"INSERT INTO {table.name} ({names}) VALUES ({', '.join([mark] * len(cols))})"


def _block(bounds: tuple[int, int]) -> tuple[int, list, list, list]:
    """Parameter rows for people lo..hi-1 (patient ids base+pid+1): patients, source ids, facts."""
    from engine.synthetic.generate import generate

    lo, hi = bounds
    j = _JOB
    cols, procs = j["cols"], j["procs"]
    patients, links, facts = [], [], []
    more = {"outcomes": j["outcomes"]} if j.get("outcomes") is not None else {}  # the hazard model, when asked for
    for pid, record in enumerate(generate(hi - lo, seed=j["seed"], as_of=j["as_of"], start=lo, **more), start=lo):
        p, patient_id = record.patient, j["base"] + pid + 1
        patients.append(_row(dict(id=patient_id, nhs_number=p.nhs_number, **_demographics(p), created_at=j["now"],
                                  updated_at=j["now"]), cols["patient"], procs["patient"]))
        for system, sid in p.source_ids.items():
            links.append(_row(dict(patient_id=patient_id, source_system=system, source_id=sid), cols["link"], procs["link"]))
        for f in record.facts:
            facts.append(_row(dict(fact_values(f), patient_id=patient_id, source_system=f.source_system, source_id=f.id,
                                   ingested_at=j["now"], batch_id=j["batch"]), cols["fact"], procs["fact"]))
    return len(facts), patients, links, facts


def bulk_load(engine: Engine, patients: int, *, seed: int = 1, as_of: dt.date = AS_OF, start: int = 0,
              workers: int = 2, source: str | None = None, content_hash: str | None = None,
              now: dt.datetime | None = None, log=lambda m: None, outcomes=None) -> dict:
    """Store people start..start+patients-1 of the generated population as one ingest batch
    (see the module docstring). The schema must be migrated (engine.registry.db.upgrade).
    `outcomes`: an engine.synthetic.outcomes.OutcomeModel for the generator (hospital care from the
    hazard model; with record=False only the outcome events and registers)."""
    from multiprocessing import get_context

    dialect = engine.dialect
    now = now or utcnow()
    with Session(engine) as s:
        batch = IngestBatch(source=source or f"synthetic population {patients} s{seed} {as_of}", content_hash=content_hash,
                            received_at=now)
        s.add(batch)
        s.commit()
        batch_id = batch.id
        base = s.exec(select(func.coalesce(func.max(PatientRow.id), 0))).one()
    cols = {"patient": _columns(PatientRow.__table__, skip=()), "link": _columns(PatientSourceId.__table__),
            "fact": _columns(FactRow.__table__)}
    tables = {"patient": PatientRow.__table__, "link": PatientSourceId.__table__, "fact": FactRow.__table__}
    _JOB.clear()
    _JOB.update(cols=cols, procs={k: _processors(dialect, c) for k, c in cols.items()}, seed=seed, as_of=as_of,
                base=base, now=now, batch=batch_id, outcomes=outcomes)
    sql = {k: _insert_sql(dialect, tables[k], cols[k]) for k in cols}
    blocks = [(lo, min(start + patients, lo + BLOCK)) for lo in range(start, start + patients, BLOCK)]

    engine.dispose()  # no pooled connection crosses the fork
    t0 = time.perf_counter()
    n_facts = done = 0
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if dialect.name == "sqlite":
            cur.execute("PRAGMA synchronous=OFF")  # a benchmark registry: rebuilt if the machine dies mid-load
        pool = get_context("fork").Pool(workers) if workers > 1 and len(blocks) > 1 else None
        results = pool.imap(_block, blocks) if pool else map(_block, blocks)
        try:
            for k, (nf, prows, lrows, frows) in enumerate(results, start=1):
                cur.executemany(sql["patient"], prows)
                if lrows:
                    cur.executemany(sql["link"], lrows)
                cur.executemany(sql["fact"], frows)
                n_facts += nf
                done += len(prows)
                if k % COMMIT_EVERY == 0 or k == len(blocks):
                    raw.commit()
                    log(f"registry: {done}/{patients} patients, {n_facts} facts, {time.perf_counter() - t0:.0f} s")
        except BaseException:
            if pool:  # close() + join() would first let the workers generate every remaining block
                pool.terminate()
            raise
        finally:
            if pool:
                pool.close()
                pool.join()
        if is_postgresql(engine):  # explicit patient ids: move the sequence past them
            cur.execute("SELECT setval(pg_get_serial_sequence('patient', 'id'), (SELECT max(id) FROM patient))")
            cur.execute("ANALYZE")
        elif dialect.name == "sqlite":
            cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
    seconds = time.perf_counter() - t0
    with Session(engine) as s:
        batch = s.get(IngestBatch, batch_id)
        batch.patients, batch.facts_added = patients, n_facts
        s.add(batch)
        s.commit()
    return {"batch_id": batch_id, "patients": patients, "facts": n_facts, "seconds": round(seconds, 2),
            "patients_per_second": round(patients / seconds) if seconds else None}


# ---- 2. stored outputs for one MDT ---------------------------------------------------------------------
def largest_mdt(engine: Engine) -> str:
    with Session(engine) as s:
        row = s.exec(select(PatientRow.mdt, func.count()).where(PatientRow.mdt.is_not(None)).group_by(PatientRow.mdt)
                     .order_by(func.count().desc(), PatientRow.mdt)).first()
    if row is None:
        raise ValueError("the registry has no patients with an MDT")
    return row[0]


def _evaluate_chunk(nhs_numbers: list[str]) -> list:
    from engine.evaluation.evaluator import Options, evaluate
    from engine.app.service import evaluation_inputs

    j = _JOB
    if "engine" not in j:
        j["engine"] = make_engine(j["url"])  # one per worker process, made after the fork
    out = []
    with Session(j["engine"]) as s:
        for nhs in nhs_numbers:
            record = load_record(s, nhs)
            out.append((nhs, evaluate(record, j["protocols"], j["agreements"], as_of=j["as_of"],
                                      options=Options(raised_at=j["now"])),
                        evaluation_inputs(record, j["protocols"], j["agreements"], j["as_of"])))
    return out


def populate_outputs(engine: Engine, mdt: str, *, library=None, as_of: dt.date = AS_OF, now: dt.datetime | None = None,
                     workers: int = 2, limit: int | None = None, log=lambda m: None) -> dict:
    """Evaluate the MDT's patients that have no stored evaluation yet and store their outputs (with
    `limit`, until that many of the MDT's patients have them, in NHS-number order)."""
    from multiprocessing import get_context

    from engine.app.service import store_evaluation
    from engine.language.library import load_library
    from engine.registry.outputs import PatientEvaluationRow

    library = library or load_library([ROOT / "protocols"])
    now = now or dt.datetime.combine(as_of, dt.time(9))
    with Session(engine) as s:
        done_ids = select(PatientEvaluationRow.patient_id).distinct()
        todo = list(s.exec(select(PatientRow.nhs_number, PatientRow.id).where(PatientRow.mdt == mdt, PatientRow.id.not_in(done_ids))
                           .order_by(PatientRow.nhs_number)))
        if limit is not None:
            have = s.exec(select(func.count(func.distinct(PatientEvaluationRow.patient_id))).join(
                PatientRow, PatientRow.id == PatientEvaluationRow.patient_id).where(PatientRow.mdt == mdt)).one()
            todo = todo[:max(0, limit - have)]
    ids = dict(todo)
    chunks = [[n for n, _ in todo[i:i + EVAL_CHUNK]] for i in range(0, len(todo), EVAL_CHUNK)]
    _JOB.clear()
    _JOB.update(url=engine.url.render_as_string(hide_password=False), protocols=library.in_force(as_of),
                agreements=library.agreements_in_force(as_of), as_of=as_of, now=now)
    engine.dispose()
    t0 = time.perf_counter()
    n = tasks = flags = 0
    pool = get_context("fork").Pool(workers) if workers > 1 and len(chunks) > 1 else None
    results = pool.imap(_evaluate_chunk, chunks) if pool else map(_evaluate_chunk, chunks)
    try:
        session = Session(engine)
        for k, chunk in enumerate(results, start=1):
            for nhs, evaluation, inputs in chunk:
                diff = store_evaluation(session, ids[nhs], nhs, evaluation, now, inputs=inputs)
                tasks += len(diff.tasks_opened)
                flags += len(diff.flags_raised)
            n += len(chunk)
            if k % 20 == 0 or k == len(chunks):
                session.commit()
                log(f"outputs for {mdt}: {n}/{len(todo)} patients, {time.perf_counter() - t0:.0f} s")
        session.commit()
        session.close()
        if n:
            with engine.begin() as c:  # planner statistics for the new tasks, flags and evaluations
                c.exec_driver_sql("ANALYZE")
    finally:
        if pool:
            pool.close()
            pool.join()
    seconds = time.perf_counter() - t0
    return {"mdt": mdt, "patients_evaluated": n, "tasks_opened": tasks, "flags_raised": flags, "seconds": round(seconds, 2)}


# The worklist target is about a 50,000-patient MDT; a generated MDT of a 750,000 population has ~83,000
# (evaluating them all would take ~55 CPU-minutes more and change nothing the target asks).
OUTPUTS_LIMIT = 50_000


# ---- both, cached --------------------------------------------------------------------------------------
def build_registry(patients: int, *, seed: int = 1, as_of: dt.date = AS_OF, mdt: str | None = None, outputs: bool = True,
                   database_url: str | None = None, workers: int = 2, outputs_limit: int | None = OUTPUTS_LIMIT,
                   log=lambda m: None) -> dict:
    """A registry holding the generated population (and, with `outputs`, the stored outputs of one
    MDT: `mdt`, or the largest). Without `database_url`, a SQLite file under benchmarks/.data/ that
    later runs reuse; with one (e.g. PostgreSQL), that database, loaded unless it already holds
    this population's batch. Returns the URL and what was built (seconds are null when reused)."""

    key = registry_key(patients, seed, as_of)
    out: dict = {"key": key, "patients": patients, "seed": seed, "as_of": as_of.isoformat()}
    if database_url is None:
        DATA.mkdir(parents=True, exist_ok=True)
        path = DATA / f"{key}.db"
        url = f"sqlite:///{path}"
        out["path"] = str(path)
    else:
        url, path = database_url, None
    partial = path is not None and not path.exists()  # a SQLite file is built under another name, renamed when loaded
    engine = make_engine(f"sqlite:///{path}.partial" if partial else url)
    try:
        upgrade(engine)
        with Session(engine) as s:
            loaded = s.exec(select(IngestBatch).where(IngestBatch.content_hash == key)).first()
            loaded = loaded is not None and loaded.patients == patients
        if loaded:
            out["load"] = None
            log(f"reusing the registry {key} in {engine.url.render_as_string(hide_password=True)}")
        else:
            with Session(engine) as s:
                if s.exec(select(func.count()).select_from(PatientRow)).one():
                    raise SystemExit(f"{engine.url.render_as_string(hide_password=True)} already holds patients "
                                     "(an unfinished load?): start from an empty database")
            if engine.dialect.name == "sqlite":
                with engine.connect() as c:  # WAL persists in the file: readers do not wait for writers
                    c.exec_driver_sql("PRAGMA journal_mode=WAL")
            log(f"loading {patients} patients into {engine.url.render_as_string(hide_password=True)} ...")
            out["load"] = bulk_load(engine, patients, seed=seed, as_of=as_of, workers=workers, content_hash=key,
                                    source=f"synthetic population ({key})", log=log)
        if partial:
            engine.dispose()
            os.replace(f"{path}.partial", path)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}.partial{suffix}").unlink(missing_ok=True)
            engine = make_engine(url)
        with Session(engine) as s:
            out["facts"] = s.exec(select(func.count()).select_from(FactRow)).one()
        if outputs:
            mdt = mdt or largest_mdt(engine)
            out["outputs"] = populate_outputs(engine, mdt, as_of=as_of, workers=workers, limit=outputs_limit, log=log)
            out["mdt"] = mdt
        out["url"] = url
        return out
    finally:
        engine.dispose()


def registry_counts(engine: Engine, mdt: str) -> dict:
    """Patients, tasks and open tasks of one MDT (for benchmark reports)."""
    with engine.connect() as c:
        q = lambda sql: c.execute(text(sql), {"mdt": mdt}).scalar_one()  # noqa: E731
        return {"mdt_patients": q("SELECT count(*) FROM patient WHERE mdt = :mdt"),
                "mdt_patients_evaluated": q("SELECT count(DISTINCT e.patient_id) FROM patient_evaluation e "
                                            "JOIN patient ON patient.id = e.patient_id WHERE patient.mdt = :mdt"),
                "mdt_tasks": q("SELECT count(*) FROM task JOIN patient ON patient.id = task.patient_id WHERE patient.mdt = :mdt"),
                "mdt_open_tasks": q("SELECT count(*) FROM task JOIN patient ON patient.id = task.patient_id "
                                    "WHERE patient.mdt = :mdt AND task.status IN ('open', 'accepted')")}
