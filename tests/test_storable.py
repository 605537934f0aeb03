"""What PostgreSQL cannot store (NUL characters, refused outcomes) never poisons a batch."""

from __future__ import annotations

import os

import psycopg
import pytest
from conftest import cli, enqueue, job_rows, wait_until

import workerpool
from workerpool.board import Board
from workerpool.child import Child
from workerpool.config import load_config
from workerpool.queue import Queue, Result


def test_results_and_errors_with_nul_characters_get_a_clear_outcome(env, sql, pool):
    bad = enqueue(env, "nul_result", [{}]) + enqueue(env, "nul_error", [{}]) + enqueue(env, "surrogate_error", [{}])
    good = enqueue(env, "record", [{} for _ in range(10)])
    pool.start(WORKERPOOL_CHILDREN="1")
    wait_until(lambda: all(r["status"] in ("succeeded", "dead") for r in job_rows(sql, bad + good).values()), 30)
    rows = job_rows(sql, bad + good)
    assert (rows[bad[0]]["status"], rows[bad[0]]["attempts"]) == ("dead", 1)
    assert "NUL character" in rows[bad[0]]["last_error"]
    assert rows[bad[1]]["status"] == "dead" and "bad byte \\x00 in here" in rows[bad[1]]["last_error"]
    assert rows[bad[2]]["status"] == "dead" and "bad name \\udcff" in rows[bad[2]]["last_error"]
    assert all(rows[i]["status"] == "succeeded" and rows[i]["attempts"] == 1 for i in good)
    assert pool.stop() == 0


def test_a_payload_with_a_nul_character_is_refused_at_enqueue(env, sql, tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"path": "/etc/hosts"}\n{"path": "a\\u0000b"}\n')
    result = cli(env, "enqueue", "file_digest", "--payload-file", str(path))
    assert result.returncode == 65
    assert b"line 2" in result.stderr and b"NUL character" in result.stderr
    with pytest.raises(workerpool.PayloadError, match="NUL character"):
        workerpool.enqueue("file_digest", {"path": "\x00"}, conn=psycopg.connect(env["WORKERPOOL_DSN"]))
    assert sql("SELECT count(*) FROM workerpool.jobs")[0][0] == 0


def test_an_outcome_the_database_refuses_does_not_hold_back_its_batch(env, sql, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ids = enqueue(env, "noop", [{}, {}, {}])
    token = "test-token"
    with psycopg.connect(env["WORKERPOOL_DSN"], autocommit=True) as conn:
        claimed = Queue(conn, "workerpool").claim(token, 3, 30, [])
    assert sorted(j.id for j in claimed) == ids
    read_fd, write_fd = os.pipe()
    child = Child(load_config(), 0, token, Board(), os.getpid(), write_fd)
    refused = Result(ids[1], "succeeded", b'{"not": json')  # jsonb rejects it
    child.record([Result(ids[0], "succeeded", b"1"), refused, Result(ids[2], "succeeded", b"3")])
    rows = job_rows(sql, ids)
    assert [rows[i]["status"] for i in ids] == ["succeeded", "dead", "succeeded"]
    assert "refused this job's outcome" in rows[ids[1]]["last_error"]
    assert child.conn is not None
    child.conn.close()
    for fd in (read_fd, write_fd, child.wake_r, child.wake_w):
        os.close(fd)
