"""The database check: run in a background thread and cached, so no request waits on the network.

A request that finds the cached answer older than TTL starts a check. If the database
answered last time, the request waits a few milliseconds for the new answer, which a
reachable database gives well within that; if it failed last time, the request answers at
once with the failure. A check out longer than the database is allowed to take (a
black-holed host) is reported as a failure, however old the cached answer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import make_conninfo

from workerpool.db import connect, scrub
from workerpool.queue import Queue

log = logging.getLogger(__name__)

TTL = 2.0  # seconds an answer is reused: checks and scrapes from several sources come in bursts
DEADLINE = 1.0  # seconds the database may take to answer a check
WAIT = 0.05  # seconds after a check starts during which requests wait for it (if it answered last time)
# Bounds a query on a connection whose peer went silent: connect_timeout only covers connecting,
# and statement_timeout needs a server that still answers.
TCP_USER_TIMEOUT_MS = 3000


@dataclass(frozen=True)
class DatabaseState:
    ok: bool
    latency_ms: float | None = None
    error: str | None = None
    checked_at: float = 0.0  # time.monotonic() of the answer
    queue_counts: tuple[tuple[str, str, int], ...] = ()
    oldest_due_age: float | None = None
    queue_error: str | None = None  # the database answered, but the queue could not be measured


class DatabaseProbe:
    """One per worker process; the connection is opened by the first check, after fork."""

    def __init__(self, dsn: str, schema: str, queues: tuple[str, ...] = ()) -> None:
        self.dsn = dsn
        self.schema = schema
        self.queues = queues
        self._lock = threading.Lock()
        self._state: DatabaseState | None = None
        self._in_flight: threading.Event | None = None  # set when the running check has answered
        self._since = 0.0  # time.monotonic() when the running check started
        self._answered = False  # the running check's ping came back: only the queue figures are pending
        # Only the check thread uses these, and only one check runs at a time.
        self._conn: psycopg.Connection | None = None
        self._queue: Queue | None = None

    def refresh(self) -> None:
        """Start a check unless the cached answer is fresh or one is already running."""
        with self._lock:
            self._refresh()

    def state(self) -> DatabaseState:
        with self._lock:
            stale = self._refresh()
            # A database that failed last time is not worth a wait: a hung check would only
            # slow the answer, and a recovery shows on the next request.
            pending = self._in_flight if stale and (self._state is None or self._state.ok) else None
            # Requests wait for a check only within WAIT of its start, not WAIT each.
            remaining = self._since + WAIT - time.monotonic()
        if pending is not None and remaining > 0:
            pending.wait(remaining)
        with self._lock:
            waited = time.monotonic() - self._since
            # Once the ping is back, the two queue queries may each take up to statement_timeout.
            limit = 3 * DEADLINE if self._answered else DEADLINE
            if self._in_flight is not None and waited > limit:
                return DatabaseState(ok=False, error=f"no answer for {waited:.1f} s (limit {limit:g} s)")
            if self._state is None:
                return DatabaseState(ok=False, error="the first check has not answered yet")
            return self._state

    def _refresh(self) -> bool:
        """Start a check if the cached answer is stale and none is running; whether it is stale."""
        stale = self._state is None or time.monotonic() - self._state.checked_at >= TTL
        if stale and self._in_flight is None:
            self._in_flight = threading.Event()
            self._since = time.monotonic()
            self._answered = False
            threading.Thread(target=self._run, args=(self._in_flight,), name="database-check", daemon=True).start()
        return stale

    def _run(self, in_flight: threading.Event) -> None:
        state = self._check()
        with self._lock:
            previous, self._state, self._in_flight = self._state, state, None
        in_flight.set()
        if state.ok != (previous.ok if previous else True):
            if state.ok:
                log.info("database check ok again", extra={"latency_ms": state.latency_ms})
            else:
                log.warning("database check failed", extra={"error": state.error})

    def _check(self) -> DatabaseState:
        started = time.monotonic()
        try:
            conn, queue = self._connection()
            pinged = time.monotonic()
            conn.execute("SELECT 1")
            latency_ms = round((time.monotonic() - pinged) * 1000, 3)
            took = time.monotonic() - started
            if took > DEADLINE:
                error = f"answered in {took:.2f} s (limit {DEADLINE:g} s)"
                return DatabaseState(ok=False, latency_ms=latency_ms, error=error, checked_at=time.monotonic())
            with self._lock:
                self._answered = True
            try:
                counts, oldest = tuple(queue.counts()), queue.oldest_due_age(self.queues)
            except psycopg.errors.QueryCanceled as exc:
                # statement_timeout: a backlog too large to count in time, not a database that is down.
                return DatabaseState(True, latency_ms, checked_at=time.monotonic(), queue_error=self._describe(exc))
        except Exception as exc:  # whatever went wrong, the check must answer, and never with the password
            self._close()
            return DatabaseState(ok=False, error=self._describe(exc), checked_at=time.monotonic())
        return DatabaseState(True, latency_ms, None, time.monotonic(), counts, oldest)

    def _describe(self, exc: Exception) -> str:
        return " ".join(scrub(str(exc), self.dsn).split()) or type(exc).__name__

    def _connection(self) -> tuple[psycopg.Connection, Queue]:
        if self._conn is None or self._queue is None or self._conn.closed:
            dsn = make_conninfo(self.dsn, tcp_user_timeout=TCP_USER_TIMEOUT_MS)
            # psycopg, like libpq, stretches a connect timeout under 2 s to 2 s; DEADLINE still
            # applies, since state() reports a check out longer than that as failed.
            self._conn = connect(dsn, application_name="workerpool-health", connect_timeout=DEADLINE)
            self._conn.execute(f"SET statement_timeout = {int(DEADLINE * 1000)}")
            self._queue = Queue(self._conn, self.schema)
        return self._conn, self._queue

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._queue = None
