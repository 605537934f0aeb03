"""Database outages: waited out, never fatal, nothing dropped (on a private server)."""

from __future__ import annotations

import time

import psycopg
from conftest import cli, enqueue, executions, job_rows, wait_until


def rows_on(dsn: str, ids: list[int]) -> dict[int, dict]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return job_rows(lambda q, p=None: conn.execute(q, p).fetchall(), ids)


def runs_on(dsn: str) -> dict[int, list[tuple[int, int]]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return executions(lambda q, p=None: conn.execute(q, p).fetchall())


def test_c11_a_database_outage_is_waited_out_not_fatal(outage_env, private_pg, pool_factory):
    dsn = outage_env["WORKERPOOL_DSN"]
    ids = enqueue(outage_env, "record", [{"seconds": 1} for _ in range(10)])
    pool = pool_factory(outage_env).start()
    wait_until(lambda: sum(r["status"] == "succeeded" for r in rows_on(dsn, ids).values()) >= 3, 60)
    master = pool.pid
    private_pg.stop("fast")
    outage_started = time.monotonic()
    wait_until(lambda: (d := pool.status()) and not d["database"]["ok"], 30, what="the master to notice")
    while time.monotonic() - outage_started < 60:
        assert pool.proc.poll() is None  # nobody gives up
        time.sleep(1)
    private_pg.start()
    wait_until(lambda: all(r["status"] == "succeeded" for r in rows_on(dsn, ids).values()), 90)
    assert pool.pid == master and pool.proc.poll() is None
    runs = runs_on(dsn)
    twice = [job for job, r in runs.items() if len(r) > 1]
    assert len(twice) <= 2  # at most the jobs in flight (2 children) ran again
    warnings = [e for e in pool.logs() if e["level"] == "warning" and "database unavailable" in e["msg"]]
    assert 0 < len(warnings) < 30  # reconnects back off: well under one line a second
    wait_until(lambda: (d := pool.status()) and d["database"]["ok"], 30)
    assert pool.stop() == 0


def test_terminated_backends_are_reconnected(outage_env, pool_factory):
    """The family of C-11: a backend killed under a child or the master is reconnected."""
    dsn = outage_env["WORKERPOOL_DSN"]
    pool = pool_factory(outage_env).start()
    pool.wait_children(2)
    first = enqueue(outage_env, "record", [{} for _ in range(5)])
    wait_until(lambda: all(r["status"] == "succeeded" for r in rows_on(dsn, first).values()), 30)
    with psycopg.connect(dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'workerpool-%'"
        ).fetchone()[0]
    assert killed >= 2
    second = enqueue(outage_env, "record", [{} for _ in range(5)])
    wait_until(lambda: all(r["status"] == "succeeded" for r in rows_on(dsn, second).values()), 30)
    assert pool.stop() == 0


def test_an_unreachable_database_at_start_exits_69_after_a_bounded_wait(outage_env, private_pg):
    private_pg.stop("fast")
    started = time.monotonic()
    result = cli({**outage_env, "WORKERPOOL_START_TIMEOUT": "3"}, "run", timeout=30)
    assert result.returncode == 69
    assert 2 < time.monotonic() - started < 20
    assert b"database unreachable" in result.stdout
