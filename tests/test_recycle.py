"""Recycling children: memory (soft and hard), max jobs, max age, and the CoW traps."""

from __future__ import annotations

from conftest import enqueue, job_rows, wait_until


def finished(sql, ids) -> bool:
    return all(r["status"] in ("succeeded", "dead") for r in job_rows(sql, ids).values())


def test_soft_memory_limit_recycles_after_the_job_and_loses_nothing(env, sql, pool):
    ids = enqueue(env, "allocate", [{"mb": 30} for _ in range(20)])
    pool.start(WORKERPOOL_MAX_MEMORY_MB="80")
    wait_until(lambda: finished(sql, ids), 120, what="20 allocate jobs")
    wait_until(lambda: (d := pool.status()) and d["recycles"]["memory"] >= 4 and d, 10)
    assert pool.stop() == 0
    rows = job_rows(sql, ids)
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    assert {r["attempts"] for r in rows.values()} == {1}  # a soft recycle never re-runs a job
    held = [r["result"]["held_mb"] for r in rows.values()]
    assert max(held) <= 80 + 30  # no child ever held more than one job past the limit
    recycled = [e for e in pool.logs() if e.get("reason") == "memory" and "recycling" in e["msg"]]
    assert recycled and all(e["memory_mb"] > 80 for e in recycled)


def test_hard_memory_limit_kills_mid_job_and_the_attempt_counts(env, sql, pool):
    [job] = enqueue(env, "hog", [{"mb": 120, "seconds": 30}], max_attempts=2)
    pool.start(
        WORKERPOOL_CHILDREN="1",
        WORKERPOOL_MAX_MEMORY_MB="50",
        WORKERPOOL_HARD_MEMORY_MB="100",
        WORKERPOOL_MEMORY_CHECK_INTERVAL="0.2",
    )
    wait_until(lambda: finished(sql, [job]), 60, what="the hog job to die")
    row = job_rows(sql, [job])[job]
    assert row["status"] == "dead" and row["attempts"] == 2
    assert "WORKERPOOL_HARD_MEMORY_MB=100" in row["last_error"]
    doc = wait_until(lambda: (d := pool.status()) and d["recycles"]["hard_memory"] >= 2 and d, 10)
    assert doc["recycles"]["crash"] == 0  # a kill we ordered is not a crash
    pool.wait_children(1)
    assert pool.stop() == 0


def test_max_jobs_per_child_recycles(env, sql, pool):
    ids = enqueue(env, "record", [{} for _ in range(20)])
    pool.start(WORKERPOOL_CHILDREN="1", WORKERPOOL_MAX_JOBS_PER_CHILD="5")
    wait_until(lambda: finished(sql, ids), 60)
    doc = wait_until(lambda: (d := pool.status()) and d["recycles"]["max_jobs"] >= 3 and d, 10)
    assert pool.stop() == 0
    pids = sql("SELECT pid, count(*) FROM executions GROUP BY pid")
    assert len(pids) >= 4 and all(n <= 5 for _, n in pids)
    assert sql("SELECT count(*), count(DISTINCT job_id) FROM executions")[0] == (20, 20)
    assert doc["recycles"]["crash"] == 0


def test_max_child_age_recycles_and_capacity_never_drops(env, sql, pool):
    pool.start(WORKERPOOL_CHILDREN="2", WORKERPOOL_MAX_CHILD_AGE="2")
    first = set(pool.wait_children(2))
    doc = wait_until(lambda: (d := pool.status()) and d["recycles"]["max_age"] >= 2 and d, 30)
    live = {c["pid"] for c in doc["children"] if not c["retiring"]}
    assert live - first
    assert pool.stop() == 0


def test_child_born_over_the_limit_is_not_recycled_per_job(env, sql, pool):
    """C-09 (celery #4125): a fresh child already over the limit must not loop."""
    ids = enqueue(env, "record", [{} for _ in range(10)])
    pool.start(
        WORKERPOOL_CHILDREN="1",
        WORKERPOOL_TASKS=env["WORKERPOOL_TASKS"] + ",fat_import",
        FAT_IMPORT_MB="60",
        WORKERPOOL_MAX_MEMORY_MB="30",
        WORKERPOOL_MEMORY_CHECK_INTERVAL="0.2",
    )
    wait_until(lambda: finished(sql, ids), 60)
    assert pool.stop() == 0
    assert {r["status"] for r in job_rows(sql, ids).values()} == {"succeeded"}
    assert len({pid for (pid,) in sql("SELECT DISTINCT pid FROM executions")}) <= 2
    warnings = [e for e in pool.logs() if e["level"] == "warning" and "fresh child" in e["msg"]]
    assert len(warnings) == 1
    assert "WORKERPOOL_MAX_MEMORY_MB=30" in warnings[0]["msg"] and warnings[0]["born_memory_mb"] > 30


def test_memory_shared_with_the_master_is_not_counted(env, sql, pool):
    """C-10: the master holds 200 MB before forking; children are judged by what they own."""
    ids = enqueue(env, "record", [{} for _ in range(20)])
    pool.start(
        WORKERPOOL_CHILDREN="2",
        WORKERPOOL_PRELOAD="true",
        WORKERPOOL_TASKS=env["WORKERPOOL_TASKS"] + ",fat_import",
        FAT_IMPORT_MB="200",
        WORKERPOOL_MAX_MEMORY_MB="150",
        WORKERPOOL_MEMORY_CHECK_INTERVAL="0.2",
    )
    wait_until(lambda: finished(sql, ids), 60)
    doc = wait_until(lambda: (d := pool.status()) and all(c["rss_bytes"] for c in d["children"]) and d, 10)
    assert doc["recycles"]["memory"] == 0
    for child in doc["children"]:
        assert child["memory_measure"] == "uss"
        assert child["memory_bytes"] < 50 * 1024 * 1024
        assert child["rss_bytes"] > 150 * 1024 * 1024  # RSS would have condemned it
    [big] = enqueue(env, "allocate", [{"mb": 200}])
    wait_until(lambda: finished(sql, [big]), 60)
    doc = wait_until(lambda: (d := pool.status()) and d["recycles"]["memory"] >= 1 and d, 15)
    assert job_rows(sql, [big])[big]["status"] == "succeeded"
    more = enqueue(env, "record", [{} for _ in range(10)])
    wait_until(lambda: finished(sql, more), 60)
    assert wait_until(pool.status, 5)["recycles"]["memory"] == 1
    assert pool.stop() == 0
