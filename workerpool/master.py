"""The master: forks the children and keeps the pool whole. It never runs a job.

One class owns the loop. Signal handlers only queue the signal (the loop wakes through
`signal.set_wakeup_fd`); everything else happens in the loop, in short steps: handle the
queued signals, reap dead children, release what they held, spawn the missing ones,
recycle or kill the ones that must go, renew the leases of running jobs, publish the
status. The master holds no database connection while it forks.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil
import psycopg

from workerpool import __version__, child, status
from workerpool.board import Board
from workerpool.config import EX_CONFIG, EX_OK, EX_SOFTWARE, Config
from workerpool.db import Backoff, connect, scrub
from workerpool.memory import MIB, measure, mib, over_soft_limit
from workerpool.queue import Queue

log = logging.getLogger("workerpool.master")

HANDLED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,
)
TICK = 0.25
KILL_GRACE = 2.0  # seconds between the TERM and the KILL of a timed-out or recycled child
STABLE_UPTIME = 10.0  # a child that lived this long resets its slot's crash backoff
LATE_RELEASE = 3.0  # seconds before a dead child's jobs are looked for again (a claim in flight)
RECYCLE_REASONS = ("memory", "hard_memory", "max_jobs", "max_age", "timeout", "crash")


class Halt(Exception):
    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class ChildProc:
    pid: int
    slot: int
    token: str
    board: Board
    started_at: float
    retiring: str | None = None  # why it was asked to go (it is no longer in its slot)
    kill_at: float | None = None  # when a TERMed child gets KILL
    kill_reason: str | None = None  # the error recorded on its job if it must be killed
    count_attempt: bool = True
    memory: int = 0
    rss: int = 0
    measure: str = "uss"


@dataclass
class Release:
    token: str
    current: int | None
    unstarted: list[int]
    error: str
    count_attempt: bool
    give_back_all: bool = False
    due: float = 0.0  # monotonic time before which it waits


@dataclass
class Stats:
    recycles: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECYCLE_REASONS, 0))
    crash_restarts: int = 0
    jobs: dict[str, list[float]] = field(default_factory=dict)


class Master:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.pid = os.getpid()
        self.started_at = time.time()
        self.token_prefix = f"{socket.gethostname()}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.target = config.children
        self.children: dict[int, ChildProc] = {}
        self.slots: dict[int, int] = {}  # slot -> pid of the child serving it
        self.backoff_until: dict[int, float] = {}
        self.crash_streak: dict[int, int] = {}
        self.signals: deque[int] = deque()
        self.releases: list[Release] = []
        self.stats = Stats()
        self.stopping: str | None = None  # "graceful" or "immediate"
        self.stop_deadline = 0.0
        self.queue: Queue | None = None
        self.db_backoff = Backoff(cap=5.0)
        self.db_retry_at = 0.0
        self.db_error: str | None = None
        self.next_renew = 0.0
        self.next_rescue = 0.0
        self.next_memory = 0.0
        self.next_status = 0.0
        self.warned_born_over = False
        self.boot_failed = False
        self.publish_error: str | None = None
        self.spawned = 0
        self.last_claim = 0.0
        self.wake_r, self.wake_w = os.pipe()
        self.stats_r, self.stats_w = os.pipe()
        self.stats_buffer = b""

    # -- the loop ---------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        log.info(
            "master started",
            extra={"children": self.target, "version": __version__, "dsn": self.config.safe_dsn},
        )
        try:
            self.manage()
            while True:
                self.sleep()
                self.handle_signals()
                self.reap()
                if self.boot_failed:
                    raise Halt("a child could not start (see its error above): fix WORKERPOOL_TASKS", EX_CONFIG)
                self.read_stats()
                if self.stopping and not self.children:
                    break
                self.manage()
                self.murder()
                self.db_duties()
                self.sample_memory()
                self.publish()
        except Halt as halt:
            log.critical(str(halt))
            self.stop_now()
            status.remove(self.config.status_path)
            return halt.code
        except Exception:
            log.exception("master crashed; stopping the children")
            self.stop_now()
            status.remove(self.config.status_path)
            return EX_SOFTWARE
        self.flush_releases(final=True)
        status.remove(self.config.status_path)
        log.info("master stopped")
        return EX_OK

    def install_signals(self) -> None:
        for fd in (self.wake_r, self.wake_w, self.stats_r, self.stats_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self.queue_signal)

    def queue_signal(self, signum: int, frame: Any) -> None:
        # Only record: logging or reaping here can deadlock (gunicorn #3198).
        self.signals.append(signum)

    def sleep(self) -> None:
        timeout = 0.05 if self.signals else TICK
        try:
            ready, _, _ = select.select([self.wake_r, self.stats_r], [], [], timeout)
        except InterruptedError:
            return
        if self.wake_r in ready:
            try:
                os.read(self.wake_r, 4096)
            except BlockingIOError:
                pass

    # -- signals ----------------------------------------------------------------

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.popleft()
            handler = getattr(self, f"handle_{signal.Signals(signum).name[3:].lower()}", None)
            if handler:
                handler()

    def handle_term(self) -> None:
        if self.stopping:
            return  # a second TERM (stopasgroup, impatient operator) is not a force-quit
        log.info("stopping gracefully", extra={"timeout_s": self.config.shutdown_timeout})
        self.stopping = "graceful"
        self.stop_deadline = time.monotonic() + self.config.shutdown_timeout
        for proc in list(self.children.values()):
            self.signal_child(proc, signal.SIGTERM)

    def handle_int(self) -> None:
        if self.stopping:
            self.handle_quit()  # Ctrl-C twice: the operator means it
        else:
            self.handle_term()

    def handle_quit(self) -> None:
        log.warning("stopping immediately; running jobs go back to the queue")
        self.stopping = "immediate"
        for proc in list(self.children.values()):
            proc.kill_reason = "interrupted by an immediate stop (SIGQUIT); attempt not counted"
            proc.count_attempt = False
            self.signal_child(proc, signal.SIGKILL)

    def handle_hup(self) -> None:
        if self.stopping:
            return
        log.info("replacing every child (HUP)")
        for pid in list(self.slots.values()):
            self.retire(self.children[pid], "reload")

    def handle_ttin(self) -> None:
        if not self.stopping and self.target < 256:
            self.target += 1
            self.next_status = 0
            log.info("one child more (TTIN)", extra={"children": self.target})

    def handle_ttou(self) -> None:
        if not self.stopping and self.target > 1:
            self.target -= 1
            self.next_status = 0
            log.info("one child fewer (TTOU)", extra={"children": self.target})

    def handle_usr1(self) -> None:
        """A child asked to be recycled; its request is on its board."""
        for pid in list(self.slots.values()):
            proc = self.children[pid]
            request = proc.board.read().request
            if request:
                self.retire(proc, request)

    def handle_chld(self) -> None:
        pass  # reap() runs on every pass of the loop

    # -- children ---------------------------------------------------------------

    def manage(self) -> None:
        """Bring the pool to its target: spawn missing slots, retire surplus ones."""
        if self.stopping:
            return
        now = time.monotonic()
        for slot in range(self.target):
            if slot not in self.slots and self.backoff_until.get(slot, 0) <= now:
                self.spawn(slot)
        for slot in sorted(self.slots, reverse=True):
            if slot >= self.target:
                self.retire(self.children[self.slots[slot]], "scale")

    def spawn(self, slot: int) -> None:
        self.spawned += 1
        token = f"{self.token_prefix}/{slot}/{self.spawned}"
        board = Board()
        self.close_db()  # no connection may cross the fork
        gc.collect()
        gc.freeze()  # keep the master's objects out of the child's collections: CoW pages stay shared
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            log.exception("fork failed", extra={"child_slot": slot})
            self.backoff_until[slot] = time.monotonic() + 1.0
            return
        if pid == 0:  # the child
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in HANDLED:
                    signal.signal(sig, signal.SIG_DFL)
                for fd in (self.wake_r, self.wake_w, self.stats_r):
                    os.close(fd)
                for proc in self.children.values():
                    proc.board.close()
                os.set_blocking(self.stats_w, False)
                code = child.start(self.config, slot, token, board, self.pid, self.stats_w)
            finally:
                os._exit(code)  # never run the master's atexit handlers or finalizers
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.children[pid] = ChildProc(pid, slot, token, board, time.time())
        self.slots[slot] = pid
        log.info("child started", extra={"child_slot": slot, "child_pid": pid})

    def retire(self, proc: ChildProc, reason: str) -> None:
        """Replace a child after its current job: the replacement starts first."""
        if proc.retiring:
            return
        proc.retiring = reason
        self.next_status = 0  # publish the change now, not at the next second
        if self.slots.get(proc.slot) == proc.pid:
            del self.slots[proc.slot]
        if reason in self.stats.recycles:
            self.stats.recycles[reason] += 1
            snap = proc.board.read()
            log.info(
                f"recycling child ({reason})",
                extra={
                    "child_slot": proc.slot,
                    "child_pid": proc.pid,
                    "reason": reason,
                    "memory_mb": mib(max(proc.memory, snap.memory)),
                    "born_memory_mb": mib(snap.born_memory),
                    "jobs_done": snap.jobs_done,
                    "age_s": round(time.time() - proc.started_at, 1),
                },
            )
        if proc.slot < self.target and not self.stopping:
            self.spawn(proc.slot)
        self.signal_child(proc, signal.SIGTERM)

    def kill(self, proc: ChildProc, reason: str, error: str) -> None:
        """Stop a child mid-job: KILL at once, or for a timeout TERM first, KILL after a grace."""
        if proc.kill_at is not None:
            return
        proc.kill_reason = error
        proc.kill_at = time.monotonic() + KILL_GRACE
        self.next_status = 0
        self.stats.recycles[reason] += 1
        log.warning(error, extra={"child_slot": proc.slot, "child_pid": proc.pid, "reason": reason})
        if self.slots.get(proc.slot) == proc.pid:
            del self.slots[proc.slot]
        proc.retiring = reason
        if reason == "timeout":
            proc.board.set("abort", 1)  # the child's TERM handler raises JobTimeout in the task
            self.signal_child(proc, signal.SIGTERM)
        else:
            self.signal_child(proc, signal.SIGKILL)

    def signal_child(self, proc: ChildProc, sig: int) -> None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass  # already dead; reap() will collect it

    def reap(self) -> None:
        """Collect every dead child: one SIGCHLD can stand for several."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.children.pop(pid, None)
            if proc is not None:
                self.reaped(proc, wait_status)

    def reaped(self, proc: ChildProc, wait_status: int) -> None:
        self.next_status = 0
        snap = proc.board.read()
        proc.board.close()
        if self.slots.get(proc.slot) == proc.pid:
            del self.slots[proc.slot]
        how = describe_exit(wait_status)
        clean = os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
        if snap.state == "starting" and os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == child.EX_BOOT:
            # Only before the child's first job: a task may exit with any code. Raised by the
            # loop, not here: reap() also runs while stopping after a halt.
            self.boot_failed = True
        level = logging.INFO if clean else logging.ERROR
        log.log(
            level,
            f"child {how}",
            extra={"child_slot": proc.slot, "child_pid": proc.pid, "job_id": snap.job_id},
        )
        if not clean and not proc.retiring and not self.stopping:
            self.stats.recycles["crash"] += 1
            self.stats.crash_restarts += 1
            self.backoff(proc)
        if snap.held or snap.job_id or not clean:
            error = proc.kill_reason or f"the child running it {how}"
            self.releases.append(
                Release(
                    token=proc.token,
                    current=snap.job_id,
                    unstarted=[i for i in snap.held[snap.done_n :] if i != snap.job_id],
                    error=error,
                    count_attempt=proc.count_attempt,
                )
            )
            if not clean:
                self.releases.append(
                    Release(proc.token, None, [], "", False, give_back_all=True, due=time.monotonic() + LATE_RELEASE)
                )
            self.flush_releases()

    def backoff(self, proc: ChildProc) -> None:
        """Delay the restart of a slot whose children keep dying young."""
        if time.time() - proc.started_at >= STABLE_UPTIME:
            self.crash_streak[proc.slot] = 0
            return
        streak = self.crash_streak.get(proc.slot, 0) + 1
        self.crash_streak[proc.slot] = streak
        delay = min(15.0, 0.25 * 2 ** (streak - 1))
        self.backoff_until[proc.slot] = time.monotonic() + delay

    def murder(self) -> None:
        """Enforce job timeouts, the stop deadline and the KILL after a TERM's grace."""
        now = time.monotonic()
        wall = time.time()
        for proc in list(self.children.values()):
            if proc.kill_at is not None and now >= proc.kill_at:
                self.signal_child(proc, signal.SIGKILL)
                continue
            snap = proc.board.read()
            if snap.job_timeout and snap.job_started and wall - snap.job_started > snap.job_timeout:
                self.kill(proc, "timeout", f"job {snap.job_id} timed out after {snap.job_timeout:g}s")
        if self.stopping == "graceful" and now >= self.stop_deadline and self.children:
            for proc in list(self.children.values()):
                if proc.kill_at is None:
                    proc.kill_reason = (
                        f"interrupted by shutdown after WORKERPOOL_SHUTDOWN_TIMEOUT="
                        f"{self.config.shutdown_timeout:g}s; attempt not counted"
                    )
                    proc.count_attempt = False
                    proc.kill_at = now
                    self.signal_child(proc, signal.SIGKILL)

    def sample_memory(self) -> None:
        now = time.monotonic()
        if now < self.next_memory:
            return
        self.next_memory = now + self.config.memory_check_interval
        soft = self.config.max_memory_mb
        hard = self.config.hard_memory_mb
        for proc in list(self.children.values()):
            try:
                proc.memory, proc.rss, proc.measure = measure(proc.pid)
            except psutil.Error:
                continue
            snap = proc.board.read()
            if soft and not self.warned_born_over and snap.born_memory > soft * MIB:
                self.warned_born_over = True
                log.warning(
                    f"a fresh child already uses {mib(snap.born_memory)} MiB, over "
                    f"WORKERPOOL_MAX_MEMORY_MB={soft:g}: children are recycled for memory only "
                    "once they grow by a quarter of the limit beyond their size at birth",
                    extra={"born_memory_mb": mib(snap.born_memory), "limit_mb": soft},
                )
            if proc.kill_at is not None:
                continue
            if hard and proc.memory > hard * MIB:
                self.kill(
                    proc,
                    "hard_memory",
                    f"child killed: {mib(proc.memory)} MiB is over WORKERPOOL_HARD_MEMORY_MB={hard:g}",
                )
            elif (
                soft
                and not proc.retiring
                and snap.jobs_done > 0
                and over_soft_limit(proc.memory, snap.born_memory, soft)
            ):
                self.retire(proc, "memory")
            elif (
                self.config.max_child_age
                and not proc.retiring
                and time.time() - proc.started_at > self.config.max_child_age
            ):
                self.retire(proc, "max_age")

    def stop_now(self) -> None:
        for proc in list(self.children.values()):
            self.signal_child(proc, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)

    # -- the database -----------------------------------------------------------

    def db(self) -> Queue | None:
        """The master's queue on its own connection, or None while the database is away."""
        if self.queue is not None and not self.queue.conn.closed:
            return self.queue
        if time.monotonic() < self.db_retry_at:
            return None
        try:
            conn = connect(self.config.dsn, application_name="workerpool-master", connect_timeout=2)
            conn.execute("SET statement_timeout = '5s'")
        except psycopg.OperationalError as exc:
            self.db_failed(exc)
            return None
        if self.db_error:
            log.info("database connection restored")
        self.db_error = None
        self.db_backoff.reset()
        self.queue = Queue(conn, self.config.schema)
        return self.queue

    def db_failed(self, exc: Exception) -> None:
        self.close_db()
        delay = self.db_backoff.next_delay()
        self.db_retry_at = time.monotonic() + delay
        message = scrub(str(exc), self.config.dsn).strip()
        if self.db_backoff.failures in (1, 2, 4, 8) or self.db_backoff.failures % 16 == 0:
            log.warning("database unavailable", extra={"error": message, "retry_in_s": round(delay, 2)})
        self.db_error = message or type(exc).__name__

    def close_db(self) -> None:
        if self.queue is not None:
            self.queue.conn.close()
        self.queue = None

    def db_duties(self) -> None:
        now = time.monotonic()
        lease = self.config.lease_seconds
        if now >= self.next_renew:
            queue = self.db()
            if queue is None:
                return
            try:
                queue.renew([(p.token, p.board.read().held) for p in self.children.values()], lease)
                self.next_renew = now + lease / 3
                if now >= self.next_rescue:
                    for job_id, state in queue.rescue_expired():
                        log.warning("rescued a job whose lease expired", extra={"job_id": job_id, "status": state})
                    self.next_rescue = now + lease / 2
            except psycopg.Error as exc:
                self.db_failed(exc)
                return
        self.flush_releases()

    def flush_releases(self, final: bool = False) -> None:
        attempts = 3 if final else 1
        while attempts:
            now = time.monotonic()
            release = next((r for r in self.releases if final or r.due <= now), None)
            if release is None:
                break
            queue = self.db()
            if queue is None:
                if not final:
                    return
                attempts -= 1
                time.sleep(1)
                self.db_retry_at = 0
                continue
            try:
                rows = queue.release(
                    release.token,
                    current=release.current,
                    unstarted=release.unstarted,
                    error=release.error,
                    count_attempt=release.count_attempt,
                    backoff=self.config.retry_backoff,
                    backoff_max=self.config.retry_backoff_max,
                    give_back_all=release.give_back_all,
                )
            except psycopg.Error as exc:
                self.db_failed(exc)
                attempts -= 1
                continue
            self.releases.remove(release)
            for job_id, state in rows:
                log.log(
                    logging.WARNING if job_id == release.current else logging.INFO,
                    "released a job its child left behind",
                    extra={
                        "job_id": job_id,
                        "status": state,
                        "error": release.error if job_id == release.current else None,
                    },
                )
        if final and self.releases:
            log.error(
                "could not release jobs before exiting; their leases will expire and another pool will rescue them",
                extra={"pending": len(self.releases)},
            )

    # -- reporting --------------------------------------------------------------

    def read_stats(self) -> None:
        while True:
            try:
                chunk = os.read(self.stats_r, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.stats_buffer += chunk
        *lines, self.stats_buffer = self.stats_buffer.split(b"\n")
        for line in lines:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            for task_name, counts in message.items():
                total = self.stats.jobs.setdefault(task_name, [0.0] * len(counts))
                for i, value in enumerate(counts):
                    total[i] += value

    def publish(self) -> None:
        now = time.monotonic()
        if now < self.next_status:
            return
        self.next_status = now + 1.0
        try:
            status.write(self.config.status_path, self.snapshot())
        except OSError as exc:
            # A full or broken runtime directory blinds the health app; it must not stop the pool.
            if self.publish_error != str(exc):
                log.error(
                    "cannot write the status snapshot", extra={"path": self.config.status_path, "error": str(exc)}
                )
            self.publish_error = str(exc)
        else:
            self.publish_error = None

    def snapshot(self) -> dict[str, Any]:
        children = []
        for proc in sorted(self.children.values(), key=lambda p: (p.slot, p.started_at)):
            snap = proc.board.read()
            self.last_claim = max(self.last_claim, snap.last_claim)
            children.append(
                {
                    "slot": proc.slot,
                    "pid": proc.pid,
                    "state": "stopping" if proc.retiring or self.stopping else snap.state,
                    "job_id": snap.job_id,
                    "task": snap.task,
                    "job_started_at": snap.job_started,
                    "jobs_done": snap.jobs_done,
                    "jobs_failed": snap.jobs_failed,
                    "memory_bytes": proc.memory or snap.memory,
                    "rss_bytes": proc.rss,
                    "memory_measure": proc.measure,
                    "born_memory_bytes": snap.born_memory,
                    "started_at": proc.started_at,
                    "last_heartbeat": snap.heartbeat or None,
                    "last_claim_at": snap.last_claim or None,
                    "retiring": proc.retiring,
                }
            )
        return {
            "written_at": time.time(),
            "master": {
                "pid": self.pid,
                "started_at": self.started_at,
                "version": __version__,
                "state": "stopping" if self.stopping else "running",
            },
            "desired_children": self.target,
            "children": children,
            "recycles": self.stats.recycles,
            "crash_restarts": self.stats.crash_restarts,
            "jobs": self.stats.jobs,
            "duration_buckets": child.DURATION_BUCKETS,
            "database": {"ok": self.db_error is None, "error": self.db_error},
            "pending_releases": len(self.releases),
            "last_claim_at": self.last_claim or None,
        }


def describe_exit(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return f"was killed by signal {sig} ({name})"
    return f"exited with code {os.WEXITSTATUS(wait_status)}"
