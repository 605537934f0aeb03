"""The shipped supervisord.conf under a real supervisord: what operators do with supervisorctl.

Each test runs its own supervisord on the repository's supervisord.conf, with every location
pointing into tmp_path, and drives it with supervisorctl as an operator would. Every process
it starts carries a marker in its environment, so the teardown can prove that nothing of
the test (supervisord, master, child, gunicorn) outlives `supervisorctl shutdown`.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any

import psutil
from conftest import _group_members, enqueue, executions, job_rows, wait_until
from supervisor_harness import HEALTH, MASTER, Supervisor, read_conf


def alive(pids: set[int]) -> set[int]:
    return {p.pid for p in psutil.process_iter(["status"]) if p.pid in pids and p.info["status"] != "zombie"}


def succeeded(sql: Any, ids: list[int]) -> bool:
    return all(row["status"] == "succeeded" for row in job_rows(sql, ids).values())


def running(sql: Any, n: int) -> bool:
    return sql("SELECT count(*) FROM workerpool.jobs WHERE status = 'running'")[0][0] == n


def test_status_stop_start_restart_hup_and_sigkill_lose_no_job(supervisor: Supervisor, env, sql) -> None:
    # A short lease: the jobs of the SIGKILLed master come back within seconds.
    sup = supervisor.start(WORKERPOOL_LEASE_SECONDS="4")
    master = sup.wait_running()
    status = sup.status()
    assert re.fullmatch(r"pid \d+, uptime \d+:\d\d:\d\d", status[MASTER][1])
    assert re.fullmatch(r"pid \d+, uptime \d+:\d\d:\d\d", status[HEALTH][1])
    wait_until(lambda: sup.health()[0] == 200, 30, 0.25, "/health 200")

    # stop drains: the running jobs finish, once, and nothing of the pool is left.
    first = enqueue(env, "record", [{"seconds": 3}, {"seconds": 3}])
    wait_until(lambda: len(executions(sql)) == 2, 30, what="both jobs running")
    result = sup.ctl("stop", "workerpool")
    assert result.returncode == 0, result.stdout
    assert sup.state(MASTER) == "STOPPED"
    assert {r["status"] for r in job_rows(sql, first).values()} == {"succeeded"}
    assert not _group_members(master)

    # start resumes, with the jobs enqueued meanwhile.
    waiting = enqueue(env, "record", [{} for _ in range(4)])
    assert sup.ctl("start", "workerpool").returncode == 0
    wait_until(lambda: succeeded(sql, waiting), 30, what="jobs enqueued while stopped")
    restarted_from = sup.wait_running()

    assert sup.ctl("restart", "workerpool").returncode == 0
    master = sup.wait_running()
    assert master != restarted_from

    # HUP replaces every child; the jobs they were running still finish exactly once.
    before = wait_until(lambda: len(c := sup.children(master)) == 2 and c, 30, what="2 children")
    rolled = enqueue(env, "record", [{"seconds": 0.3} for _ in range(20)])
    wait_until(lambda: len(executions(sql)) >= len(first) + len(waiting) + 4, 30, what="some jobs ran")
    assert sup.ctl("signal", "HUP", "workerpool").returncode == 0
    wait_until(lambda: succeeded(sql, rolled), 60, what="all jobs after HUP")
    wait_until(lambda: len(sup.children(master) - before) == 2, 30, what="2 new children")
    assert sup.children(master).isdisjoint(before)
    assert sup.master_pid() == master
    runs = executions(sql)
    assert all(len(runs[i]) == 1 for i in first + waiting + rolled)

    # A SIGKILLed master takes its children along (PR_SET_PDEATHSIG) and supervisord starts a
    # new one, which rescues the jobs they held once their leases expire.
    held = enqueue(env, "record", [{"seconds": 3}, {"seconds": 3}])
    wait_until(lambda: all(i in executions(sql) for i in held), 30, what="both jobs running")
    orphans = sup.children(master)
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: not alive(orphans), 10, what="the old children to die")
    wait_until(lambda: sup.state(MASTER) == "RUNNING" and sup.master_pid() != master, 60, what="a new master")
    wait_until(lambda: succeeded(sql, held), 60, what="the orphaned jobs rescued and done")
    assert {r["attempts"] for r in job_rows(sql, held).values()} == {2}
    runs = executions(sql)
    for i in held:
        (first_pid, _), (second_pid, _) = runs[i]
        assert first_pid in orphans and second_pid not in orphans


def test_job_longer_than_the_grace_is_requeued_on_stop_and_runs_after_start(supervisor: Supervisor, env, sql) -> None:
    """Shared case C-07, on the pool's side of the nesting (the files: test_systemd.py)."""
    sup = supervisor.start(WORKERPOOL_SHUTDOWN_TIMEOUT="2")
    sup.wait_running()
    [job] = enqueue(env, "sleep", [{"seconds": 6}])
    wait_until(lambda: running(sql, 1), 30, what="the job running")
    assert sup.ctl("stop", "workerpool").returncode == 0
    assert sup.state(MASTER) == "STOPPED"
    row = job_rows(sql, [job])[job]
    assert (row["status"], row["attempts"]) == ("queued", 0)
    assert "interrupted by shutdown" in row["last_error"]
    assert sup.ctl("start", "workerpool").returncode == 0
    wait_until(lambda: succeeded(sql, [job]), 30, what="the job after the restart")
    assert job_rows(sql, [job])[job]["attempts"] == 1


def test_stopasgroup_lets_both_children_finish_their_jobs(supervisor: Supervisor, env, sql) -> None:
    """Shared case C-08: children get TERM from supervisord and from the master; jobs still finish."""
    assert read_conf().getboolean("program:workerpool", "stopasgroup")
    ids = enqueue(env, "sleep", [{"seconds": 8}, {"seconds": 8}])
    sup = supervisor.start()  # the env fixture's 2 children
    wait_until(lambda: running(sql, 2), 30, what="both jobs running")
    master = sup.wait_running()
    # The jobs began within a few seconds of the spawn, RUNNING comes 5 s after it: they are mid-run.
    assert running(sql, 2)
    result = sup.ctl("stop", "workerpool")
    assert result.returncode == 0, result.stdout
    rows = job_rows(sql, ids)
    assert [(r["status"], r["attempts"]) for r in rows.values()] == [("succeeded", 1)] * 2
    assert [line for line in sup.pool_log() if line["level"] in ("error", "critical")] == []
    assert sup.state(MASTER) == "STOPPED"
    assert not _group_members(master)


def test_unparsable_children_ends_fatal_not_in_a_restart_loop(supervisor: Supervisor) -> None:
    """Shared case C-15 under supervisord: exit 78 within startsecs, so FATAL after startretries."""
    sup = supervisor.start(WORKERPOOL_CHILDREN="abc")
    sup.wait_state(MASTER, "FATAL")
    assert "FATAL" in sup.ctl("status").stdout
    log = sup.supervisord_log()
    assert "gave up: workerpool entered FATAL state" in log
    retries = read_conf().getint("program:workerpool", "startretries")
    assert log.count("spawned: 'workerpool'") == retries + 1
    assert log.count("exited: workerpool (exit status 78; not expected)") == retries + 1
    pool_log = (sup.log_dir / "workerpool.log").read_text()
    assert "WORKERPOOL_CHILDREN='abc'" in pool_log
    assert "child started" not in pool_log
    # The health app keeps running, to report the pool down.
    sup.wait_state(HEALTH, "RUNNING")
    status, body = sup.health()
    assert status == 503 and body["master"]["alive"] is False
