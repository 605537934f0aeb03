"""The failure cases from ../shared/cases: each one, and the family it stands for."""

from __future__ import annotations

import os
import signal
import time

import orjson
import psycopg
import pytest
from conftest import cli, enqueue, executions, job_rows, wait_until

import workerpool


def finished(sql, ids) -> bool:
    return all(r["status"] in ("succeeded", "dead", "cancelled") for r in job_rows(sql, ids).values())


def test_c01_a_killed_pools_job_is_reclaimed_and_blocks_nothing(env, sql, pool_factory):
    lease = {"WORKERPOOL_LEASE_SECONDS": "4"}
    first = pool_factory().start(**lease)
    [job1] = enqueue(env, "record", [{"seconds": 10}])
    old_pid = wait_until(lambda: sql("SELECT pid FROM executions WHERE job_id = %s", (job1,)), 30)[0][0]
    lease_until = sql("SELECT lease_until FROM workerpool.jobs WHERE id = %s", (job1,))[0][0]
    first.kill_all()
    start = time.monotonic()
    second = pool_factory().start(**lease)
    short = enqueue(env, "record", [{"seconds": 0.1} for _ in range(4)])
    wait_until(lambda: finished(sql, [job1, *short]), 20, what="all 5 jobs succeeded")
    assert time.monotonic() - start < 20 + 5
    rows = job_rows(sql, [job1, *short])
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert rows[job1]["attempts"] == 2
    runs = executions(sql)
    assert len(runs[job1]) == 2 and runs[job1][1][0] != old_pid
    short_started = sql("SELECT max(started_at) FROM executions WHERE job_id = ANY(%s)", (short,))[0][0]
    assert short_started < lease_until  # the short jobs never waited for job 1's lease
    assert sql("SELECT count(*) FROM workerpool.jobs WHERE status = 'running'")[0][0] == 0
    assert second.stop() == 0


