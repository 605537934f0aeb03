"""The health app end to end: a real gunicorn beside a real pool, against a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from conftest import BIN, ROOT, Pool, enqueue, wait_until
from health_harness import Answer, HealthApp, Samples

from health_app.probe import DatabaseState
from health_app.report import assess

PASSWORD = "S3cretPW-test"
PATHS = ("/health", "/health/live", "/health/ready", "/metrics")
# Far above a cached answer's few milliseconds, far below the 2 s a connect attempt can take.
QUICK = 1.0


def is_ok(answer: Answer) -> bool:
    return answer.status == 200


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def running(pool: Pool, health: HealthApp, **overrides: str) -> HealthApp:
    """A started pool with both children ready, and the health app beside it answering 200."""
    pool.start()
    pool.wait_children(2)
    app = health.start(**overrides)
    app.health_when(is_ok, what="/health 200")
    return app


# -- against real processes -------------------------------------------------------------


def test_healthy_pool_lists_every_child(pool, health):
    pool.start()
    pids = pool.wait_children(2)
    app = health.start()
    body = app.health_when(lambda a: is_ok(a) and len(a.json()["children"]) == 2, what="/health 200")
    assert body["status"] == "ok" and body["reasons"] == []
    assert body["master"]["pid"] == pool.pid and body["master"]["alive"] is True
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert sorted(c["pid"] for c in body["children"]) == sorted(pids)
    for child in body["children"]:
        assert child["state"] in ("idle", "busy")
        assert child["memory_bytes"] > 0 and child["memory_measure"] in ("uss", "rss")
        assert child["last_heartbeat"] and not child["stale"]
    assert set(body["recycles"]) == {"memory", "hard_memory", "max_jobs", "max_age", "timeout", "crash"}
    assert app.get("/health/ready").status == 200
    assert app.get("/health/live").status == 200


@pytest.mark.parametrize("victims", ["master", "master and children"])
def test_killed_pool_is_down_within_5_s(pool, health, victims):
    app = running(pool, health)
    if victims == "master":
        # Left unreaped on purpose: a zombie master must count as dead as well.
        os.kill(pool.pid, signal.SIGKILL)
    else:
        pool.kill_all()
    body = app.health_when(lambda a: a.status == 503, 5, what="/health 503 after SIGKILL")
    assert body["status"] == "down"
    if victims == "master":  # told apart at once, not only when its snapshot goes stale
        assert f"master: pid {pool.pid} has exited" in body["reasons"]
    assert body["master"]["alive"] is False
    assert body["children"] == []  # a dead master's children are never shown, least of all as idle
    assert app.get("/health/ready").status == 503
    samples = app.metrics()
    assert sample(samples, "workerpool_up") == 0
    assert sample(samples, "workerpool_health_check_failures_total") >= 1


def test_unreachable_database_fails_fast_and_hides_the_password(health):
    app = health.start(WORKERPOOL_DSN=f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/nowhere")
    answer = app.get("/health")
    assert answer.status == 503 and answer.seconds < QUICK
    body = answer.json()
    assert body["database"]["ok"] is False and body["database"]["error"]
    assert app.get("/health/ready").status == 503
    assert app.get("/health/live").status == 200  # it needs no database
    assert sample(app.metrics(), "workerpool_database_up") == 0
    assert all(PASSWORD.encode() not in app.get(path).body for path in PATHS)
    wait_until(lambda: "database check failed" in app.log_text(), 10, what="the failure logged")
    assert PASSWORD not in app.log_text()


def test_silent_database_never_holds_a_request(health):
    # The kernel completes the handshake for a listening socket nobody accepts from,
    # so the connection attempt gets no answer at all: a black hole.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen()
        app = health.start(WORKERPOOL_DSN=f"postgresql://postgres@127.0.0.1:{hole.getsockname()[1]}/x")
        answers: list[Answer] = []

        def reports_no_answer() -> bool:
            answers.append(app.get("/health"))
            return "no answer" in (answers[-1].json()["database"]["error"] or "")

        wait_until(reports_no_answer, 15, what="the database check to report no answer")
    assert all(a.status == 503 and not a.json()["database"]["ok"] for a in answers)
    assert max(a.seconds for a in answers) < QUICK


def test_a_queue_too_slow_to_count_is_not_a_dead_database(env, health):
    # The lock stands in for a backlog too large to count within statement_timeout.
    with psycopg.connect(env["WORKERPOOL_DSN"]) as locker:
        locker.execute("LOCK TABLE workerpool.jobs IN ACCESS EXCLUSIVE MODE")
        app = health.start()
        body = app.health_when(lambda a: any(r.startswith("queue:") for r in a.json()["reasons"]), 15)
    assert body["database"]["ok"] is True
    assert not any(r.startswith("database:") for r in body["reasons"])


def test_password_in_the_dsn_never_shows(env, pool, health):
    # The test server trusts local connections, so it ignores the password.
    dsn = env["WORKERPOOL_DSN"].replace("postgres@", f"postgres:{PASSWORD}@")
    assert PASSWORD in dsn
    app = running(pool, health, WORKERPOOL_DSN=dsn)
    assert all(PASSWORD.encode() not in app.get(path).body for path in PATHS)
    assert PASSWORD not in app.log_text()


def test_metrics_parse_and_count_finished_jobs(env, pool, health):
    app = running(pool, health)
    enqueue(env, "noop", [{}] * 10)
    finished = ("workerpool_jobs_finished_total", frozenset({("task", "noop"), ("outcome", "succeeded")}))
    samples = wait_until(lambda: (s := app.metrics()).get(finished) == 10 and s, 30, what="10 noop jobs counted")
    assert sample(samples, "workerpool_job_duration_seconds_count", task="noop") == 10
    assert sample(samples, "workerpool_job_duration_seconds_bucket", task="noop", le="+Inf") == 10
    assert sample(samples, "workerpool_up") == 1
    assert sample(samples, "workerpool_database_up") == 1
    assert sum(sample(samples, "workerpool_children", state=state) for state in ("idle", "busy")) == 2
    assert sample(samples, "workerpool_child_memory_bytes", slot="0") > 0
    assert sample(samples, "workerpool_child_memory_bytes", slot="1") > 0
    assert ("workerpool_recycles_total", frozenset({("reason", "crash")})) in samples
    assert ("workerpool_health_check_failures_total", frozenset()) in samples


def test_busy_child_on_a_long_job_stays_healthy(env, pool, health):
    app = running(pool, health)
    [job] = enqueue(env, "sleep", [{"seconds": 4}])

    def busy_with_job(answer: Answer) -> bool:
        return any(c["job_id"] == job and c["state"] == "busy" for c in answer.json()["children"])

    app.health_when(busy_with_job, what="a child busy with the sleep job")
    answers: list[Answer] = []

    def job_done() -> bool:
        answers.append(app.get("/health"))
        return not busy_with_job(answers[-1])

    wait_until(job_done, 30, what="the sleep job to finish")
    assert len(answers) > 1
    assert all(a.status == 200 for a in answers), [a.json()["reasons"] for a in answers if a.status != 200]


def test_stalled_queue_fails_health_but_not_readiness(env, pool, health):
    pool.start(WORKERPOOL_QUEUES="other")  # so nobody ever claims from queue "default"
    pool.wait_children(2)
    app = health.start(WORKERPOOL_STALL_SECONDS="2")
    app.health_when(is_ok, what="/health 200 before any job is due")
    enqueue(env, "noop", [{}])
    body = app.health_when(lambda a: a.status == 503, 20, what="/health 503 for the stall")
    assert body["status"] == "degraded"
    assert any(r.startswith("stalled:") for r in body["reasons"]), body["reasons"]
    assert app.get("/health/ready").status == 200  # the pool can still take work
    samples = app.metrics()
    assert sample(samples, "workerpool_queue_jobs", queue="default", state="queued") == 1
    assert sample(samples, "workerpool_queue_oldest_due_age_seconds") > 2


def test_missing_dsn_stops_gunicorn_with_a_clear_message(env):
    bare = {k: v for k, v in env.items() if k not in ("WORKERPOOL_DSN", "DATABASE_URL")}
    result = subprocess.run(
        [str(BIN / "gunicorn"), "-c", "health_app/gunicorn.conf.py", "health_app.wsgi:app"],
        cwd=ROOT,
        env=bare,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert "WORKERPOOL_DSN is not set" in result.stderr.decode()


def test_app_never_imports_task_code(env):
    task_code = ("workerpool.examples", "workerpool.child", "workerpool.master", "workerpool.cli", "helper_tasks")
    check = f"import sys, health_app.wsgi; print([m for m in {task_code!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "[]"


# -- the judgement alone, on made-up snapshots ------------------------------------------

NOW = 1_800_000_000.0
DB_OK = DatabaseState(ok=True, latency_ms=0.5)


def child(slot: int, state: str = "idle", heartbeat_age: float | None = 1.0, **fields: Any) -> dict[str, Any]:
    heartbeat = None if heartbeat_age is None else NOW - heartbeat_age
    return {
        "slot": slot,
        "pid": 1000 + slot,
        "state": state,
        "started_at": NOW - 60,
        "last_heartbeat": heartbeat,
        "retiring": None,
        **fields,
    }


def snapshot(*children: dict[str, Any], last_claim_age: float = 1.0) -> dict[str, Any]:
    # This test process stands in for the master: it is alive and not a zombie.
    return {
        "written_at": NOW,
        "master": {"pid": os.getpid(), "started_at": NOW - 3600, "state": "running"},
        "desired_children": 2,
        "children": list(children),
        "recycles": {},
        "last_claim_at": NOW - last_claim_age,
    }


def judge(doc: dict[str, Any], db: DatabaseState = DB_OK) -> dict[str, Any]:
    return assess(doc, db, now=NOW, stall_seconds=60, status_path="/run/status.json")


def test_an_hour_long_job_with_a_fresh_heartbeat_is_ok():
    body = judge(snapshot(child(0, "busy", job_id=1, job_started_at=NOW - 3600), child(1)))
    assert body["status"] == "ok", body["reasons"]


def test_a_silent_child_is_degraded():
    body = judge(snapshot(child(0, heartbeat_age=60), child(1)))
    assert body["status"] == "degraded"
    assert any("no heartbeat" in r for r in body["reasons"])
    assert body["children"][0]["stale"] is True


def test_a_recycle_in_progress_is_ok():
    # The replacement starts before the old child is told to stop.
    old = child(0, "stopping", retiring="max_jobs")
    replacement = child(0, "starting", heartbeat_age=None, started_at=NOW - 1)
    assert judge(snapshot(old, replacement, child(1)))["status"] == "ok"


@pytest.mark.parametrize(
    ("oldest_due", "last_claim_age", "stalled"), [(600, 1, False), (600, 120, True), (10, 120, False)]
)
def test_a_stall_needs_a_waiting_job_and_no_claims(oldest_due, last_claim_age, stalled):
    db = DatabaseState(ok=True, latency_ms=0.5, oldest_due_age=oldest_due)
    body = judge(snapshot(child(0), child(1), last_claim_age=last_claim_age), db)
    assert (body["status"] == "degraded") is stalled
    assert any(r.startswith("stalled:") for r in body["reasons"]) is stalled


def test_a_vanished_master_is_down_and_shows_no_children():
    gone = subprocess.Popen(["true"])
    gone.wait()
    doc = snapshot(child(0), child(1))
    doc["master"]["pid"] = gone.pid
    body = judge(doc)
    assert body["status"] == "down" and body["master"]["alive"] is False
    assert body["children"] == []
