"""The shared cases that need the whole service: supervisord, the pool and the health app."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from conftest import cli, enqueue, executions, job_rows, wait_until
from supervisor_harness import Supervisor, checkout_env, supervised

PASSWORD = "S3cretPW-test"


def test_c03_one_child_dying_never_takes_the_pool_down(supervisor, env, sql):
    sup = supervisor.start(WORKERPOOL_CHILDREN="3")
    master = sup.wait_running()
    wait_until(lambda: len(sup.health_when(200)[1]["children"]) == 3, 30, what="3 children in /health")
    ids = enqueue(env, "record", [{"seconds": 5} for _ in range(6)])
    running = wait_until(lambda: len(r := executions(sql)) == 3 and r, 30, what="3 jobs running")
    victim_job, [(victim, _)] = next(iter(running.items()))
    others = {runs[0][0] for runs in running.values()} - {victim}
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    new = wait_until(lambda: (c := sup.children(master)) and len(c) == 3 and victim not in c and c, 10)
    assert time.monotonic() - killed_at < 5 + 2  # "within 5 s", with room for a busy machine
    assert others <= new and sup.master_pid() == master
    _, body = sup.health_when(200)
    assert {c["pid"] for c in body["children"]} == new
    wait_until(lambda: all(r["status"] == "succeeded" for r in job_rows(sql, ids).values()), 60)
    assert job_rows(sql, [victim_job])[victim_job]["attempts"] == 2
    assert sup.master_pid() == master


def test_c03_a_master_that_gives_up_exits_non_zero_and_is_restarted(supervisor, env):
    # The database is unreachable for longer than the master waits at start: it gives up (69)
    # after startsecs, which supervisord treats as a crash to restart, not a stop.
    closed = env["WORKERPOOL_DSN"].replace(":5432/", ":1/")
    sup = supervisor.start(WORKERPOOL_DSN=closed, WORKERPOOL_START_TIMEOUT="6")
    wait_until(lambda: "exit status 69; not expected" in sup.supervisord_log(), 60, what="the master to give up")
    wait_until(lambda: sup.supervisord_log().count("spawned: 'workerpool'") >= 2, 30, what="a restart")


def test_c18_health_is_red_while_the_pool_cannot_start(env, db, tmp_path: Path):
    cases = {
        "broken task module": {"WORKERPOOL_TASKS": env["WORKERPOOL_TASKS"] + ",broken_tasks"},
        "closed port": {"WORKERPOOL_DSN": db.replace(":5432/", ":1/")},
    }
    for name, overrides in cases.items():
        with supervised(Supervisor(checkout_env(env, tmp_path / name.replace(" ", "-")))) as sup:
            sup.start(**overrides)
            started = time.monotonic()
            answers = []
            while time.monotonic() - started < 15:
                try:
                    answers.append(sup.health())
                except OSError:
                    pass  # gunicorn not listening yet
                time.sleep(0.25)
            assert answers, name
            assert all(code == 503 for code, _ in answers), name  # never 200
            assert all(body["master"]["alive"] is False for _, body in answers), name
            red_at = next(i for i, (code, _) in enumerate(answers) if code == 503)
            assert red_at * 0.25 < 10, name
    # The control run: a good configuration is green with 2 children idle or busy.
    with supervised(Supervisor(checkout_env(env, tmp_path / "good"))) as sup:
        sup.start()
        _, body = sup.health_when(200)
        assert len(body["children"]) == 2 and {c["state"] for c in body["children"]} <= {"idle", "busy"}


def test_c19_dead_children_are_never_shown_as_idle(env, pool_factory, health):
    first = pool_factory().start()
    first.wait_children(2)
    app = health.start()
    app.health_when(lambda a: a.status == 200, what="/health 200")
    first.kill_all()
    killed_at = time.monotonic()
    body = app.health_when(lambda a: a.status == 503, 10, "/health 503")
    assert time.monotonic() - killed_at < 3 + 1
    assert not [c for c in body["children"] if c["state"] == "idle" and not c.get("stale")]
    second = pool_factory().start()
    new = set(second.wait_children(2))
    body = app.health_when(lambda a: a.status == 200, 30, "/health 200 after the restart")
    assert {c["pid"] for c in body["children"]} == new


def test_c22_the_database_password_never_leaks(env, private_pg, tmp_path: Path):
    dsn = private_pg.create_database("wp_secret").replace("postgres@", f"postgres:{PASSWORD}@")
    outputs: list[bytes] = []
    migrated = cli({**env, "WORKERPOOL_DSN": dsn}, "migrate")
    assert migrated.returncode == 0
    outputs.append(migrated.stdout + migrated.stderr)
    # A malformed port, and a server that is down: clear errors, no password.
    for args, bad_dsn, code in (
        (["run"], dsn.replace(f":{private_pg.port}/", ":54x2/"), 78),
        (["jobs"], dsn.replace(f":{private_pg.port}/", ":1/"), 69),
    ):
        result = cli({**env, "WORKERPOOL_DSN": bad_dsn}, *args)
        assert result.returncode == code
        outputs.append(result.stdout + result.stderr)
    private_pg.stop("fast")
    with supervised(Supervisor(checkout_env({**env, "WORKERPOOL_DSN": dsn}, tmp_path))) as sup:
        sup.start()  # with the database down
        bodies = [sup.health_when(503)]
        wait_until(lambda: "database unreachable" in (sup.log_dir / "workerpool.log").read_text(), 40)
        private_pg.start()
        assert sup.ctl("start", "workerpool").returncode in (0, 1)  # 1: already running again
        bodies.append(sup.health_when(200))
        private_pg.stop("fast")  # 20 s outage while running
        outage = time.monotonic()
        while time.monotonic() - outage < 20:
            bodies.append(sup.health())
            time.sleep(1)
        private_pg.start()
        bodies.append(sup.health_when(200))
        assert any(code == 503 and not body["database"]["ok"] for code, body in bodies)
        for _, body in bodies:
            outputs.append(str(body).encode())
        sup.shutdown()
        for log in sup.log_dir.iterdir():
            outputs.append(log.read_bytes())
        assert b"***" in (sup.log_dir / "workerpool.log").read_bytes()
    for output in outputs:
        assert PASSWORD.encode() not in output
