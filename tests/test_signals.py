"""The master's signals and the pitfalls of forking masters (research §8)."""

from __future__ import annotations

import os
import random
import signal
import time

import psutil
from conftest import cli, enqueue, executions, job_rows, wait_until


def finished(sql, ids) -> bool:
    return all(r["status"] in ("succeeded", "dead") for r in job_rows(sql, ids).values())


def test_hup_replaces_every_child_without_losing_a_job(env, sql, pool):
    pool.start()
    old = set(pool.wait_children(2))
    ids = enqueue(env, "record", [{"seconds": 2}, {"seconds": 2}] + [{} for _ in range(20)])
    wait_until(lambda: len(executions(sql)) >= 2, 20)
    pool.signal(signal.SIGHUP)
    new = wait_until(lambda: (p := set(pool.wait_children(2))) and not p & old and p, 30)
    wait_until(lambda: finished(sql, ids), 60)
    rows = job_rows(sql, ids)
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert {r["attempts"] for r in rows.values()} == {1}
    assert all(len(r) == 1 for r in executions(sql).values())
    assert len(new) == 2
    assert pool.stop() == 0


def test_ttin_ttou_converge_and_stay_in_bounds(pool):
    pool.start(WORKERPOOL_CHILDREN="2")
    pool.wait_children(2)
    rng = random.Random(7)
    target = 2
    # Signals of one kind coalesce while pending, so each one waits for the master's answer.
    for _ in range(20):
        sig = rng.choice([signal.SIGTTIN, signal.SIGTTOU])
        target = target + 1 if sig == signal.SIGTTIN else max(target - 1, 1)
        pool.signal(sig)
        wait_until(lambda t=target: (d := pool.status()) and d["desired_children"] == t, 10)
    pool.wait_children(target, timeout=60)
    wait_until(lambda: len(pool.child_pids()) == target, 30, what=f"{target} child processes")
    for _ in range(target + 2):
        pool.signal(signal.SIGTTOU)
        wait_until(lambda t=target: (d := pool.status()) and d["desired_children"] in (1, t - 1), 10)
        target = max(target - 1, 1)
    pool.wait_children(1, timeout=60)
    assert pool.status()["desired_children"] == 1
    assert pool.stop() == 0


def test_a_flood_of_signals_is_handled_without_a_hang(env, sql, pool):
    pool.start()
    pool.wait_children(2)
    ids = enqueue(env, "record", [{} for _ in range(50)])
    rng = random.Random(3)
    for _ in range(100):
        pool.signal(rng.choice([signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1]))
    wait_until(lambda: finished(sql, ids), 60)
    assert pool.status() is not None
    assert all(len(r) == 1 for r in executions(sql).values())
    assert pool.stop() == 0


def test_children_killed_together_are_all_reaped_and_replaced(pool):
    pool.start(WORKERPOOL_CHILDREN="3")
    old = pool.wait_children(3)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    new = wait_until(lambda: (p := pool.wait_children(3)) and not set(p) & set(old) and p, 30)
    assert len(new) == 3
    wait_until(lambda: not [c for c in psutil.Process(pool.pid).children() if c.status() == psutil.STATUS_ZOMBIE], 5)
    assert pool.stop() == 0


def test_a_second_term_to_a_busy_child_does_not_interrupt_its_job(env, sql, pool):
    pool.start(WORKERPOOL_CHILDREN="1")
    pool.wait_children(1)
    [job] = enqueue(env, "record", [{"seconds": 3}])
    child = wait_until(lambda: executions(sql).get(job), 20)[0][0]
    os.kill(child, signal.SIGTERM)
    os.kill(child, signal.SIGTERM)
    pool.signal(signal.SIGTERM)
    pool.signal(signal.SIGTERM)
    assert pool.wait(30) == 0
    row = job_rows(sql, [job])[job]
    assert (row["status"], row["attempts"]) == ("succeeded", 1)


def test_a_task_module_that_fails_to_import_stops_the_pool_with_78(env):
    result = cli({**env, "WORKERPOOL_TASKS": "no_such_module_here"}, "run", timeout=60)
    assert result.returncode == 78
    assert b"no_such_module_here" in result.stdout


def test_the_master_is_single_threaded_and_holds_no_connection_while_forking(env, sql, pool):
    pool.start(WORKERPOOL_CHILDREN="2", WORKERPOOL_MAX_JOBS_PER_CHILD="3")
    ids = enqueue(env, "record", [{} for _ in range(30)])
    wait_until(lambda: finished(sql, ids), 60)
    assert psutil.Process(pool.pid).num_threads() == 1
    # Many forks happened (a recycle every 3 jobs) and every child's jobs were recorded once.
    assert wait_until(lambda: (d := pool.status()) and d["recycles"]["max_jobs"] >= 8, 10)
    assert all(len(r) == 1 for r in executions(sql).values())
    assert pool.stop() == 0


def test_children_exit_when_the_master_is_killed(pool):
    pool.start(WORKERPOOL_CHILDREN="3")
    children = pool.wait_children(3)
    pool.signal(signal.SIGKILL)
    pool.wait(10)
    wait_until(
        lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in children),
        5,
        what="orphaned children to exit",
    )


def test_signals_while_waiting_for_the_database_at_start_do_not_kill_the_master(env, pool):
    closed = env["WORKERPOOL_DSN"].replace(":5432/", ":1/")
    pool.start(WORKERPOOL_DSN=closed, WORKERPOOL_START_TIMEOUT="4")
    wait_until(lambda: psutil.Process(pool.pid).cmdline(), 10)  # the interpreter is up
    time.sleep(0.5)  # the CLI must be past its imports for this to test the startup wait
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU):
        pool.signal(sig)
    assert pool.wait(30) == 69  # it gave up on the database, as documented, not to a signal
