"""PgQueuer: a QueueManager per process on asyncpg, batch size 10 (its fast settings)."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import psycopg
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
from pgqueuer.adapters.persistence.queries import Queries, SyncQueries

from bench.systems.base import Enqueuer, ProcessPerWorker, Run, expect_counts, python_worker

BATCH_SIZE = 10
ENTRYPOINT = "noop"


class PgqueuerEnqueuer(Enqueuer):
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.queries = SyncQueries(SyncPsycopgDriver(self.conn))

    def one(self) -> tuple[str, float]:
        (job_id,) = self.queries.enqueue(ENTRYPOINT, None)
        return str(job_id), time.time()

    def bulk(self, n: int) -> float:
        started = time.perf_counter()
        self.queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


async def _install(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await Queries(AsyncpgDriver(conn)).install()
    finally:
        await conn.close()


class Pgqueuer(ProcessPerWorker):
    name = "pgqueuer"
    label = "PgQueuer"
    packages = ("pgqueuer", "asyncpg")
    # A finished job leaves the queue table (for the log table).
    pending_sql = "SELECT EXISTS (SELECT 1 FROM pgqueuer)"

    def settings(self) -> str:
        return (
            f"one `QueueManager.run(batch_size={BATCH_SIZE})` process per worker on an asyncpg connection,"
            " async no-op entrypoint, default durability and buffers, logging at the default WARNING;"
            " enqueue with `SyncQueries.enqueue` (lists for bulk)"
        )

    def install(self, dsn: str) -> None:
        asyncio.run(_install(dsn))

    def enqueuer(self, dsn: str) -> Enqueuer:
        return PgqueuerEnqueuer(dsn)

    def worker_argv(self, run: Run) -> list[str]:
        return python_worker("bench.runners.pgqueuer", run)

    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        (left,) = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()  # type: ignore[misc]
        picked_once, successful_once, repeated = conn.execute(
            "SELECT count(*) FILTER (WHERE picked = 1), count(*) FILTER (WHERE successful = 1),"
            " count(*) FILTER (WHERE picked > 1 OR successful > 1) FROM ("
            "  SELECT job_id, count(*) FILTER (WHERE status = 'picked') AS picked,"
            "  count(*) FILTER (WHERE status = 'successful') AS successful"
            "  FROM pgqueuer_log GROUP BY job_id) s"
        ).fetchone()  # type: ignore[misc]
        return (
            expect_counts("jobs left in the queue", left, 0)
            + expect_counts("jobs picked exactly once", picked_once, expected)
            + expect_counts("jobs logged successful exactly once", successful_once, expected)
            + expect_counts("jobs picked or finished more than once", repeated, 0)
        )
