"""workerpool itself: `workerpool run` as a subprocess, enqueued through its Python API and CLI."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

import workerpool
from bench import procs, recording
from bench.systems.base import Enqueuer, Run, System, Workers, expect_counts
from workerpool.migrations import migrate

SCHEMA = "workerpool"
BIN = Path(sys.executable).parent
# Per-job lines are info: warning keeps the child's per-job path free of log formatting.
LOG_LEVEL = "warning"


def pool_env(dsn: str, runtime_dir: Path, **extra: str) -> dict[str, str]:
    return procs.python_env(
        WORKERPOOL_DSN=dsn,
        WORKERPOOL_SCHEMA=SCHEMA,
        WORKERPOOL_TASKS="workerpool.examples,bench.tasks",
        WORKERPOOL_LOG_LEVEL=LOG_LEVEL,
        WORKERPOOL_RUNTIME_DIR=str(runtime_dir),
        **extra,
    )


class WorkerpoolEnqueuer(Enqueuer):
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def one(self) -> tuple[str, float]:
        job_id = workerpool.enqueue("stamp", {}, conn=self.conn)
        return str(job_id), time.time()

    def bulk(self, n: int) -> float:
        started = time.perf_counter()
        with self.conn.transaction():
            workerpool.enqueue_many([("noop", {})] * n, conn=self.conn)
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


class Workerpool(System):
    name = "workerpool"
    label = "workerpool"
    packages = ("workerpool", "psycopg", "psycopg-binary")
    pending_sql = (
        "SELECT EXISTS (SELECT 1 FROM workerpool.jobs WHERE status = 'queued')"
        " OR EXISTS (SELECT 1 FROM workerpool.jobs WHERE status = 'running')"
    )

    def settings(self) -> str:
        return (
            f"`workerpool run`, WORKERPOOL_CHILDREN = workers, defaults otherwise (WORKERPOOL_BATCH_SIZE 500,"
            f" poll 1 s), WORKERPOOL_LOG_LEVEL={LOG_LEVEL}; drain task `workerpool.examples.noop`,"
            " latency task `bench.tasks.stamp`"
        )

    def install(self, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, SCHEMA)

    def enqueuer(self, dsn: str) -> Enqueuer:
        return WorkerpoolEnqueuer(dsn)

    def start(self, run: Run) -> Workers:
        extra = {"WORKERPOOL_CHILDREN": str(run.workers)}
        if run.stamp:
            extra[recording.STAMP_DIR_ENV] = str(run.record_dir)
        env = pool_env(run.dsn, run.record_dir / "runtime", **extra)
        master = procs.spawn([str(BIN / "workerpool"), "run"], env, run.log_dir / "workerpool.log")
        return Workers([master], master.pid)

    def ready(self, conn: psycopg.Connection, run: Run, workers: Workers) -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'workerpool-child-%%'"
        ).fetchone()
        if not row or row[0] < run.workers:
            return False
        assert workers.master is not None
        workers.child_pids = [c.pid for c in psutil.Process(workers.master).children()]
        return len(workers.child_pids) >= run.workers

    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        total, once = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded' AND attempts = 1) FROM workerpool.jobs"
        ).fetchone()  # type: ignore[misc]
        return expect_counts("jobs", total, expected) + expect_counts("jobs succeeded at attempt 1", once, expected)


def cli_enqueue(dsn: str, n: int, log_dir: Path) -> float:
    """Seconds `workerpool enqueue noop --payload-file` takes for n jobs, start-up included."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", dir=log_dir) as payloads:
        payloads.write(b"{}\n" * n)
        payloads.flush()
        env = pool_env(dsn, log_dir / "runtime-cli")
        started = time.perf_counter()
        subprocess.run(
            [str(BIN / "workerpool"), "enqueue", "noop", "--payload-file", payloads.name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=True,
            timeout=600,
        )
        return time.perf_counter() - started
