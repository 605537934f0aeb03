"""The `workerpool` command: enqueueing, listing, bad input, migrations."""

from __future__ import annotations

import subprocess
import time

import orjson
import pytest
from conftest import BIN, cli, wait_until


def count(sql) -> int:
    return sql("SELECT count(*) FROM workerpool.jobs")[0][0]


def test_payload_file_enqueues_every_line_and_prints_the_ids(env, sql, tmp_path):
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("".join(f'{{"seconds": {i}}}\n' for i in range(1000)))
    result = cli(env, "enqueue", "sleep", "--payload-file", str(lines), "--queue", "slow", "--priority", "3")
    assert result.returncode == 0, result.stderr
    ids = [int(x) for x in result.stdout.split()]
    assert len(ids) == len(set(ids)) == 1000
    assert sql("SELECT count(*), min(queue), max(priority) FROM workerpool.jobs") == [(1000, "slow", 3)]
    assert sql("SELECT payload FROM workerpool.jobs WHERE id = %s", (ids[7],))[0][0] == {"seconds": 7}


def test_payload_from_stdin(env, sql):
    result = cli(env, "enqueue", "sleep", "--payload-file", "-", input=b'{"seconds": 1}\n{"seconds": 2}\n')
    assert result.returncode == 0 and len(result.stdout.split()) == 2
    assert count(sql) == 2


def test_100_000_lines_enqueue_in_seconds_with_bounded_memory(env, sql, tmp_path):
    lines = tmp_path / "big.jsonl"
    lines.write_text("".join(f'{{"path": "/tmp/file-{i}"}}\n' for i in range(100_000)))
    started = time.monotonic()
    out_path = tmp_path / "ids.txt"
    proc = subprocess.Popen(
        [str(BIN / "workerpool"), "enqueue", "file_digest", "--payload-file", str(lines)],
        env=env,
        stdout=out_path.open("wb"),
        stderr=subprocess.PIPE,
    )
    import psutil

    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    _, err = proc.communicate()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, err
    assert len(out_path.read_bytes().split()) == 100_000
    assert count(sql) == 100_000
    assert elapsed < 60  # "in seconds": about 2 s here; generous for a busy box
    assert peak < 150 * 1024 * 1024  # streamed in chunks, not read whole


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"seconds": 1}\n' * 4999 + b'{"seconds": \n' + b'{"seconds": 1}\n' * 5000, b"line 5000: invalid JSON"),
        (b'{"seconds": 1}\n' * 10 + b'{"blob": "' + b"x" * 2000 + b'"}\n', b"line 11: payload for 'sleep' is"),
    ],
    ids=["bad-json-at-line-5000", "payload-too-large"],
)
def test_a_bad_line_exits_65_naming_it_and_enqueues_nothing(env, sql, tmp_path, content, needle):
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(content)
    result = cli({**env, "WORKERPOOL_MAX_PAYLOAD_BYTES": "1000"}, "enqueue", "sleep", "--payload-file", str(path))
    assert result.returncode == 65
    assert needle in result.stderr
    assert result.stdout == b""
    assert count(sql) == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sleep", "--payload", "{nope"], b"invalid JSON"),
        (["no_such_task", "--payload", "{}"], b"unknown task 'no_such_task'"),
        (["sleep", "--payload", "{}", "--run-at", "tomorrow-ish"], b"--run-at 'tomorrow-ish'"),
        (["sleep", "--payload", '{"x": "' + "y" * 2000 + '"}'], b"over WORKERPOOL_MAX_PAYLOAD_BYTES=1000"),
        (["sleep", "--payload", "{}"], b"missing a required argument: 'seconds'"),
        (["sleep", "--payload", '{"seconds": 1, "minutes": 2}'], b"unexpected keyword argument 'minutes'"),
        (["sleep", "--payload", '"just a string"'], b"must be a JSON object"),
        (["sleep", "--payload", "[1, 2]"], b"must be a JSON object"),
    ],
    ids=["invalid-json", "unknown-task", "bad-run-at", "too-large", "missing-arg", "extra-arg", "string", "list"],
)
def test_bad_input_exits_65_with_a_clear_error(env, sql, args, needle):
    result = cli({**env, "WORKERPOOL_MAX_PAYLOAD_BYTES": "1000"}, "enqueue", *args)
    assert result.returncode == 65, result.stderr
    assert needle in result.stderr
    assert count(sql) == 0


def test_run_at_and_max_attempts(env, sql):
    assert (
        cli(
            env, "enqueue", "sleep", "--payload", '{"seconds": 0}', "--run-at", "+3600", "--max-attempts", "2"
        ).returncode
        == 0
    )
    assert (
        cli(env, "enqueue", "sleep", "--payload", '{"seconds": 0}', "--run-at", "2030-01-01T00:00:00+00:00").returncode
        == 0
    )
    rows = sql("SELECT extract(epoch FROM run_at - now())::int, max_attempts FROM workerpool.jobs ORDER BY id")
    assert 3500 < rows[0][0] <= 3600 and rows[0][1] == 2
    assert rows[1][0] > 3600 * 24 * 365


