"""Every SQL statement workerpool runs against the jobs table.

Fencing: a worker changes a running job only `WHERE status = 'running' AND locked_by =
<its token>`. A token names one child incarnation, so a worker whose lease expired and
whose job was handed to someone else cannot finish, fail or release that job.

Attempts are counted at claim. Jobs that are given back without having started (a child
stopping with a claimed batch, an orderly stop running out of time) get the attempt back.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

STATUSES = ("queued", "running", "succeeded", "dead", "cancelled")

# The retry delay, in seconds, for a job that has used `attempts` attempts.
_BACKOFF = "least(%(backoff_max)s, %(backoff)s * power(2, greatest(j.attempts - 1, 0))) * (0.5 + random() / 2)"


@dataclass(slots=True)
class Job:
    id: int
    task: str
    queue: str
    payload: Any
    attempt: int
    max_attempts: int
    timeout: float | None


Outcome = Literal["succeeded", "retry", "dead"]


@dataclass(slots=True)
class Result:
    """A finished job's outcome, waiting to be written."""

    id: int
    outcome: Outcome
    result: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    task: str
    payload_json: bytes  # serialized once, when validated
    queue: str = "default"
    priority: int = 0
    run_at: dt.datetime | None = None
    max_attempts: int = 5
    timeout: float | None = None


_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def to_jsonb(value: Any) -> bytes:
    """`value` as JSON that PostgreSQL's jsonb accepts, or ValueError saying why not."""
    try:
        data = orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"is not JSON-serializable: {exc}") from None
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        raise ValueError("contains a NUL character (\\u0000), which PostgreSQL's jsonb cannot store")
    return data


def storable_text(value: str) -> str:
    """`value` without NUL characters or lone surrogates, which PostgreSQL's text cannot hold."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _copy_text(value: str) -> str:
    """A value escaped for COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # jsonb holds numbers orjson refuses, such as 1e309
        return json.loads(data)


def prepare_connection(conn: psycopg.Connection) -> None:
    set_json_loads(_loads, conn)


