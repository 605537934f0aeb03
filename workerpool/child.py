"""A child: claims batches of jobs, runs them, records their outcomes.

Born by fork from the master. It opens its own connection, imports the task modules,
and loops: claim → run each job → record outcomes in one round trip. Idle, it sleeps on
LISTEN/NOTIFY with a polling fallback. SIGTERM means "finish the current job, give back
the rest, exit" however often it arrives. It never outlives the master.
"""

from __future__ import annotations

import bisect
import ctypes
import logging
import os
import random
import select
import signal
import threading
import time
import traceback
from typing import Any

import orjson
import psycopg

from workerpool import logs, tasks
from workerpool.board import IDLE, STARTING, STOPPING, Board
from workerpool.config import Config
from workerpool.db import Backoff, connect, scrub
from workerpool.memory import MIB, measure, over_soft_limit, rss_self
from workerpool.queue import Job, Queue, Result, storable_text, to_jsonb
from workerpool.tasks import JobTimeout, NonRetryableError

log = logging.getLogger("workerpool.child")

EX_BOOT = 3  # the child could not start (task import failed): the master must not loop
HEARTBEAT_SECONDS = 1.0
BATCH_SECONDS = 0.02  # a claim should hold about this much work, so no child hoards jobs
FLUSH_SECONDS = 0.005  # finished outcomes wait at most this long to be written
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
_PR_SET_PDEATHSIG = 1
_REQUEST_CODES = {"memory": 1, "max_jobs": 2, "max_age": 3}
# What a refused write of outcomes raises: the server's refusal, or a value that cannot be encoded.
REFUSED = (psycopg.Error, ValueError, TypeError)