def test_jobs_and_job_show_what_happened(env, sql, pool):
    ids = [int(cli(env, "enqueue", "file_digest", "--payload", '{"path": "/etc/hostname"}').stdout)]
    ids.append(int(cli(env, "enqueue", "give_up").stdout))
    pool.start()
    wait_until(lambda: sql("SELECT count(*) FROM workerpool.jobs WHERE finished_at IS NOT NULL")[0][0] == 2, 30)
    listing = orjson.loads(cli(env, "jobs", "--json").stdout)
    assert {j["id"] for j in listing} == set(ids)
    for field in ("id", "task", "queue", "status", "attempts", "created_at", "finished_at"):
        assert all(field in j for j in listing)
    dead = orjson.loads(cli(env, "jobs", "--json", "--status", "dead").stdout)
    assert [j["id"] for j in dead] == [ids[1]]
    one = orjson.loads(cli(env, "job", str(ids[0]), "--json").stdout)
    assert one["status"] == "succeeded" and one["result"]["path"] == "/etc/hostname"
    assert one["payload"] == {"path": "/etc/hostname"} and one["attempts"] == 1
    assert b"nothing to retry here" in cli(env, "job", str(ids[1])).stdout
    assert cli(env, "job", "999999").returncode == 65
    status = orjson.loads(cli(env, "status", "--json").stdout)
    assert status["alive"] and len(status["children"]) == 2
    table = cli(env, "status").stdout.decode()
    assert "SLOT" in table and str(status["children"][0]["pid"]) in table
    assert pool.stop() == 0
    assert cli(env, "status").returncode == 3
    # Every line the pool printed was JSON.
    for line in pool.log_path.read_bytes().splitlines():
        orjson.loads(line)


def test_cancel_and_retry(env, sql):
    job = int(cli(env, "enqueue", "sleep", "--payload", '{"seconds": 0}').stdout)
    assert b"cancelled 1" in cli(env, "cancel", str(job)).stdout
    assert sql("SELECT status FROM workerpool.jobs")[0][0] == "cancelled"
    assert b"queued 1" in cli(env, "retry", str(job)).stdout
    assert sql("SELECT status, attempts FROM workerpool.jobs")[0] == ("queued", 0)


def test_two_migrations_at_once_apply_each_version_once(env, sql):
    procs = [
        subprocess.Popen(
            [str(BIN / "workerpool"), "migrate"],
            env={**env, "WORKERPOOL_SCHEMA": "fresh"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), results
    assert sql("SELECT version, count(*) FROM fresh.schema_migrations GROUP BY version") == [(1, 1)]
    assert sum(b"migrated to version" in out for out, _, _ in results) == 1


def test_run_against_an_unmigrated_schema_exits_78(env):
    result = cli({**env, "WORKERPOOL_SCHEMA": "never_migrated"}, "run", timeout=30)
    assert result.returncode == 78
    assert b"workerpool migrate" in result.stdout


def test_prune_deletes_old_finished_jobs_only(env, sql):
    for _ in range(3):
        cli(env, "enqueue", "sleep", "--payload", '{"seconds": 0}')
    sql("UPDATE workerpool.jobs SET status = 'succeeded', finished_at = now() - interval '10 days' WHERE id = 1")
    sql("UPDATE workerpool.jobs SET status = 'dead', finished_at = now() - interval '10 days' WHERE id = 2")
    result = cli(env, "prune", "--older-than", "7")
    assert result.returncode == 0 and b"deleted 1" in result.stdout
    assert [r[0] for r in sql("SELECT id FROM workerpool.jobs ORDER BY id")] == [2, 3]
    assert b"deleted 1" in cli(env, "prune", "--older-than", "7", "--status", "dead").stdout
    assert [r[0] for r in sql("SELECT id FROM workerpool.jobs")] == [3]


def test_an_unwritable_runtime_dir_fails_at_start_with_78(env):
    result = cli({**env, "WORKERPOOL_RUNTIME_DIR": "/proc/1"}, "run", timeout=30)
    assert result.returncode == 78
    assert b"WORKERPOOL_RUNTIME_DIR" in result.stdout


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql+psycopg2://u:S3cretPW-test@127.0.0.1/db",
        "POSTGRESQL://u:S3cretPW-test@127.0.0.1:54x2/db",
        "postgresql://u:S3cretPW-test@extra@127.0.0.1:54x2/db",
    ],
)
def test_a_dsn_libpq_rejects_is_reported_without_its_password(env, dsn):
    result = cli({**env, "WORKERPOOL_DSN": dsn}, "jobs", timeout=30)
    assert result.returncode == 78
    assert b"WORKERPOOL_DSN" in result.stderr and b"***" in result.stderr
    assert b"S3cretPW" not in result.stdout + result.stderr