class Queue:
    """The statements, bound to one connection and schema."""

    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.channel = f"{schema}_jobs"
        prepare_connection(conn)
        self._sql: dict[str, bytes] = {}

    def _q(self, text: str) -> bytes:
        """`text` with {s} as the schema, composed once and cached."""
        composed = self._sql.get(text)
        if composed is None:
            query = sql.SQL(text).format(s=sql.Identifier(self.schema))
            composed = self._sql[text] = query.as_string(self.conn).encode()
        return composed

    # -- waking up ------------------------------------------------------------

    def listen(self) -> None:
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    # -- the child's side -----------------------------------------------------

    def claim(self, token: str, limit: int, lease: float, queues: Sequence[str]) -> list[Job]:
        where_queue = "AND queue = ANY(%(queues)s)" if queues else ""
        query = self._q(
            "UPDATE {s}.jobs SET status = 'running', attempts = attempts + 1,"
            " locked_by = %(token)s, started_at = now(),"
            " lease_until = now() + %(lease)s * interval '1 second'"
            " WHERE id IN (SELECT id FROM {s}.jobs"
            " WHERE status = 'queued' AND run_at <= now() "
            + where_queue
            + " ORDER BY priority, run_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, task, queue, payload, attempts, max_attempts, timeout,"
            " priority, run_at"
        )
        rows = self.conn.execute(
            query,
            {"token": token, "lease": lease, "limit": limit, "queues": list(queues)},
            prepare=True,
        ).fetchall()
        rows.sort(key=lambda r: (r[7], r[8], r[0]))
        return [Job(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def complete(self, token: str, results: Sequence[Result], backoff: float, backoff_max: float) -> int:
        """Write outcomes in one round trip; return how many this token still held."""
        # The outcome is committed without waiting for the WAL flush: if PostgreSQL itself
        # crashes before writing it, the job is still `running` under a lease nobody renews
        # (the master renews only jobs a child holds), so it is rescued and re-run with its
        # attempt counted. Claims, by contrast, commit durably.
        query = self._q(
            "WITH async AS (SELECT set_config('synchronous_commit', 'off', true))"
            " UPDATE {s}.jobs AS j SET"
            " status = CASE o.o WHEN 'retry' THEN 'queued' ELSE o.o END,"
            " result = o.r,"
            " last_error = coalesce(o.e, j.last_error),"
            " run_at = CASE o.o WHEN 'retry' THEN now() + " + _BACKOFF + " * interval '1 second' ELSE j.run_at END,"
            " finished_at = CASE o.o WHEN 'retry' THEN NULL ELSE now() END,"
            " locked_by = NULL, lease_until = NULL"
            " FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS o(i bigint, o text, r jsonb, e text), async"
            " WHERE j.id = o.i AND j.status = 'running' AND j.locked_by = %(token)s"
        )
        # One JSON document rather than four arrays: orjson builds it in C, psycopg's array
        # dumpers would build it in Python.
        outcomes = orjson.dumps(
            [
                {
                    "i": r.id,
                    "o": r.outcome,
                    "r": orjson.Fragment(r.result) if r.result is not None else None,
                    "e": r.error,
                }
                for r in results
            ]
        ).decode()
        cursor = self.conn.execute(
            query,
            {"outcomes": outcomes, "token": token, "backoff": backoff, "backoff_max": backoff_max},
            prepare=True,
        )
        return cursor.rowcount

    def give_back(self, token: str, ids: Sequence[int]) -> int:
        """Return claimed jobs that never started; their attempt is not counted."""
        if not ids:
            return 0
        query = self._q(
            "WITH r AS (UPDATE {s}.jobs SET status = 'queued', attempts = attempts - 1,"
            " locked_by = NULL, lease_until = NULL, started_at = NULL"
            " WHERE id = ANY(%(ids)s) AND status = 'running' AND locked_by = %(token)s"
            " RETURNING id)"
            " SELECT count(*), pg_notify(%(channel)s, '') FROM r"
        )
        row = self.conn.execute(query, {"ids": list(ids), "token": token, "channel": self.channel}).fetchone()
        return row[0] if row else 0

    # -- the master's side ----------------------------------------------------

    def renew(self, held: Sequence[tuple[str, Sequence[int]]], lease: float) -> int:
        """Extend the leases of the jobs each child (token) holds right now.

        Only held jobs: a job whose outcome was written but lost (see `complete`) is not
        held by anyone, so its lease runs out and it is rescued instead of kept forever.
        """
        ids = [job_id for _, job_ids in held for job_id in job_ids]
        if not ids:
            return 0
        query = self._q(
            "UPDATE {s}.jobs SET lease_until = now() + %(lease)s * interval '1 second'"
            " WHERE id = ANY(%(ids)s) AND status = 'running' AND locked_by = ANY(%(tokens)s)"
        )
        tokens = [token for token, _ in held]
        return self.conn.execute(query, {"ids": ids, "tokens": tokens, "lease": lease}).rowcount

    def release(
        self,
        token: str,
        *,
        current: int | None,
        unstarted: Sequence[int],
        error: str,
        count_attempt: bool,
        backoff: float,
        backoff_max: float,
        give_back_all: bool = False,
    ) -> list[tuple[int, str]]:
        """Put back every job a vanished child held; return (id, new status) pairs.

        The job it was running gets `error`; with `count_attempt` it keeps its attempt
        (a crash) and may go dead, without it the attempt is given back (an orderly stop).
        Only the jobs its board shows it had not started get their attempt back: any other
        job still running under its token may have run (finished but not recorded, or an
        outcome lost with an asynchronous commit), so it runs again with its attempt counted,
        or is dead if that was its last. `give_back_all` is for a second pass a few seconds
        later: a claim still in flight when the child died commits under its token after the
        first pass, and those jobs never reached the child.
        """
        given_back = (
            "(%(all)s OR j.id = ANY(%(unstarted)s) OR (j.id IS NOT DISTINCT FROM %(current)s AND NOT %(count)s))"
        )
        dies = f"(NOT {given_back} AND j.attempts >= j.max_attempts)"
        query = self._q(
            "WITH r AS (UPDATE {s}.jobs AS j SET"
            f" status = CASE WHEN {dies} THEN 'dead' ELSE 'queued' END,"
            f" attempts = CASE WHEN {given_back} THEN j.attempts - 1 ELSE j.attempts END,"
            " last_error = CASE WHEN j.id = %(current)s THEN %(error)s ELSE j.last_error END,"
            " run_at = CASE WHEN j.id = %(current)s AND %(count)s THEN now() + "
            + _BACKOFF
            + " * interval '1 second' ELSE now() END,"
            f" finished_at = CASE WHEN {dies} THEN now() END,"
            " started_at = NULL, locked_by = NULL, lease_until = NULL"
            " WHERE j.status = 'running' AND j.locked_by = %(token)s"
            " RETURNING j.id, j.status)"
            " SELECT id, status, pg_notify(%(channel)s, '') FROM r"
        )
        rows = self.conn.execute(
            query,
            {
                "token": token,
                "current": current,
                "unstarted": list(unstarted),
                "error": error,
                "count": count_attempt,
                "all": give_back_all,
                "backoff": backoff,
                "backoff_max": backoff_max,
                "channel": self.channel,
            },
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def rescue_expired(self) -> list[tuple[int, str]]:
        """Jobs whose lease ran out (their pool is gone) go back, attempt counted.

        Attempts are counted at claim for a whole batch, so a vanished pool may never have
        started a job it held: one on its last attempt gets one more rather than going dead
        unrun; one past it (it took a pool down twice) is dead.
        """
        query = self._q(
            "WITH r AS (UPDATE {s}.jobs SET"
            " status = CASE WHEN attempts > max_attempts THEN 'dead' ELSE 'queued' END,"
            " last_error = 'lease expired: the pool running it stopped renewing it'"
            " || ' (lost host or killed master), attempt ' || attempts,"
            " finished_at = CASE WHEN attempts > max_attempts THEN now() END,"
            " run_at = now(), started_at = NULL, locked_by = NULL, lease_until = NULL"
            " WHERE status = 'running' AND lease_until < now()"
            " RETURNING id, status)"
            " SELECT id, status, pg_notify(%(channel)s, '') FROM r"
        )
        rows = self.conn.execute(query, {"channel": self.channel}).fetchall()
        return [(r[0], r[1]) for r in rows]

    # -- enqueueing -----------------------------------------------------------

    def enqueue(self, job: NewJob) -> int:
        query = self._q(
            "INSERT INTO {s}.jobs (task, queue, priority, run_at, max_attempts, timeout, payload)"
            " VALUES (%s, %s, %s, coalesce(%s, now()), %s, %s, %s::jsonb) RETURNING id"
        )
        row = self.conn.execute(
            query,
            (
                job.task,
                job.queue,
                job.priority,
                job.run_at,
                job.max_attempts,
                job.timeout,
                job.payload_json.decode(),
            ),
        ).fetchone()
        assert row is not None
        return row[0]

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[int]:
        """Insert with COPY (ids drawn first, so they can be returned)."""
        if not jobs:
            return []
        row = self.conn.execute(
            self._q("SELECT array_agg(nextval(pg_get_serial_sequence(%s, 'id'))), now() FROM generate_series(1, %s)"),
            (f"{self.schema}.jobs", len(jobs)),
        ).fetchone()
        assert row is not None
        ids, now = row
        copy_sql = self._q(
            "COPY {s}.jobs (id, task, queue, priority, run_at, max_attempts, timeout, payload) FROM STDIN"
        )
        # Rows are formatted here rather than by write_row: it is most of the cost of a bulk
        # enqueue. orjson never emits raw control characters, so only backslashes need escaping.
        default_run_at = now.isoformat()
        lines = []
        for job_id, job in zip(ids, jobs, strict=True):
            lines.append(
                "\t".join(
                    (
                        str(job_id),
                        _copy_text(job.task),
                        _copy_text(job.queue),
                        str(job.priority),
                        job.run_at.isoformat() if job.run_at else default_run_at,
                        str(job.max_attempts),
                        "\\N" if job.timeout is None else repr(float(job.timeout)),
                        job.payload_json.decode().replace("\\", "\\\\"),
                    )
                )
            )
        with self.conn.cursor().copy(copy_sql) as copy:
            copy.write("\n".join(lines) + "\n")
        return ids

    # -- reading --------------------------------------------------------------

    def list_jobs(self, status: str | None, task: str | None, limit: int) -> list[dict[str, Any]]:
        query = self._q(
            "SELECT id, task, queue, status, priority, attempts, max_attempts, run_at,"
            " created_at, started_at, finished_at, last_error FROM {s}.jobs"
            " WHERE (%(status)s::text IS NULL OR status = %(status)s)"
            " AND (%(task)s::text IS NULL OR task = %(task)s)"
            " ORDER BY id DESC LIMIT %(limit)s"
        )
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, {"status": status, "task": task, "limit": limit})
            return cur.fetchall()

    def get_job(self, job_id: int) -> dict[str, Any] | None:
        query = self._q("SELECT * FROM {s}.jobs WHERE id = %s")
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, (job_id,))
            return cur.fetchone()

    def counts(self) -> list[tuple[str, str, int]]:
        """(queue, status, count) for the jobs not yet finished."""
        query = self._q(
            "SELECT queue, status, count(*) FROM {s}.jobs WHERE status IN ('queued', 'running') GROUP BY queue, status"
        )
        return [tuple(r) for r in self.conn.execute(query).fetchall()]  # type: ignore[misc]

    def oldest_due_age(self, queues: Sequence[str] = ()) -> float | None:
        """Seconds the next job to be claimed has been due, None when none is due.

        The job claim order puts first (through the claim index, so it stays cheap on a
        large backlog): if a pool is claiming, this wait stays short.
        """
        where_queue = "AND queue = ANY(%(queues)s)" if queues else ""
        query = self._q(
            "SELECT extract(epoch FROM now() - run_at) FROM {s}.jobs"
            " WHERE status = 'queued' AND run_at <= now() " + where_queue + " ORDER BY priority, run_at, id LIMIT 1"
        )
        row = self.conn.execute(query, {"queues": list(queues)}).fetchone()
        return float(row[0]) if row else None

    def prune(self, older_than_s: float, statuses: Sequence[str], batch: int = 10_000) -> int:
        """Delete finished jobs older than the horizon, a batch per statement (short locks)."""
        query = self._q(
            "DELETE FROM {s}.jobs WHERE id IN (SELECT id FROM {s}.jobs"
            " WHERE status = ANY(%(statuses)s)"
            " AND finished_at < now() - %(age)s * interval '1 second' LIMIT %(batch)s)"
        )
        total = 0
        while True:
            n = self.conn.execute(query, {"statuses": list(statuses), "age": older_than_s, "batch": batch}).rowcount
            total += n
            if n < batch:
                return total

    def cancel(self, ids: Iterable[int]) -> int:
        query = self._q(
            "UPDATE {s}.jobs SET status = 'cancelled', finished_at = now() WHERE id = ANY(%s) AND status = 'queued'"
        )
        return self.conn.execute(query, (list(ids),)).rowcount

    def retry(self, ids: Iterable[int]) -> int:
        """Put dead or cancelled jobs back in the queue with a fresh set of attempts."""
        query = self._q(
            "UPDATE {s}.jobs SET status = 'queued', attempts = 0, run_at = now(),"
            " finished_at = NULL WHERE id = ANY(%s) AND status IN ('dead', 'cancelled')"
        )
        return self.conn.execute(query, (list(ids),)).rowcount