class Child:
    def __init__(self, config: Config, slot: int, token: str, board: Board, master_pid: int, stats_fd: int) -> None:
        self.config = config
        self.slot = slot
        self.token = token
        self.board = board
        self.master_pid = master_pid
        self.stats_fd = stats_fd
        self.stopping = False
        self.in_task = False
        self.conn: psycopg.Connection | None = None
        self.queue: Queue | None = None
        self.backoff = Backoff()
        self.born = time.time()
        self.avg_duration = 0.0
        self.jobs_done = 0
        self.jobs_failed = 0
        self.done_n = 0  # jobs of the current batch finished but not yet recorded
        self.wake_r, self.wake_w = os.pipe()
        self.stats: dict[str, list[float]] = {}
        jitter = config.max_jobs_per_child_jitter
        self.max_jobs = config.max_jobs_per_child + random.randint(0, jitter) if config.max_jobs_per_child else None

    # -- life -------------------------------------------------------------------

    def run(self) -> int:
        """The child's whole life; the caller passes the result to os._exit."""
        self.install_signals()
        self.die_with_parent()
        logs.set_slot(self.slot)
        try:
            tasks.import_task_modules(self.config.tasks)
        except tasks.TaskImportError as exc:
            log.critical(str(exc), exc_info=exc.__cause__)
            return EX_BOOT
        born_uss, _, _ = measure(os.getpid())
        self.board.set("born_memory", born_uss)
        self.board.set("memory", born_uss)
        self.board.set("heartbeat", time.time())
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        self.board.set("state", IDLE)
        while not self.stopping:
            if self.board.get("request"):
                self.sleep(1.0)  # a replacement is on its way; the master will TERM us
                continue
            if not self.ensure_connection():
                continue
            try:
                jobs = self.claim()
                if jobs:
                    self.run_batch(jobs)
                else:
                    self.wait_for_work()
            except psycopg.OperationalError as exc:
                self.lost_connection(exc)
        self.board.set("state", STOPPING)
        return 0

    def install_signals(self) -> None:
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.on_term)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    def on_term(self, signum: int, frame: Any) -> None:
        # A repeated TERM (supervisord's stopasgroup plus the master's own) changes nothing.
        self.stopping = True
        if self.board.get("abort") and self.in_task:
            self.in_task = False
            raise JobTimeout()

    def die_with_parent(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # not Linux: the heartbeat thread's getppid check covers it
        if os.getppid() != self.master_pid:
            os._exit(0)

    def heartbeat(self) -> None:
        """Runs in a thread, so a long or CPU-bound job still shows the child alive."""
        while True:
            if os.getppid() != self.master_pid:
                os._exit(0)  # orphaned: our jobs' leases are no longer renewed
            self.board.set("heartbeat", time.time())
            time.sleep(HEARTBEAT_SECONDS)

    # -- the database -----------------------------------------------------------

    def ensure_connection(self) -> bool:
        if self.conn is not None and not self.conn.closed:
            return True
        try:
            self.conn = connect(self.config.dsn, application_name=f"workerpool-child-{self.slot}")
            self.queue = Queue(self.conn, self.config.schema)
            self.queue.listen()
        except psycopg.OperationalError as exc:
            self.lost_connection(exc)
            return False
        if self.backoff.failures:
            log.info("database connection restored")
        self.backoff.reset()
        return True

    def lost_connection(self, exc: Exception) -> None:
        """Close, wait a capped and jittered while (waking for TERM), then retry."""
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        delay = self.backoff.next_delay()
        if self.backoff.failures in (1, 2, 4, 8) or self.backoff.failures % 16 == 0:
            log.warning(
                "database unavailable; retrying",
                extra={"error": scrub(str(exc), self.config.dsn), "retry_in_s": round(delay, 2)},
            )
        self.sleep(delay)

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once for a signal."""
        ready, _, _ = select.select([self.wake_r], [], [], seconds)
        if ready:
            os.read(self.wake_r, 512)

    def wait_for_work(self) -> None:
        assert self.conn is not None
        # A notification that arrived during the claim sits in the backlog, not the socket.
        if any(True for _ in self.conn.notifies(timeout=0, stop_after=1)):
            return
        timeout = self.config.poll_interval
        ready, _, _ = select.select([self.conn.fileno(), self.wake_r], [], [], timeout)
        if self.wake_r in ready:
            os.read(self.wake_r, 512)
        if self.conn.fileno() in ready:
            for _ in self.conn.notifies(timeout=0):
                pass
        self.board.set("heartbeat", time.time())

    # -- claiming and running ---------------------------------------------------

    def claim_size(self) -> int:
        # Claim what this child can start within BATCH_SECONDS, judged by recent jobs.
        if self.avg_duration <= 0:
            return 1
        return max(1, min(self.config.batch_size, int(BATCH_SECONDS / self.avg_duration)))

    def claim(self) -> list[Job]:
        assert self.queue is not None
        jobs = self.queue.claim(self.token, self.claim_size(), self.config.lease_seconds, self.config.queues)
        if jobs:
            self.hold(jobs)
            self.board.set("last_claim", time.time())
        return jobs

    def hold(self, jobs: list[Job]) -> None:
        """Show the master the jobs this child holds now (none finished yet)."""
        self.done_n = 0
        self.board.hold([job.id for job in jobs])

    def run_batch(self, jobs: list[Job]) -> None:
        results: list[Result] = []
        flushed_at = time.monotonic()
        for index, job in enumerate(jobs):
            if self.stopping or self.board.get("request"):
                self.give_back(results, jobs[index:])
                return
            # Finished outcomes are written within FLUSH_SECONDS, and before a retry (which may
            # be a job that crashed its child): a crash re-runs only the jobs of that window.
            if results and (job.attempt > 1 or time.monotonic() - flushed_at > FLUSH_SECONDS):
                self.record(results, still_held=jobs[index:])
                results = []
                flushed_at = time.monotonic()
            results.append(self.execute(job))
            self.after_job()
        self.record(results)

    def execute(self, job: Job) -> Result:
        started = time.time()
        task = tasks.REGISTRY.get(job.task)
        timeout = (task.timeout if task else None) or job.timeout or self.config.job_timeout
        self.board.start_job(job.id, job.task, started, timeout)
        tasks.set_current_job(tasks.JobContext(job.id, job.task, job.queue, job.attempt, job.max_attempts))
        error: str | None = None
        outcome = "succeeded"
        value: bytes | None = None
        try:
            if task is None:
                raise NonRetryableError(f"unknown task {job.task!r}: no module in WORKERPOOL_TASKS registers it")
            kwargs = tasks.bind(task, job.payload)
            self.in_task = True
            try:
                returned = task.fn(**kwargs)
            finally:
                self.in_task = False
            value = _to_json(returned)
        except JobTimeout:
            self.stopping = True  # the slot gets a fresh child after an interrupted job
            outcome, error = self.failed(job, f"timed out after {timeout:g}s", retryable=True)
        except NonRetryableError as exc:
            outcome, error = self.failed(job, _describe(exc), retryable=False)
        except Exception as exc:
            outcome, error = self.failed(job, _describe(exc), retryable=True)
        finally:
            tasks.set_current_job(None)
        duration = time.time() - started
        self.avg_duration = duration if not self.avg_duration else 0.8 * self.avg_duration + 0.2 * duration
        self.jobs_done += 1
        self.jobs_failed += outcome != "succeeded"
        self.done_n += 1
        self.board.end_job(self.jobs_done, self.jobs_failed, self.done_n)
        self.count(job.task, outcome, duration)
        self.log_job(job, outcome, duration, error)
        return Result(job.id, outcome, value, error)  # type: ignore[arg-type]

    def failed(self, job: Job, message: str, retryable: bool) -> tuple[str, str]:
        final = not retryable or job.attempt >= job.max_attempts
        return ("dead" if final else "retry"), message

    def after_job(self) -> None:
        """Decide, between jobs, whether this child should be replaced."""
        if self.max_jobs is not None and self.jobs_done >= self.max_jobs:
            self.request_recycle("max_jobs")
            return
        limit = self.config.max_memory_mb
        if limit is None:
            return
        limit_bytes = limit * MIB
        if rss_self() <= limit_bytes:  # USS <= RSS: the cheap figure clears most jobs
            return
        uss, _, _ = measure(os.getpid())
        self.board.set("memory", uss)
        if over_soft_limit(uss, int(self.board.get("born_memory")), limit):
            self.request_recycle("memory")

    def request_recycle(self, reason: str) -> None:
        """Stop claiming and ask the master for a replacement; it answers with TERM."""
        self.board.set("request", _REQUEST_CODES[reason])
        try:
            os.kill(self.master_pid, signal.SIGUSR1)
        except ProcessLookupError:
            os._exit(0)

    def give_back(self, results: list[Result], unstarted: list[Job]) -> None:
        self.record(results)
        assert self.queue is not None
        self.with_retry(lambda q: q.give_back(self.token, [job.id for job in unstarted]))
        self.hold([])

    def record(self, results: list[Result], still_held: list[Job] | None = None) -> None:
        if results:
            try:
                written = self.with_retry(lambda q: self.complete(q, results))
            except REFUSED as exc:
                if not self.refused(exc):
                    raise
                # The batch was refused (not a lost connection): one outcome that cannot be
                # stored must not hold back the others, so each is written on its own.
                log.error("the database refused a batch of outcomes; writing them one by one", exc_info=exc)
                written = sum(self.with_retry(lambda q, r=r: self.complete_alone(q, r)) for r in results)
            if written < len(results):
                log.warning(
                    "lost the lease on some jobs before recording them; another worker re-ran them",
                    extra={"lost": len(results) - written},
                )
        self.hold(still_held or [])
        self.send_stats()

    def complete(self, queue: Queue, results: list[Result]) -> int:
        return queue.complete(self.token, results, self.config.retry_backoff, self.config.retry_backoff_max)

    def complete_alone(self, queue: Queue, result: Result) -> int:
        """Write one outcome; if the database refuses it, the job is dead with the reason."""
        try:
            return self.complete(queue, [result])
        except REFUSED as exc:
            if not self.refused(exc):
                raise
            error = storable_text(f"the database refused this job's outcome: {type(exc).__name__}: {exc}")
            return self.complete(queue, [Result(result.id, "dead", None, error)])

    def with_retry(self, action: Any) -> Any:
        """Run a write until it lands: outcomes computed during an outage are not dropped."""
        while True:
            if self.ensure_connection():
                try:
                    return action(self.queue)
                except psycopg.OperationalError as exc:
                    if self.refused(exc):
                        raise  # retrying cannot help
                    self.lost_connection(exc)  # an outage, a lock or statement timeout: back off, retry

    def refused(self, exc: BaseException) -> bool:
        """Whether a failed write can never succeed as it is (unlike an outage or a timeout)."""
        if isinstance(exc, (ValueError, TypeError)):
            return True  # the outcome cannot even be encoded
        if not isinstance(exc, psycopg.OperationalError):
            return isinstance(exc, psycopg.Error)  # a data error and its kin
        alive = self.conn is not None and not self.conn.closed and not self.conn.broken
        # Class 54, program limit exceeded (a result over jsonb's 256 MB), is refused for good.
        return alive and (exc.sqlstate or "").startswith("54")

    # -- reporting --------------------------------------------------------------

    def log_job(self, job: Job, outcome: str, duration: float, error: str | None) -> None:
        level = logging.INFO if outcome == "succeeded" else logging.WARNING
        if not log.isEnabledFor(level):
            return
        log.log(
            level,
            f"job {outcome}",
            extra={
                "job_id": job.id,
                "task": job.task,
                "attempt": job.attempt,
                "duration_ms": round(duration * 1000, 3),
                "error": error,
            },
        )

    def count(self, task: str, outcome: str, duration: float) -> None:
        entry = self.stats.get(task)
        if entry is None:
            # succeeded, retry, dead, duration sum, then one count per bucket
            entry = self.stats[task] = [0.0] * (4 + len(DURATION_BUCKETS))
        entry[("succeeded", "retry", "dead").index(outcome)] += 1
        entry[3] += duration
        bucket = bisect.bisect_left(DURATION_BUCKETS, duration)
        if bucket < len(DURATION_BUCKETS):  # longer ones count only in the total (+Inf)
            entry[4 + bucket] += 1

    def send_stats(self) -> None:
        """Hand counters to the master; dropped rather than blocking if it lags."""
        if not self.stats:
            return
        message = orjson.dumps(self.stats) + b"\n"
        self.stats = {}
        if len(message) > select.PIPE_BUF:
            return  # too many distinct tasks in one flush to send atomically
        try:
            os.write(self.stats_fd, message)
        except BlockingIOError:
            pass


def _to_json(value: Any) -> bytes:
    try:
        return to_jsonb(value)
    except ValueError as exc:
        raise NonRetryableError(f"the task's result {exc}") from None


def _describe(exc: BaseException) -> str:
    """Type, message and traceback, even when the exception's own str() fails."""
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        text = f"{type(exc).__name__} (its message could not be formatted)"
    return storable_text(text[-8000:])


def start(config: Config, slot: int, token: str, board: Board, master_pid: int, stats_fd: int) -> int:
    child = Child(config, slot, token, board, master_pid, stats_fd)
    board.set("state", STARTING)
    try:
        return child.run()
    except BaseException:
        log.exception("child crashed")
        return 1
    finally:
        logs.flush()
