"""procrastinate: an asyncio worker per process, with in-process concurrency."""

from __future__ import annotations

import time

import procrastinate
import psycopg

from bench import recording
from bench.systems.base import Enqueuer, ProcessPerWorker, Run, expect_counts, python_worker

CONCURRENCY = 10
TASK = "noop"


def make_app(connector: procrastinate.BaseConnector) -> tuple[procrastinate.App, procrastinate.tasks.Task]:
    app = procrastinate.App(connector=connector)

    @app.task(name=TASK, pass_context=True)
    async def noop(context: procrastinate.JobContext) -> None:
        recording.stamp(context.job.id)

    return app, noop


class ProcrastinateEnqueuer(Enqueuer):
    def __init__(self, dsn: str) -> None:
        self.app, self.task = make_app(procrastinate.SyncPsycopgConnector(conninfo=dsn))
        self.app.open()

    def one(self) -> tuple[str, float]:
        job_id = self.task.defer()
        return str(job_id), time.time()

    def bulk(self, n: int) -> float:
        started = time.perf_counter()
        self.task.batch_defer(*({} for _ in range(n)))
        return time.perf_counter() - started

    def close(self) -> None:
        self.app.close()


class Procrastinate(ProcessPerWorker):
    name = "procrastinate"
    label = "procrastinate"
    packages = ("procrastinate", "psycopg")
    pending_sql = "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"

    def settings(self) -> str:
        return (
            f"one `run_worker_async(concurrency={CONCURRENCY})` process per worker (PsycopgConnector),"
            " async no-op task, listen_notify on (default), logging at the default WARNING;"
            " enqueue with the sync connector (`defer`, `batch_defer`)"
        )

    def install(self, dsn: str) -> None:
        app, _ = make_app(procrastinate.SyncPsycopgConnector(conninfo=dsn))
        with app.open():
            app.schema_manager.apply_schema()

    def enqueuer(self, dsn: str) -> Enqueuer:
        return ProcrastinateEnqueuer(dsn)

    def worker_argv(self, run: Run) -> list[str]:
        return python_worker("bench.runners.procrastinate", run)

    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        total, succeeded = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM procrastinate_jobs"
        ).fetchone()  # type: ignore[misc]
        once, more = conn.execute(
            "SELECT count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1) FROM"
            " (SELECT job_id, count(*) AS n FROM procrastinate_events WHERE type = 'started' GROUP BY job_id) s"
        ).fetchone()  # type: ignore[misc]
        return (
            expect_counts("jobs", total, expected)
            + expect_counts("jobs succeeded", succeeded, expected)
            + expect_counts("jobs started exactly once", once, expected)
            + expect_counts("jobs started more than once", more, 0)
        )
