"""The per-patient durable-rules engine over many patients, in worker processes, with failures isolated.

    from engine.engines.durable.pool import run_records, run_facts
    result = run_records(records, protocols, as_of, workers=2)     # derive + rules, as fired_conditions does
    result = run_facts(((nhs, protocol_key, fact), ...), protocols)  # precomputed summary facts: rules only

durable-rules never releases the GIL, so parallel work means processes (design.md). Each worker is
a forked process that registers the protocols' rulesets once and then evaluates chunks of patients
sent over a pipe, one chunk at a time; a worker has at most one chunk, so whatever happens to it is
attributed to that chunk exactly.

Failure isolation:
- an exception while evaluating one patient for one protocol (deriving the summary fact, the rule
  engine, a fact durable-rules cannot take) is caught in the worker and reported as
  {nhs_number, protocol, error}; the chunk goes on with the next one;
- a worker process that dies (a segfault in the C engine outside its safe subset, the OOM killer,
  SIGKILL) or does not answer within `timeout` seconds (a hang; it is killed) does not stop the run:
  a fresh worker takes its place and the chunk is bisected — halves are run again (patients first,
  then protocols) until the single patient and protocol that kills a worker is isolated and reported
  with the reason (e.g. "worker process died (killed by signal SIGKILL)"); the others in the chunk
  are evaluated normally.

Workers also sample their own memory (VmRSS and RssAnon from /proc/self/status) every
`sample_every` evaluations: benchmarks/bench_durable.py uses that to show that memory stays
flat over a million evaluations.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator, Sequence

from engine.language.model import Protocol
from engine.records.model import PatientRecord

Hook = Callable[[str, str], None]  # (nhs_number, protocol key), called in the worker before each evaluation


@dataclass
class Chunk:
    """Work for one worker. kind:
    - 'records': items are PatientRecords, each evaluated for every protocol in `protocols`;
    - 'facts':   items are (nhs_number, summary fact dict), for the one protocol in `protocols`;
    - 'rows':    items are (nhs_number, expected, *values) with the fact's field names in `fields`
                 (a compact form for large runs); `expected` is the batch engine's fired conditions as
                 a '0'/'1' string over `conditions` (or None), compared with durable-rules when checking.
    """
    kind: str
    protocols: tuple[str, ...]
    items: list
    fields: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()

    @property
    def units(self) -> int:
        return len(self.items) * len(self.protocols)

    def nhs(self, item) -> str:
        return item.patient.nhs_number if self.kind == "records" else item[0]

    def split(self) -> list["Chunk"]:
        """Two halves (patients first, then protocols), or [] when it is one patient and one protocol."""
        if len(self.items) > 1:
            h = len(self.items) // 2
            return [Chunk(self.kind, self.protocols, self.items[:h], self.fields, self.conditions),
                    Chunk(self.kind, self.protocols, self.items[h:], self.fields, self.conditions)]
        if len(self.protocols) > 1:
            h = len(self.protocols) // 2
            return [Chunk(self.kind, self.protocols[:h], self.items, self.fields, self.conditions),
                    Chunk(self.kind, self.protocols[h:], self.items, self.fields, self.conditions)]
        return []


@dataclass
class RunResult:
    fired: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (nhs_number, protocol key) -> keys
    failures: list[dict] = field(default_factory=list)  # {nhs_number, protocol, error}
    evaluations: int = 0  # (patient, protocol) evaluations finished, failed ones included
    seconds: float = 0.0
    durable_seconds: float = 0.0  # time inside durable-rules, summed over workers
    reference_seconds: float = 0.0  # time in the plain-Python reference (check=True), summed over workers
    derive_seconds: float = 0.0  # time deriving summary facts from records, summed over workers
    reference_mismatches: int = 0  # durable-rules vs plain Python over the same fact (check=True)
    expected_mismatches: int = 0  # durable-rules vs the expected fired sets carried by 'rows' chunks
    mismatch_examples: list[dict] = field(default_factory=list)
    worker_deaths: list[dict] = field(default_factory=list)  # {pid, reason, units} per dead or killed worker
    samples: dict[int, list[tuple[int, float, float]]] = field(default_factory=dict)  # pid -> (evals, VmRSS MiB, RssAnon MiB)

    def summary(self) -> dict:
        return {"evaluations": self.evaluations, "failures": len(self.failures), "seconds": round(self.seconds, 3),
                "worker_deaths": len(self.worker_deaths), "reference_mismatches": self.reference_mismatches,
                "expected_mismatches": self.expected_mismatches}


# ---- in the worker ----------------------------------------------------------------------------------------
def memory_mib() -> tuple[float, float]:
    """(VmRSS, RssAnon) of this process in MiB, from /proc/self/status (0.0 where not available)."""
    rss = anon = 0.0
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) / 1024
    except OSError:
        pass
    return round(rss, 1), round(anon, 1)


class _Worker:
    def __init__(self, protocols: dict[str, Protocol], as_of: dt.date | None, period_start: dt.date | None,
                 hook: Hook | None, sample_every: int, check: bool, keep_fired: bool):
        from engine.engines.durable import rules as dr
        from engine.engines.derive import Context
        from engine.ir.lowering import lowered_for

        self.dr = dr
        self.protocols = protocols
        self.lowered = {k: lowered_for(p) for k, p in protocols.items()}
        self.needed = {k: frozenset(_fact_fields(lw)) for k, lw in self.lowered.items()}
        self.ctx = {k: Context.as_of(as_of, p.period, period_start) for k, p in protocols.items()} if as_of else {}
        self.broken: dict[str, str] = {}  # protocol key -> why its ruleset could not be created
        for k, p in protocols.items():  # once per process (names are process-global)
            try:
                dr.ensure_ruleset(p.ruleset_name, self.lowered[k])
            except Exception as e:  # every evaluation of this protocol fails with it; the others go on
                self.broken[k] = f"ruleset {p.ruleset_name} not created: {type(e).__name__}: {e}"
        self.hook, self.sample_every, self.check, self.keep_fired = hook, sample_every, check, keep_fired
        self.evaluations = 0
        self.samples: list[tuple[int, float, float]] = [(0, *memory_mib())]

    def run(self, chunk: Chunk) -> dict:
        from engine.engines.derive import Deriver
        from engine.ir.lowering import eval_lowered, summary_fact

        out: dict[str, Any] = {"fired": [], "failures": [], "evaluations": 0, "durable": 0.0, "reference": 0.0,
                               "derive": 0.0, "ref_mismatch": 0, "exp_mismatch": 0, "examples": []}
        clock = time.perf_counter
        for item in chunk.items:
            nhs = chunk.nhs(item)
            for key in chunk.protocols:
                proto, lowered = self.protocols[key], self.lowered[key]
                try:
                    if self.hook is not None:
                        self.hook(nhs, key)
                    if key in self.broken:
                        raise RuntimeError(self.broken[key])
                    expected = None
                    if chunk.kind == "records":
                        t0 = clock()
                        fact = summary_fact(lowered, Deriver(proto, item, self.ctx[key]))
                        out["derive"] += clock() - t0
                    elif chunk.kind == "facts":
                        fact = item[1]
                    else:
                        fact = dict(zip(chunk.fields, item[2:]))
                        expected = item[1]
                    if chunk.kind != "records":
                        missing = self.needed[key].difference(fact)
                        if missing:  # durable-rules would silently not match: an error, not a wrong answer
                            raise ValueError(f"summary fact lacks {len(missing)} field(s): {', '.join(sorted(missing)[:5])}")
                    t0 = clock()
                    fired = self.dr.run(proto.ruleset_name, fact, nhs)
                    t1 = clock()
                    out["durable"] += t1 - t0
                    if self.check:
                        ref = {k for k, t in lowered.conditions.items() if eval_lowered(t, fact)}
                        out["reference"] += clock() - t1
                        if ref != fired:
                            out["ref_mismatch"] += 1
                            if len(out["examples"]) < 5:
                                out["examples"].append({"nhs_number": nhs, "protocol": key, "against": "reference",
                                                        "durable_only": sorted(fired - ref), "reference_only": sorted(ref - fired)})
                    if expected is not None:
                        got = "".join("1" if k in fired else "0" for k in chunk.conditions)
                        if got != expected:
                            out["exp_mismatch"] += 1
                            if len(out["examples"]) < 5:
                                exp = {k for k, v in zip(chunk.conditions, expected) if v == "1"}
                                out["examples"].append({"nhs_number": nhs, "protocol": key, "against": "expected",
                                                        "durable_only": sorted(fired - exp), "expected_only": sorted(exp - fired)})
                    if self.keep_fired:
                        out["fired"].append((nhs, key, sorted(fired)))
                except Exception as e:  # one patient's failure never takes down the chunk
                    out["failures"].append({"nhs_number": nhs, "protocol": key, "error": f"{type(e).__name__}: {e}"})
                out["evaluations"] += 1
                self.evaluations += 1
                if self.sample_every and self.evaluations % self.sample_every == 0:
                    self.samples.append((self.evaluations, *memory_mib()))
        out["samples"], self.samples = self.samples, []
        return out


def _fact_fields(lowered) -> list[str]:
    names = []
    for name, spec in lowered.fields.items():
        if spec.kind == "scalar" and spec.nullable:
            names.append(name + "__p")
        names.append(name)
    return names


def _worker_main(conn, protocols, as_of, period_start, hook, sample_every, check, keep_fired) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    w = _Worker(protocols, as_of, period_start, hook, sample_every, check, keep_fired)
    conn.send({"ready": os.getpid()})
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            w.samples.append((w.evaluations, *memory_mib()))
            conn.send({"final": True, "samples": w.samples, "evaluations": w.evaluations})
            return
        conn.send(w.run(chunk))


# ---- in the parent ----------------------------------------------------------------------------------------
def _death_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "worker process did not exit"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"worker process died (killed by signal {name})"
    return f"worker process died (exit code {exitcode})"


class _Slot:
    def __init__(self, proc, conn):
        self.proc, self.conn = proc, conn
        self.chunk: Chunk | None = None
        self.started = 0.0


class DurablePool:
    """Worker processes running durable-rules; `run(chunks)` evaluates them with failures isolated.

    Start it before the parent grows (workers are forked; a forked worker's RSS starts at the
    parent's). `timeout` is per chunk; a worker over it is killed and the chunk bisected like a crash."""

    def __init__(self, protocols: Sequence[Protocol], as_of: dt.date | None = None, period_start: dt.date | None = None,
                 workers: int = 2, hook: Hook | None = None, sample_every: int = 0, check: bool = False,
                 keep_fired: bool = True, timeout: float | None = 300.0, max_deaths: int = 1000):
        self.protocols = {p.key: p for p in protocols}
        if len(self.protocols) != len(protocols):
            raise ValueError("two protocols with the same id@version")
        self.args = (self.protocols, as_of, period_start, hook, sample_every, check, keep_fired)
        self.ctx = get_context("fork")  # protocols and hooks are inherited, not pickled; start-up in milliseconds
        self.timeout, self.max_deaths = timeout, max_deaths
        self.result = RunResult()
        self.slots = [self._start() for _ in range(max(1, workers))]

    def _start(self) -> _Slot:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, args=(child, *self.args), daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _merge(self, slot: _Slot, res: dict) -> None:
        r = self.result
        if "ready" in res:
            return
        pid = slot.proc.pid
        r.samples.setdefault(pid, []).extend(res.get("samples", []))
        if res.get("final"):
            return
        for nhs, key, fired in res["fired"]:
            r.fired[(nhs, key)] = set(fired)
        r.failures.extend(res["failures"])
        r.evaluations += res["evaluations"]
        r.durable_seconds += res["durable"]
        r.reference_seconds += res["reference"]
        r.derive_seconds += res["derive"]
        r.reference_mismatches += res["ref_mismatch"]
        r.expected_mismatches += res["exp_mismatch"]
        r.mismatch_examples.extend(res["examples"][:max(0, 10 - len(r.mismatch_examples))])

    def _died(self, i: int, reason: str, pending: deque, started: bool = True) -> None:
        slot = self.slots[i]
        chunk = slot.chunk
        slot.chunk = None
        if slot.proc.is_alive():
            slot.proc.kill()  # a hang, or a pipe that broke under a live process
        slot.proc.join(5)
        slot.conn.close()
        self.result.worker_deaths.append({"pid": slot.proc.pid, "reason": reason, "units": chunk.units if chunk else 0})
        if len(self.result.worker_deaths) > self.max_deaths:
            raise RuntimeError(f"{len(self.result.worker_deaths)} worker processes died; giving up ({reason})")
        self.slots[i] = self._start()
        if chunk is None:
            return
        if not started:  # it never reached the worker: run it again as it is
            pending.appendleft(chunk)
            return
        halves = chunk.split()
        if halves:  # run the halves again (in front of new work) until the unit that kills a worker is alone
            pending.extendleft(reversed(halves))
            return
        for item in chunk.items:
            for key in chunk.protocols:
                self.result.failures.append({"nhs_number": chunk.nhs(item), "protocol": key, "error": reason})
                self.result.evaluations += 1

    def run(self, chunks: Iterable[Chunk]) -> RunResult:
        """Evaluate every chunk; returns the pool's RunResult (accumulated over calls)."""
        t0 = time.perf_counter()
        source: Iterator[Chunk] = iter(chunks)
        pending: deque[Chunk] = deque()
        exhausted = False
        while True:
            for i, slot in enumerate(self.slots):
                if slot.chunk is not None:
                    continue
                if pending:
                    chunk = pending.popleft()
                elif not exhausted:
                    chunk = next(source, None)
                    if chunk is None:
                        exhausted = True
                        continue
                else:
                    continue
                slot.chunk, slot.started = chunk, time.monotonic()
                try:
                    slot.conn.send(chunk)
                except (BrokenPipeError, OSError):
                    slot.proc.join(1)
                    self._died(i, _death_reason(slot.proc.exitcode), pending, started=False)
            busy = [i for i, s in enumerate(self.slots) if s.chunk is not None]
            if not busy:
                if exhausted and not pending:
                    break
                continue
            waits = [self.slots[i].conn for i in busy] + [self.slots[i].proc.sentinel for i in busy]
            wait(waits, timeout=1.0)
            for i in busy:
                slot = self.slots[i]
                try:
                    while slot.conn.poll():
                        res = slot.conn.recv()
                        self._merge(slot, res)
                        if "ready" not in res:
                            slot.chunk = None
                            break
                except (EOFError, OSError):
                    slot.proc.join(5)
                    self._died(i, _death_reason(slot.proc.exitcode), pending)
                    continue
                if slot.chunk is None:
                    continue
                if not slot.proc.is_alive():
                    if slot.conn.poll():  # it answered just before exiting
                        continue
                    self._died(i, _death_reason(slot.proc.exitcode), pending)
                elif self.timeout is not None and time.monotonic() - slot.started > self.timeout:
                    self._died(i, f"worker process killed after {self.timeout:g} s without an answer (hang)", pending)
        self.result.seconds += time.perf_counter() - t0
        return self.result

    def close(self) -> None:
        """Stop the workers (their last memory sample is kept)."""
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 10
        for slot in self.slots:
            try:
                while slot.conn.poll(max(0.0, deadline - time.monotonic())):
                    res = slot.conn.recv()
                    self._merge(slot, res)
                    if res.get("final"):
                        break
            except (EOFError, OSError):
                pass
            slot.proc.join(max(0.1, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join(5)
            slot.conn.close()
        self.slots = []


# ---- the two entry points --------------------------------------------------------------------------------
def _chunks_of(items: Iterable, size: int) -> Iterator[list]:
    buf: list = []
    for x in items:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def run_records(records: Iterable[PatientRecord], protocols: Sequence[Protocol], as_of: dt.date,
                period_start: dt.date | None = None, *, workers: int = 2, chunk_size: int = 100,
                check: bool = False, timeout: float | None = 300.0, hook: Hook | None = None) -> RunResult:
    """Every record × every protocol through derive + durable-rules (as evaluator.fired_conditions), in
    `workers` processes. result.fired[(nhs_number, protocol.key)] is the set fired_conditions returns;
    result.failures lists {nhs_number, protocol, error} for the evaluations that raised or killed a worker."""
    keys = tuple(p.key for p in protocols)
    with DurablePool(protocols, as_of, period_start, workers=workers, hook=hook, check=check, timeout=timeout) as pool:
        return pool.run(Chunk("records", keys, c) for c in _chunks_of(records, chunk_size))


def run_facts(facts: Iterable[tuple[str, str, dict]], protocols: Sequence[Protocol], *, workers: int = 2,
              chunk_size: int = 500, check: bool = False, timeout: float | None = 300.0,
              hook: Hook | None = None) -> RunResult:
    """Precomputed summary facts (nhs_number, protocol key, fact as lowering.summary_fact builds it, e.g.
    from the batch engine's output) through durable-rules only, in `workers` processes."""
    def chunks() -> Iterator[Chunk]:
        buf: dict[str, list] = {}
        for nhs, key, fact in facts:
            b = buf.setdefault(key, [])
            b.append((nhs, fact))
            if len(b) >= chunk_size:
                yield Chunk("facts", (key,), buf.pop(key))
        for key, b in buf.items():
            yield Chunk("facts", (key,), b)

    with DurablePool(protocols, workers=workers, hook=hook, check=check, timeout=timeout) as pool:
        return pool.run(chunks())