def test_c02_a_job_that_kills_its_child_obeys_max_attempts(env, sql, pool):
    [job1] = enqueue(env, "suicide", [{}], max_attempts=3)
    others = enqueue(env, "record", [{} for _ in range(5)])
    pool.start(WORKERPOOL_RETRY_BACKOFF="1")
    wait_until(lambda: finished(sql, [job1, *others]), 60)
    rows = job_rows(sql, [job1, *others])
    assert rows[job1]["status"] == "dead" and rows[job1]["attempts"] == 3
    assert "signal 9" in rows[job1]["last_error"]
    assert all(rows[i]["status"] == "succeeded" for i in others)
    deaths = [e for e in pool.logs() if e["msg"].startswith("child was killed") and e.get("job_id") == job1]
    assert len(deaths) == 3
    times = [time.mktime(time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")) + float(e["time"][19:23]) for e in deaths]
    assert times[1] - times[0] >= 0.4 and times[2] - times[1] >= 0.9  # retries follow the backoff (1 s, 2 s ±50%)
    # Afterwards the pool is quiet: no more crashes, no child being replaced.
    doc = wait_until(lambda: (d := pool.status()) and d["crash_restarts"] == 3 and d, 10)
    pids = set(pool.wait_children(2, timeout=20))
    quiet_until = time.monotonic() + 3
    while time.monotonic() < quiet_until:
        doc = pool.status() or doc
        assert doc["crash_restarts"] == 3 and {c["pid"] for c in doc["children"]} == pids
        time.sleep(0.2)
    assert pool.stop() == 0


@pytest.mark.parametrize("task", ["record", "spin"])
def test_c04_a_long_or_cpu_bound_job_keeps_its_lease(env, sql, pool_factory, task):
    payload = {"seconds": 12}
    [job] = enqueue(env, task, [payload])
    pools = [pool_factory().start(WORKERPOOL_LEASE_SECONDS="4", WORKERPOOL_CHILDREN="1") for _ in range(2)]
    wait_until(lambda: finished(sql, [job]), 40)
    row = job_rows(sql, [job])[job]
    assert row["status"] == "succeeded" and row["attempts"] == 1
    if task == "record":
        assert len(executions(sql)[job]) == 1
    assert not any("rescued" in e["msg"] for p in pools for e in p.logs())
    for p in pools:
        assert p.stop() == 0


def test_c04_a_lease_too_short_to_renew_fails_at_start(env):
    result = cli({**env, "WORKERPOOL_LEASE_SECONDS": "1"}, "run", timeout=10)
    assert result.returncode == 78
    assert b"WORKERPOOL_LEASE_SECONDS" in result.stdout


def test_c06_a_draining_job_is_not_stolen_by_another_pool(env, sql, pool_factory):
    settings = {"WORKERPOOL_LEASE_SECONDS": "4", "WORKERPOOL_CHILDREN": "1"}
    a = pool_factory(name="a").start(**settings)
    a.wait_children(1)
    [job1] = enqueue(env, "record", [{"seconds": 20}])
    wait_until(lambda: executions(sql).get(job1), 20)
    b = pool_factory(name="b").start(**settings)
    b.wait_children(1)
    time.sleep(3)  # the case: SIGTERM arrives 3 s into the job
    a.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    later = enqueue(env, "record", [{} for _ in range(3)])
    assert a.wait(40) == 0
    drained = time.monotonic() - stopped_at
    assert 12 < drained < 30  # it waited for the job (about 17 s), not for the 30 s timeout
    wait_until(lambda: finished(sql, [job1, *later]), 20)
    runs = executions(sql)
    assert len(runs[job1]) == 1
    assert job_rows(sql, [job1])[job1] | {"result": None, "last_error": None} == {
        "status": "succeeded",
        "attempts": 1,
        "result": None,
        "last_error": None,
    }
    a_pids = {e["child_pid"] for e in a.logs() if e["msg"] == "child started"}
    assert all(runs[i][0][0] not in a_pids for i in later)  # A claimed nothing after TERM
    assert b.stop() == 0


BAD_CHILDREN = ["abc", "", "0", "-1", "2.5", "99999"]


@pytest.mark.parametrize("value", BAD_CHILDREN)
def test_c15_unparsable_children_fail_fast(env, value):
    started = time.monotonic()
    result = cli({**env, "WORKERPOOL_CHILDREN": value}, "run", timeout=10)
    assert result.returncode == 78
    assert time.monotonic() - started < 2 + 3  # 2 s, plus the interpreter's start on a busy box
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["level"] == "critical"
    assert "WORKERPOOL_CHILDREN" in lines[0]["msg"] and repr(value) in lines[0]["msg"]
    assert "child started" not in result.stdout.decode()


@pytest.mark.parametrize("value", ["3", " 3 "])
def test_c15_good_children_start(pool, value):
    pool.start(WORKERPOOL_CHILDREN=value)
    assert len(pool.wait_children(3)) == 3
    assert pool.stop() == 0


def test_c16_bad_jobs_fail_cleanly_good_ones_run(env, sql, pool):
    # Straight into the table, as a producer that does not know the tasks (another service,
    # another language) would: `enqueue` itself refuses the last two when the task is known.
    bad = [
        sql("INSERT INTO workerpool.jobs (task, payload) VALUES (%s, %s::jsonb) RETURNING id", (task, payload))[0][0]
        for task, payload in (("no_such_task", "{}"), ("sleep", "{}"), ("record", '"just a string"'))
    ]
    good = enqueue(env, "record", [{} for _ in range(5)])
    pool.start()
    before = set(pool.wait_children(2))
    wait_until(lambda: finished(sql, bad + good), 30)
    rows = job_rows(sql, bad + good)
    for job_id in bad:
        assert rows[job_id]["status"] == "dead" and rows[job_id]["attempts"] == 1
    assert "unknown task 'no_such_task'" in rows[bad[0]]["last_error"]
    assert "missing a required argument: 'seconds'" in rows[bad[1]]["last_error"]
    assert "must be a JSON object" in rows[bad[2]]["last_error"]
    assert all(rows[i]["status"] == "succeeded" for i in good)
    assert set(pool.wait_children(2)) == before  # no child was replaced
    assert pool.stop() == 0


def test_a_misbehaving_task_gets_a_clear_outcome_and_the_pool_carries_on(env, sql, pool):
    """The family behind C-16: whatever a task raises or returns, its job ends clearly."""
    cases = {
        "give_up": ("nothing to retry here", 1),
        "unserializable": ("not JSON-serializable", 1),
        "bad_exception": ("_Unprintable", 2),
    }
    ids = {name: enqueue(env, name, [{}], max_attempts=2)[0] for name in cases}
    good = enqueue(env, "record", [{} for _ in range(5)])
    pool.start()
    before = set(pool.wait_children(2))
    wait_until(lambda: finished(sql, [*ids.values(), *good]), 60)
    rows = job_rows(sql, [*ids.values(), *good])
    for name, (needle, attempts) in cases.items():
        row = rows[ids[name]]
        assert (row["status"], row["attempts"]) == ("dead", attempts), name
        assert needle in row["last_error"], (name, row["last_error"])
    assert all(rows[i]["status"] == "succeeded" for i in good)
    assert set(pool.wait_children(2)) == before
    assert pool.stop() == 0


def test_a_task_that_kills_its_child_gets_a_clear_outcome_and_the_pool_carries_on(env, sql, pool):
    cases = {"hard_exit": "exited with code", "segfault": "signal 11", "suicide": "signal 9"}
    ids = {name: enqueue(env, name, [{}], max_attempts=2)[0] for name in cases}
    # Exit code 3 is also what a child that cannot import its tasks uses: mid-job it is a crash.
    ids["exit 3"] = enqueue(env, "hard_exit", [{"code": 3}], max_attempts=2)[0]
    cases["exit 3"] = "exited with code 3"
    good = enqueue(env, "record", [{} for _ in range(20)])
    pool.start()
    wait_until(lambda: finished(sql, [*ids.values(), *good]), 60)
    rows = job_rows(sql, [*ids.values(), *good])
    for name, needle in cases.items():
        row = rows[ids[name]]
        assert (row["status"], row["attempts"]) == ("dead", 2), name
        assert needle in row["last_error"], (name, row["last_error"])
    # A job that ran twice was interrupted by a crash, and its attempts say so.
    runs = executions(sql)
    for job_id in good:
        assert rows[job_id]["status"] == "succeeded"
        assert len(runs[job_id]) == rows[job_id]["attempts"]
    pool.wait_children(2)
    assert pool.stop() == 0


def test_c19_dead_children_are_never_shown_as_alive(env, pool_factory):
    from workerpool import status

    first = pool_factory().start()
    first.wait_children(2)
    first.kill_all()
    path = first.status_path
    assert not status.master_alive(status.read(str(path)))
    second = pool_factory().start()
    new = set(second.wait_children(2))
    doc = second.status()
    assert {c["pid"] for c in doc["children"]} == new
    assert second.stop() == 0


def test_c22_the_password_never_leaks_from_cli_or_pool(env, db, pool, tmp_path):
    secret = "S3cretPW-test"
    with_password = db.replace("postgres@", f"postgres:{secret}@")
    outputs = []
    # A server that is down (nothing listens on port 1): exit 69, DSN shown redacted.
    down = with_password.replace(":5432/", ":1/")
    result = cli({**env, "WORKERPOOL_DSN": down, "WORKERPOOL_START_TIMEOUT": "1"}, "run", timeout=20)
    assert result.returncode == 69
    outputs.append(result.stdout + result.stderr)
    assert b"***" in result.stdout
    result = cli({**env, "WORKERPOOL_DSN": down}, "jobs", timeout=20)
    assert result.returncode == 69
    outputs.append(result.stdout + result.stderr)
    # A malformed port: exit 78, DSN redacted.
    result = cli({**env, "WORKERPOOL_DSN": with_password.replace(":5432/", ":54x2/")}, "run", timeout=20)
    assert result.returncode == 78
    outputs.append(result.stdout + result.stderr)
    # A working pool with the password in its DSN.
    pool.env = {**env, "WORKERPOOL_DSN": with_password}
    pool.start()
    pool.wait_children(2)
    enqueue(env, "record", [{}])
    assert pool.stop() == 0
    outputs.append(pool.log_path.read_bytes())
    assert b"***" in outputs[-1]
    for out in outputs:
        assert secret.encode() not in out
    assert (
        secret not in (tmp_path / "run" / "status.json").read_text()
        if (tmp_path / "run" / "status.json").exists()
        else True
    )
    os.environ.pop("WORKERPOOL_DSN", None)


def test_c01_family_a_job_a_vanished_pool_never_started_is_not_buried(env, sql, pool_factory):
    """Attempts are counted at claim for a batch: a lost pool's unstarted last-attempt job still runs."""
    settings = {"WORKERPOOL_LEASE_SECONDS": "3", "WORKERPOOL_CHILDREN": "1"}
    first = pool_factory().start(**settings)
    warm = enqueue(env, "record", [{} for _ in range(50)])  # short jobs: the claims grow into batches
    wait_until(lambda: finished(sql, warm), 30)
    with psycopg.connect(env["WORKERPOOL_DSN"]) as conn:  # one commit: one claim takes both
        long_job, last_try = workerpool.enqueue_many(
            [{"name": "record", "payload": {"seconds": 30}}, {"name": "record", "payload": {}, "max_attempts": 1}],
            conn=conn,
        )
    wait_until(lambda: executions(sql).get(long_job), 30)
    assert job_rows(sql, [last_try])[last_try]["status"] == "running"  # held, behind the long job
    first.kill_all()
    second = pool_factory().start(**{**settings, "WORKERPOOL_CHILDREN": "2"})  # one for each rescued job
    wait_until(lambda: job_rows(sql, [last_try])[last_try]["status"] == "succeeded", 30)
    assert len(executions(sql)[last_try]) == 1
    second.signal(signal.SIGQUIT)  # the long job need not finish
    assert second.wait(30) == 0
