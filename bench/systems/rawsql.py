"""The raw-SQL ceiling: the least a SKIP LOCKED queue must do, from Python, 50 jobs per claim.

One statement claims a batch, one records it; a trigger notifies on insert, like workerpool's.
No leases, no retries, no fencing: what is left is the cost of the protocol itself.
"""

from __future__ import annotations

import time

import psycopg

from bench.systems.base import Enqueuer, ProcessPerWorker, Run, expect_counts, python_worker

BATCH = 50
SCHEMA_SQL = """
CREATE SCHEMA bench_raw;
CREATE TABLE bench_raw.jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued',
    attempts int NOT NULL DEFAULT 0,
    payload jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX jobs_queued ON bench_raw.jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_running ON bench_raw.jobs (id) WHERE status = 'running';
CREATE FUNCTION bench_raw.notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_raw', ''); RETURN NULL; END $$;
CREATE TRIGGER jobs_notify AFTER INSERT ON bench_raw.jobs FOR EACH STATEMENT EXECUTE FUNCTION bench_raw.notify();
"""
CLAIM = (
    "UPDATE bench_raw.jobs SET status = 'running', attempts = attempts + 1"
    " WHERE id IN (SELECT id FROM bench_raw.jobs WHERE status = 'queued' ORDER BY id"
    " LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload"
)
COMPLETE = "UPDATE bench_raw.jobs SET status = 'done' WHERE id = ANY(%s)"


class RawEnqueuer(Enqueuer):
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def one(self) -> tuple[str, float]:
        row = self.conn.execute("INSERT INTO bench_raw.jobs DEFAULT VALUES RETURNING id").fetchone()
        assert row is not None
        return str(row[0]), time.time()

    def bulk(self, n: int) -> float:
        started = time.perf_counter()
        with self.conn.cursor().copy("COPY bench_raw.jobs (payload) FROM STDIN") as copy:
            for _ in range(n):
                copy.write_row(("{}",))
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


class RawSql(ProcessPerWorker):
    name = "raw"
    label = "raw SQL ceiling"
    packages = ("psycopg",)
    pending_sql = (
        "SELECT EXISTS (SELECT 1 FROM bench_raw.jobs WHERE status = 'queued')"
        " OR EXISTS (SELECT 1 FROM bench_raw.jobs WHERE status = 'running')"
    )

    def settings(self) -> str:
        return (
            f"one Python process per worker (psycopg 3, prepared statements): claim {BATCH} with"
            " `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`, call a no-op per job,"
            " record the batch with one `UPDATE ... WHERE id = ANY(...)`; LISTEN/NOTIFY when idle"
        )

    def install(self, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)

    def enqueuer(self, dsn: str) -> Enqueuer:
        return RawEnqueuer(dsn)

    def worker_argv(self, run: Run) -> list[str]:
        return python_worker("bench.runners.rawsql", run)

    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        total, once = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'done' AND attempts = 1) FROM bench_raw.jobs"
        ).fetchone()  # type: ignore[misc]
        return expect_counts("jobs", total, expected) + expect_counts("jobs done at attempt 1", once, expected)
