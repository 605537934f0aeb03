"""The pool end to end: a real master subprocess against a real PostgreSQL."""

from __future__ import annotations

import os
import signal

import psycopg
from conftest import cli, enqueue, executions, job_rows, wait_until

import workerpool


def all_finished(sql, n: int) -> bool:
    rows = sql("SELECT count(*) FROM workerpool.jobs WHERE status IN ('succeeded', 'dead')")
    return rows[0][0] >= n


def test_500_jobs_on_2_children_each_run_exactly_once(env, sql, pool):
    ids = enqueue(env, "record", [{} for _ in range(500)])
    pool.start()
    wait_until(lambda: all_finished(sql, 500), 90, what="500 jobs finished")
    assert pool.stop() == 0
    rows = job_rows(sql)
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    runs = executions(sql)
    assert sorted(runs) == sorted(ids)
    assert all(len(r) == 1 for r in runs.values())
    assert len({pid for r in runs.values() for pid, _ in r}) == 2  # both children worked


def test_sigterm_mid_run_exits_0_and_leaves_nothing_running(env, sql, pool):
    enqueue(env, "record", [{"seconds": 0.2} for _ in range(40)])
    pool.start()
    wait_until(lambda: sql("SELECT count(*) FROM executions")[0][0] >= 4, 30, what="jobs running")
    assert pool.stop() == 0
    assert sql("SELECT count(*) FROM workerpool.jobs WHERE status = 'running'")[0][0] == 0
    runs = executions(sql)
    assert all(len(r) == 1 for r in runs.values())
    # Jobs given back unstarted keep their attempt count at zero.
    assert sql("SELECT count(*) FROM workerpool.jobs WHERE status = 'queued' AND attempts <> 0")[0][0] == 0
    assert pool.status() is None  # the status file is removed on a clean stop


def test_sigkill_of_a_child_mid_job_reruns_the_job_and_replaces_the_child(env, sql, pool):
    pool.start()
    before = pool.wait_children(2)
    [job] = enqueue(env, "record", [{"seconds": 30}])
    victim = wait_until(lambda: sql("SELECT pid FROM executions WHERE job_id = %s", (job,)), 30)[0][0]
    os.kill(victim, signal.SIGKILL)
    after = wait_until(lambda: (p := pool.wait_children(2)) and victim not in p and p, 30)
    assert set(before) - {victim} <= set(after)
    # The job comes back at once (attempt counted) and runs again in another child.
    wait_until(lambda: sql("SELECT count(*) FROM executions WHERE job_id = %s", (job,))[0][0] == 2, 30)
    status, attempts, last_error = sql(
        "SELECT status, attempts, last_error FROM workerpool.jobs WHERE id = %s", (job,)
    )[0]
    assert (status, attempts) == ("running", 2)
    assert "signal 9" in last_error
    pool.signal(signal.SIGQUIT)
    assert pool.wait(30) == 0
    assert job_rows(sql)[job]["status"] == "queued"  # an immediate stop gives the job back


def test_always_failing_task_goes_dead_after_max_attempts_with_traceback(env, sql, pool):
    [job] = enqueue(env, "always_fail", [{}])
    pool.start()
    wait_until(lambda: all_finished(sql, 1), 60)
    assert pool.stop() == 0
    row = job_rows(sql)[job]
    assert row["status"] == "dead"
    assert row["attempts"] == 3  # the task's own max_attempts
    assert "Traceback" in row["last_error"] and "this task always fails" in row["last_error"]


def test_transactional_enqueue_rolled_back_leaves_no_job(env, sql):
    os.environ["WORKERPOOL_DSN"] = env["WORKERPOOL_DSN"]
    try:
        with psycopg.connect(env["WORKERPOOL_DSN"]) as conn:
            with conn.transaction():
                kept = workerpool.enqueue("noop", {}, conn=conn)
            try:
                with conn.transaction():
                    workerpool.enqueue("noop", {}, conn=conn)
                    raise RuntimeError("the caller's work failed")
            except RuntimeError:
                pass
    finally:
        del os.environ["WORKERPOOL_DSN"]
    assert [r[0] for r in sql("SELECT id FROM workerpool.jobs")] == [kept]


def test_bad_configuration_exits_78_naming_every_bad_variable(env):
    bad = {
        **env,
        "WORKERPOOL_CHILDREN": "many",
        "WORKERPOOL_POLL_INTERVAL": "-1",
        "WORKERPOOL_LOG_LEVEL": "loud",
        "WORKERPOOL_SCHEMA": "Bad-Schema",
    }
    result = cli(bad, "run", timeout=10)
    assert result.returncode == 78
    err = result.stdout.decode()
    for name in ("WORKERPOOL_CHILDREN", "WORKERPOOL_POLL_INTERVAL", "WORKERPOOL_LOG_LEVEL", "WORKERPOOL_SCHEMA"):
        assert name in err
    assert "'many'" in err


def test_results_are_stored_as_json(env, sql, pool, tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"one\ntwo\nthree\n")
    [job] = enqueue(env, "file_digest", [{"path": str(path)}])
    pool.start()
    wait_until(lambda: all_finished(sql, 1), 30)
    assert pool.stop() == 0
    result = job_rows(sql)[job]["result"]
    import hashlib

    assert result == {
        "path": str(path),
        "bytes": 14,
        "lines": 3,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
