"""Drain throughput, pickup latency with idle memory, and bulk enqueue: one system, one fresh database each."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg

from bench import pg, procs
from bench.phases.session import running, work_dir
from bench.systems.base import System, expect_counts
from bench.systems.workerpool import Workerpool, cli_enqueue

WARM_UP_PER_WORKER = 10
LATENCY_WARM_UP = 5  # first jobs of a latency run, not counted
IDLE_SETTLE = 0.5  # seconds idle before memory is read


@dataclass
class Outcome:
    values: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def drain(system: System, workers: int, jobs: int) -> Outcome:
    """Jobs/s from the commit of `jobs` queued at once (idle, warmed workers) until none is left."""
    out = Outcome()
    with running(system, workers, stamp=False, warm_up=WARM_UP_PER_WORKER * workers) as session:
        seconds = session.bulk(jobs)
        committed = time.time()
        workers_cpu, db_cpu = session.cpu()
        finished = session.drain(timeout=max(120.0, jobs / 50))
        workers_cpu_end, db_cpu_end = session.cpu()
        out.values[f"drain_{workers}"] = jobs / (finished - committed)
        out.values["drain_enqueue"] = jobs / seconds
        # Where the time goes: a 2-core box shares its CPUs between the workers and PostgreSQL.
        out.values[f"cpu_workers_{workers}"] = procs.cpu_spent(workers_cpu, workers_cpu_end) / jobs * 1e6
        out.values[f"cpu_db_{workers}"] = procs.cpu_spent(db_cpu, db_cpu_end) / jobs * 1e6
    out.problems += session.problems
    return out


def latency(system: System, workers: int, samples: int, spacing: float) -> Outcome:
    """Enqueue commit → task start, one job every `spacing` s on an idle pool; then idle USS."""
    out = Outcome()
    with running(system, workers, stamp=True, warm_up=WARM_UP_PER_WORKER * workers) as session:
        committed: dict[str, float] = {}
        start = time.monotonic()
        for i in range(LATENCY_WARM_UP + samples):
            delay = start + i * spacing - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            job_id, at = session.one()
            if i >= LATENCY_WARM_UP:
                committed[job_id] = at
        session.drain(timeout=60)
        time.sleep(IDLE_SETTLE)
        out.samples["uss_child"] = [procs.uss(pid) / procs.MIB for pid in session.workers.child_pids]
        if session.workers.master is not None:
            out.values["uss_master"] = procs.uss(session.workers.master) / procs.MIB
    out.problems += session.problems
    stamps = session.records.stamps
    missing = [job_id for job_id in committed if job_id not in stamps]
    if missing:
        out.problems.append(f"{len(missing)} latency job(s) left no start stamp, e.g. {missing[:3]}")
    out.problems += [f"job {job_id} started {len(s)} times" for job_id, s in stamps.items() if len(s) > 1][:5]
    out.samples["latency"] = [(stamps[j][0] - at) * 1000 for j, at in committed.items() if j in stamps]
    return out


def enqueue(system: System, jobs: int) -> Outcome:
    """Jobs/s of one bulk enqueue through the API (and for workerpool, its CLI) into an empty table."""
    out = Outcome()
    with pg.scratch_database(f"{system.name}enq") as dsn:
        system.install(dsn)
        enqueuer = system.enqueuer(dsn)
        try:
            out.values["enqueue_api"] = jobs / enqueuer.bulk(jobs)
        finally:
            enqueuer.close()
    if isinstance(system, Workerpool):
        with pg.scratch_database("workerpoolcli") as dsn, work_dir("cli") as directory:
            system.install(dsn)
            out.values["enqueue_cli"] = jobs / cli_enqueue(dsn, jobs, directory)
            with psycopg.connect(dsn) as conn:
                (count,) = conn.execute("SELECT count(*) FROM workerpool.jobs").fetchone()  # type: ignore[misc]
            out.problems += expect_counts("jobs enqueued by the CLI", count, jobs)
    return out
