"""workerpool: a forking worker pool that runs jobs from a PostgreSQL table.

from workerpool import task, enqueue

@task(name="send_mail", max_attempts=3)
def send_mail(to: str, subject: str) -> None: ...

enqueue("send_mail", {"to": "a@example.com", "subject": "hi"})
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from typing import Any

import psycopg

__version__ = "0.1.0"

from workerpool.config import EnqueueSettings, load_enqueue_settings  # noqa: E402
from workerpool.queue import NewJob, Queue, to_jsonb  # noqa: E402
from workerpool.tasks import (  # noqa: E402
    REGISTRY,
    JobContext,
    JobTimeout,
    NonRetryableError,
    bind,
    current_job,
    task,
)

__all__ = [
    "task",
    "enqueue",
    "enqueue_many",
    "current_job",
    "JobContext",
    "JobTimeout",
    "NonRetryableError",
    "PayloadError",
]

_connection: tuple[int, psycopg.Connection] | None = None
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


class PayloadError(ValueError):
    """A job cannot be enqueued as given (not JSON, too large, bad run_at)."""


def _own_connection() -> psycopg.Connection:
    """A connection for callers that pass none; one per process, never across a fork."""
    global _connection
    from workerpool.config import load_config
    from workerpool.db import connect

    if _connection is None or _connection[0] != os.getpid() or _connection[1].closed:
        config = load_config()
        _connection = (os.getpid(), connect(config.dsn, application_name="workerpool-enqueue"))
    return _connection[1]


def new_job(
    name: str,
    payload: Any,
    settings: EnqueueSettings,
    *,
    queue: str | None = None,
    priority: int | None = None,
    run_at: dt.datetime | dt.timedelta | float | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
) -> NewJob:
    """Validate one job, serialize its payload, and fill its defaults from its task."""
    registered = REGISTRY.get(name)
    for what, text in (("task name", name), ("queue name", queue or "")):
        if not text.isprintable():
            raise PayloadError(f"{what} {text!r} has control characters")
    try:
        payload_json = to_jsonb(payload)
        if len(payload_json) > settings.max_payload_bytes:
            raise ValueError(
                f"is {len(payload_json)} bytes, over WORKERPOOL_MAX_PAYLOAD_BYTES={settings.max_payload_bytes}"
            )
        if registered is not None:  # known here: check the payload fits it now, not at run time
            bind(registered, payload)
        elif not isinstance(payload, dict):
            raise ValueError(f"must be a JSON object (the task's keyword arguments), not {type(payload).__name__}")
    except NonRetryableError as exc:
        raise PayloadError(str(exc)) from None
    except ValueError as exc:
        raise PayloadError(f"payload for {name!r} {exc}") from None
    if isinstance(run_at, (int, float)):
        run_at = dt.timedelta(seconds=run_at)
    if isinstance(run_at, dt.timedelta):
        run_at = dt.datetime.now(dt.UTC) + run_at
    if run_at is not None and run_at.tzinfo is None:
        raise PayloadError("run_at must be timezone-aware (a naive datetime is ambiguous)")
    if run_at is not None and not _EARLIEST <= run_at <= _LATEST:
        raise PayloadError(f"run_at {run_at.isoformat()} is outside {_EARLIEST.year}-{_LATEST.year}")
    if priority is not None and not -(2**31) <= priority < 2**31:
        raise PayloadError(f"priority {priority} is outside the 32-bit range")
    if timeout is not None and not 0 < timeout < 1e9:  # NaN fails too
        raise PayloadError(f"timeout {timeout!r} must be a positive number of seconds")
    if max_attempts is not None and not 1 <= max_attempts <= 1000:
        raise PayloadError(f"max_attempts {max_attempts} must be between 1 and 1000")
    if registered is None:
        return NewJob(
            name,
            payload_json,
            queue or "default",
            priority or 0,
            run_at,
            max_attempts or settings.max_attempts,
            timeout,
        )
    return NewJob(
        task=name,
        payload_json=payload_json,
        queue=queue or registered.queue,
        priority=registered.priority if priority is None else priority,
        run_at=run_at,
        max_attempts=max_attempts or registered.max_attempts or settings.max_attempts,
        timeout=timeout or registered.timeout,
    )


def enqueue(
    name: str,
    payload: Any = None,
    *,
    queue: str | None = None,
    priority: int | None = None,
    run_at: dt.datetime | dt.timedelta | float | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    conn: psycopg.Connection | None = None,
) -> int:
    """Add one job and return its id.

    Given `conn`, the job joins that connection's open transaction: it exists only if the
    caller commits. Without it, the job is committed at once.
    """
    settings = load_enqueue_settings()
    job = new_job(
        name,
        {} if payload is None else payload,
        settings,
        queue=queue,
        priority=priority,
        run_at=run_at,
        max_attempts=max_attempts,
        timeout=timeout,
    )
    return Queue(conn or _own_connection(), settings.schema).enqueue(job)


def enqueue_many(
    jobs: Iterable[tuple[str, Any] | dict[str, Any]],
    *,
    conn: psycopg.Connection | None = None,
) -> list[int]:
    """Add many jobs in one COPY and return their ids, in order.

    Each job is `(name, payload)` or a dict of `enqueue`'s arguments (`name`, `payload`,
    `queue`, ...). All or none are added.
    """
    settings = load_enqueue_settings()
    built = []
    for item in jobs:
        if isinstance(item, dict):
            args = dict(item)
            built.append(new_job(args.pop("name"), args.pop("payload", {}), settings, **args))
        else:
            built.append(new_job(item[0], item[1], settings))
    connection = conn or _own_connection()
    queue = Queue(connection, settings.schema)
    if conn is not None:
        return queue.enqueue_many(built)
    with connection.transaction():
        return queue.enqueue_many(built)
