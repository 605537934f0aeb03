"""Tasks the tests need: they record, crash, spin and misbehave on purpose."""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psycopg

from workerpool import NonRetryableError, current_job, task

_conn: psycopg.Connection | None = None


def _db() -> psycopg.Connection:
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["WORKERPOOL_DSN"], autocommit=True)
    return _conn


@task(name="record")
def record(seconds: float = 0) -> dict[str, int]:
    """Note this execution (job id, pid, attempt), then sleep."""
    job = current_job()
    assert job is not None
    _db().execute(
        "INSERT INTO executions (job_id, pid, attempt) VALUES (%s, %s, %s)",
        (job.id, os.getpid(), job.attempt),
    )
    time.sleep(seconds)
    return {"pid": os.getpid()}


@task(name="suicide")
def suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@task(name="spin")
def spin(seconds: float) -> int:
    """Busy loop, holding the CPU (and mostly the GIL)."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


@task(name="always_fail", max_attempts=3)
def always_fail() -> None:
    raise RuntimeError("this task always fails")


@task(name="give_up")
def give_up() -> None:
    raise NonRetryableError("nothing to retry here")


@task(name="hard_exit")
def hard_exit(code: int = 7) -> None:
    os._exit(code)


@task(name="segfault")
def segfault() -> None:
    ctypes.string_at(0)


@task(name="unserializable")
def unserializable() -> object:
    return {"when": object()}


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


@task(name="bad_exception")
def bad_exception() -> None:
    raise _Unprintable()


_hoard: list[bytearray] = []


@task(name="hog")
def hog(mb: float, seconds: float) -> None:
    """Allocate `mb` MiB (touched), then hold it while sleeping: a job that blows up mid-run."""
    block = bytearray(int(mb * 1024 * 1024))
    for i in range(0, len(block), 4096):
        block[i] = 1
    _hoard.append(block)
    time.sleep(seconds)


@task(name="nul_result")
def nul_result() -> dict[str, str]:
    return {"text": "before\x00after"}


@task(name="nul_error")
def nul_error() -> None:
    raise NonRetryableError("bad byte \x00 in here")


@task(name="surrogate_error")
def surrogate_error() -> None:
    raise ValueError("bad name \udcff")
