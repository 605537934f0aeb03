"""Chaos: the real pool under random faults, then an account of every job it was given.

    python -m bench.chaos --seed 7 --minutes 5 --children 4

It starts a private PostgreSQL (tests/pgserver.py), feeds `record` jobs (every run of one
leaves a row in `executions`) to a real `workerpool run`, and meanwhile, at times and on
victims drawn from the seed: SIGKILLs children, SIGKILLs the master, restarts PostgreSQL
(fast or immediate), SIGTERMs the master and SIGHUPs it. A master that exits is started
again after a short delay, as supervisord would. Then it stops injecting, lets the pool
drain, stops it and checks every job in the database:

- lost: a job that is neither `succeeded` nor `dead` after the drain (or vanished);
- unaccounted: a job with more runs than attempts, or two runs that saw the same attempt
  number (a rerun nobody counted);
- unexplained: a job that ran again although no fault interrupted its previous run;
- and of the processes: a master that exited without being told to, a process that outlived
  its killed master, anything left running after the final stop.

Exit status: 0 every check passed, 1 a check failed, 2 the run could not be carried out.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import psutil
import psycopg

from workerpool import enqueue_many
from workerpool.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # the private server class lives with the tests: import it, never copy it
from pgserver import PrivatePostgres  # noqa: E402

# Faults per minute. The 5-minute run must inject at least 30 child kills, 5 master kills and
# 3 PostgreSQL restarts; these rates give 40, 7 and 5, with room for faults deferred past the end.
RATES = {
    "child_kill": 8.0,
    "master_kill": 1.4,
    "pg_restart": 1.0,
    "master_term": 0.6,
    "master_hup": 0.8,
}
WARMUP = 3.0  # seconds before the first fault: let the pool start and jobs flow
# Chance that PostgreSQL's return is followed, within AFTERSHOCK_WITHIN seconds, by an extra child
# kill: failures cluster, and a recovery (reconnections, outcomes lost in the crash, leases
# overdue) is when a second fault does the most harm.
AFTERSHOCK = 0.5
AFTERSHOCK_WITHIN = (0.5, 3.0)
DEFER = 0.5  # a fault that cannot be injected now (no master, database down) is retried this much later
TICK = 0.05
LONG_SHARE = 0.03  # share of jobs that run 1-2.5 s instead of 0-300 ms
BURST_SHARE = 0.2  # share of waves made of instant jobs, which children claim in batches
CLOCK_SLACK = 0.5  # seconds: executions are stamped by the database's clock, faults by ours
DATABASE = "chaos"
RELEASED = "released a job its child left behind"
NOT_COUNTED = "attempt not counted"  # how the master words a release that gives the attempt back


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the chaos script: clean up and leave."""


@dataclass
class Fault:
    kind: str
    begin: float  # wall clock, comparable with executions.started_at
    end: float
    # The processes it killed (a master kill: the whole group); None for a database restart,
    # which may interrupt a run in any process.
    pids: frozenset[int] | None
    detail: str = ""


@dataclass
class MasterExit:
    pid: int
    returncode: int
    cause: str  # "killed", "stopped" (after our SIGTERM) or "unexpected"


@dataclass
class Verdict:
    enqueued: int = 0
    succeeded: int = 0
    dead: int = 0
    lost: list[int] = field(default_factory=list)
    ran_more_than_once: int = 0
    max_runs: int = 0
    unaccounted_given_back: int = 0  # of the unaccounted: the master logged "attempt not counted"
    unaccounted: list[int] = field(default_factory=list)
    unexplained: list[int] = field(default_factory=list)
    succeeded_without_run: list[int] = field(default_factory=list)
    # Attempts beyond the recorded runs: not a failure (counting too much loses nothing), but
    # each one brings a job closer to `dead` without it having run.
    extra_attempts: int = 0
    jobs_with_extra_attempts: int = 0

    @property
    def failures(self) -> list[str]:
        checks = {
            "lost jobs": self.lost,
            "runs not accounted for by attempts": self.unaccounted,
            "reruns no fault explains": self.unexplained,
            "succeeded without a recorded run": self.succeeded_without_run,
        }
        return [f"{name}: {ids[:20]}" for name, ids in checks.items() if ids]


def group_members(pgid: int) -> set[int]:
    """Live processes of a process group (zombies are dead already)."""
    members = set()
    for proc in psutil.process_iter(["status"]):
        with suppress(ProcessLookupError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.add(proc.pid)
    return members


# -- the database -------------------------------------------------------------------------


class Database:
    """The private server, stopped and started again on demand."""

    def __init__(self, server: PrivatePostgres) -> None:
        self.server = server
        self.server.start()
        self.up = True
        self.start_at = 0.0  # monotonic time the stopped server is due back
        self.restart: Fault | None = None
        self.modes: Counter[str] = Counter()
        self.dsn = self.server.create_database(DATABASE)
        with psycopg.connect(self.server.dsn, autocommit=True) as admin:
            # The server runs with synchronous_commit=off, so an immediate stop could forget the
            # harness's own enqueues: jobs lost by the harness, not by the pool. The pool's
            # asynchronous outcome writes (queue.complete sets it per transaction) stay as they are.
            admin.execute(f"ALTER DATABASE {DATABASE} SET synchronous_commit = on")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate(conn, "workerpool")
            conn.execute(
                "CREATE TABLE executions (job_id bigint, pid int, attempt int,"
                " started_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )

    def stop(self, mode: str, pause: float) -> Fault:
        began = time.time()
        self.server.stop(mode)
        self.up = False
        self.start_at = time.monotonic() + pause
        self.modes[mode] += 1
        self.restart = Fault("pg_restart", began, math.inf, None, f"-m {mode}, down {pause:.1f}s")
        return self.restart

    def supervise(self, now: float) -> bool:
        """Start the server when it is due back; True when it just came back."""
        if self.up or now < self.start_at:
            return False
        self.server.start()
        self.up = True
        if self.restart is not None:
            self.restart.end = time.time()
            self.restart = None
        return True


# -- the pool, supervised -----------------------------------------------------------------


class Supervisor:
    """Runs `workerpool run` and starts it again whenever it exits, as supervisord would."""

    def __init__(self, env: dict[str, str], log_path: Path, rng: random.Random, stop_timeout: float) -> None:
        self.env = env
        self.log_path = log_path
        self.rng = rng
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_at = 0.0
        self.expected: str | None = None  # "killed" or "stopped": what we did to the running master
        self.term: Fault | None = None  # the pending SIGTERM fault, ended by the master's exit
        self.groups: list[int] = []  # every master's process group (its pid: a session of its own)
        self.exits: list[MasterExit] = []
        self.orphans: list[int] = []  # processes that outlived their killed master
        self.keep_running = True

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workerpool.cli", "run"],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        self.groups.append(self.proc.pid)
        self.expected = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervise(self, now: float) -> MasterExit | None:
        """Notice a master's exit and start the next one when its delay is over."""
        exited = None
        if self.proc is not None and self.proc.poll() is not None:
            exited = self.exited(self.proc)
            self.proc = None
            self.restart_at = now + self.rng.uniform(0.5, 2.0)
        if self.proc is None and self.keep_running and now >= self.restart_at:
            self.start()
        return exited

    def exited(self, proc: subprocess.Popen[bytes]) -> MasterExit:
        code = proc.returncode
        if self.expected == "killed" and code == -signal.SIGKILL:
            cause = "killed"
        elif self.expected == "stopped" and code == 0:
            cause = "stopped"
        else:
            cause = "unexpected"
        if self.term is not None:
            self.term.end = time.time()
            self.term = None
        # Children die with their master (PR_SET_PDEATHSIG): give them a moment, then look.
        deadline = time.monotonic() + 3
        while (left := group_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            self.orphans.extend(sorted(left))
            self.kill_group(proc.pid)
        record = MasterExit(proc.pid, code, cause)
        self.exits.append(record)
        return record

    def children(self) -> list[int]:
        if not self.running:
            return []
        assert self.proc is not None
        with suppress(psutil.NoSuchProcess):
            kids = psutil.Process(self.proc.pid).children()
            return sorted(k.pid for k in kids if k.status() != psutil.STATUS_ZOMBIE)
        return []

    def signal_master(self, sig: int, expected: str | None) -> set[int]:
        """Send `sig` to the master; return its group as it was around the signal."""
        assert self.proc is not None
        members = group_members(self.proc.pid)
        self.proc.send_signal(sig)
        if expected:
            self.expected = expected
        return members | group_members(self.proc.pid)

    def kill_group(self, pgid: int) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def stop(self) -> MasterExit | None:
        """The final, graceful stop; SIGKILL if it does not come in time."""
        self.keep_running = False
        if not self.running:
            return None
        assert self.proc is not None
        self.signal_master(signal.SIGTERM, "stopped")
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(self.proc.pid)
            self.proc.wait(30)
        record = self.exited(self.proc)
        self.proc = None
        return record

    def leftovers(self) -> set[int]:
        return set().union(*(group_members(g) for g in self.groups)) if self.groups else set()

    def cleanup(self) -> None:
        """Nothing any master started may outlive the chaos run, however it ends."""
        self.keep_running = False
        if self.proc is not None and self.proc.poll() is None:
            self.kill_group(self.proc.pid)
            self.proc.wait(30)
        for pgid in self.groups:
            self.kill_group(pgid)


# -- jobs -----------------------------------------------------------------------------------


class Feeder:
    """Keeps a backlog of `record` jobs queued, and remembers every id it enqueued."""

    def __init__(self, dsn: str, rng: random.Random, backlog: int) -> None:
        self.dsn = dsn
        self.rng = rng
        self.backlog = backlog
        self.conn: psycopg.Connection | None = None
        self.next_at = 0.0
        self.enqueued: list[int] = []
        # Ids whose COMMIT failed in flight: committed or not, only the database can say.
        self.uncertain: list[int] = []

    def payload(self) -> dict[str, float]:
        if self.rng.random() < LONG_SHARE:
            return {"seconds": round(self.rng.uniform(1.0, 2.5), 3)}
        return {"seconds": round(self.rng.uniform(0.0, 0.3), 3)}

    def wave(self, queued: int) -> list[dict[str, float]]:
        """Mostly jobs of varied length; now and then a burst of instant ones, claimed in
        batches, so that faults also land on jobs claimed but not yet started."""
        if self.rng.random() < BURST_SHARE:
            return [{"seconds": 0.0} for _ in range(4 * self.backlog)]
        return [self.payload() for _ in range(self.backlog - queued + self.rng.randint(0, self.backlog))]

    def tick(self, now: float) -> None:
        if now < self.next_at:
            return
        self.next_at = now + 0.5
        ids: list[int] = []
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
            row = self.conn.execute("SELECT count(*) FROM workerpool.jobs WHERE status = 'queued'").fetchone()
            queued = row[0] if row else 0
            if queued >= self.backlog:
                return
            with self.conn.transaction():
                ids = enqueue_many([{"name": "record", "payload": p} for p in self.wave(queued)], conn=self.conn)
        except psycopg.OperationalError:
            self.uncertain.extend(ids)
            self.close()
            return
        self.enqueued.extend(ids)

    def settle(self, conn: psycopg.Connection) -> None:
        if self.uncertain:
            rows = conn.execute("SELECT id FROM workerpool.jobs WHERE id = ANY(%s)", (self.uncertain,)).fetchall()
            self.enqueued.extend(r[0] for r in rows)
            self.uncertain = []

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def unfinished(dsn: str) -> int | None:
    """Jobs still queued or running, or None while the database cannot say."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM workerpool.jobs WHERE status IN ('queued', 'running')").fetchone()
            return row[0] if row else 0
    except psycopg.OperationalError:
        return None


# -- faults -----------------------------------------------------------------------------------


def schedule(rng: random.Random, seconds: float, rates: dict[str, float]) -> list[tuple[float, int, str]]:
    """(offset, tie-breaker, kind) for every fault: each kind at least once, spread evenly.

    Each kind's window is cut into as many slots as it has faults, with one fault at a random
    point of each slot, so the counts are exact and no stretch of the run is spared.
    """
    window = max(1.0, seconds - WARMUP)
    plan = []
    for kind, per_minute in rates.items():
        n = max(1, round(per_minute * seconds / 60))
        slot = window / n
        plan += [(WARMUP + slot * (i + rng.random()), kind) for i in range(n)]
    plan.sort()
    return [(at, i, kind) for i, (at, kind) in enumerate(plan)]


class Chaos:
    """Injects one fault of a kind, or says it cannot right now (None)."""

    def __init__(self, rng: random.Random, pool: Supervisor, db: Database) -> None:
        self.rng = rng
        self.pool = pool
        self.db = db

    def inject(self, kind: str) -> Fault | None:
        return getattr(self, kind)()

    def child_kill(self) -> Fault | None:
        children = self.pool.children()
        if not children:
            return None
        victim = self.rng.choice(children)
        began = time.time()
        with suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return Fault("child_kill", began, began, frozenset({victim}), f"pid {victim}")

    def master_kill(self) -> Fault | None:
        if not self.pool.children():  # a master still starting up holds no job worth interrupting
            return None
        began = time.time()
        members = self.pool.signal_master(signal.SIGKILL, "killed")
        return Fault("master_kill", began, began, frozenset(members), f"{len(members) - 1} children with it")

    def master_term(self) -> Fault | None:
        if not self.pool.children() or self.pool.expected:
            return None
        began = time.time()
        members = self.pool.signal_master(signal.SIGTERM, "stopped")
        # It may kill mid-job children at its shutdown deadline: its exit ends this fault.
        self.pool.term = Fault("master_term", began, math.inf, frozenset(members), "graceful stop, then restart")
        return self.pool.term

    def master_hup(self) -> Fault | None:
        if not self.pool.children() or self.pool.expected:
            return None
        began = time.time()
        self.pool.signal_master(signal.SIGHUP, None)
        # A reload interrupts nothing: every child finishes its job first. It explains no rerun.
        return Fault("master_hup", began, began, frozenset(), "replace every child")

    def pg_restart(self) -> Fault | None:
        if not self.db.up:
            return None
        return self.db.stop(self.rng.choice(("fast", "immediate")), self.rng.uniform(1.0, 4.0))


# -- the verdict --------------------------------------------------------------------------------


class Execution(NamedTuple):
    """One row of `executions`: a run of a job, as the `record` task saw it."""

    pid: int
    started: float
    attempt: int


def given_back(log_path: Path) -> set[int]:
    """Jobs whose interrupted run the master released with its attempt given back.

    It does so by design when an orderly stop runs out of time (or on SIGQUIT): such a run
    is in the master's log, not in `attempts`, and the next run sees the same attempt number.
    """
    jobs = set()
    for line in log_path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue
        with suppress(orjson.JSONDecodeError):
            entry = orjson.loads(line)
            if entry.get("msg") == RELEASED and NOT_COUNTED in (entry.get("error") or ""):
                jobs.add(entry["job_id"])
    return jobs


def explained(run: Execution, next_start: float, faults: list[Fault]) -> bool:
    """A fault that could have interrupted `run` after it began and before the next run began."""
    return any(
        (f.pids is None or run.pid in f.pids)
        and f.end >= run.started - CLOCK_SLACK
        and f.begin <= next_start + CLOCK_SLACK
        for f in faults
    )


def judge(dsn: str, feeder: Feeder, faults: list[Fault], log_path: Path) -> Verdict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        feeder.settle(conn)
        query = "SELECT id, status, attempts FROM workerpool.jobs WHERE id = ANY(%s)"
        jobs = {r[0]: (r[1], r[2]) for r in conn.execute(query, (feeder.enqueued,))}
        runs: dict[int, list[Execution]] = {}
        for job_id, *run in conn.execute(
            "SELECT job_id, pid, extract(epoch FROM started_at)::float8, attempt FROM executions"
            " ORDER BY job_id, started_at"
        ):
            runs.setdefault(job_id, []).append(Execution(*run))
    released_uncounted = given_back(log_path)
    v = Verdict(enqueued=len(feeder.enqueued))
    for job_id in feeder.enqueued:
        status, attempts = jobs.get(job_id, ("vanished", 0))
        job_runs = runs.get(job_id, [])
        v.succeeded += status == "succeeded"
        v.dead += status == "dead"
        if status not in ("succeeded", "dead"):
            v.lost.append(job_id)
        if status == "succeeded" and not job_runs:
            v.succeeded_without_run.append(job_id)
        v.max_runs = max(v.max_runs, len(job_runs))
        if attempts > len(job_runs):
            v.extra_attempts += attempts - len(job_runs)
            v.jobs_with_extra_attempts += 1
        # Every run must have had an attempt of its own: never more runs than attempts, and
        # no attempt number seen by two runs.
        if len(job_runs) > attempts or len({r.attempt for r in job_runs}) < len(job_runs):
            v.unaccounted.append(job_id)
            v.unaccounted_given_back += job_id in released_uncounted
        if len(job_runs) > 1:
            v.ran_more_than_once += 1
            if not all(explained(run, later.started, faults) for run, later in itertools.pairwise(job_runs)):
                v.unexplained.append(job_id)
    return v


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Options:
    seed: int
    seconds: float
    rates: dict[str, float]
    children: int
    lease: float
    shutdown_timeout: float
    drain_timeout: float
    json_path: Path | None
    log_path: Path | None
    quiet: bool


def pool_env(dsn: str, runtime_dir: Path, opts: Options) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKERPOOL_")}
    env.update(
        {
            "WORKERPOOL_DSN": dsn,
            "WORKERPOOL_RUNTIME_DIR": str(runtime_dir),
            "WORKERPOOL_TASKS": "workerpool.examples,helper_tasks",
            "WORKERPOOL_CHILDREN": str(opts.children),
            # Jobs of a killed master come back once their lease expires: keep that short.
            "WORKERPOOL_LEASE_SECONDS": f"{opts.lease:g}",
            "WORKERPOOL_SHUTDOWN_TIMEOUT": f"{opts.shutdown_timeout:g}",
            "WORKERPOOL_POLL_INTERVAL": "0.5",
            "WORKERPOOL_RETRY_BACKOFF": "0.2",
            "WORKERPOOL_RETRY_BACKOFF_MAX": "2",
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
        }
    )
    return env


@contextmanager
def handling_signals(handler: Any) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interruptible() -> Any:
    """SIGTERM and SIGINT become an exception, so cleanup runs however the run is stopped."""

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    return handling_signals(interrupt)


def ignoring_signals() -> Any:
    """A second Ctrl-C must not cut the cleanup short and leave a server or a pool behind."""
    return handling_signals(signal.SIG_IGN)


class Run:
    """One chaos run. Every resource it takes is given back by `close`, however far it got."""

    def __init__(self, opts: Options, workdir: Path, log_path: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.log_path = log_path
        self.rng = random.Random(opts.seed)
        self.started = time.monotonic()
        self.started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.faults: list[Fault] = []
        self.skipped: Counter[str] = Counter()
        self.aftershocks = 0  # child kills added after PostgreSQL came back
        self.server: PrivatePostgres | None = None
        self.db: Database | None = None
        self.pool: Supervisor | None = None
        self.feeder: Feeder | None = None
        self.drain_seconds = 0.0
        self.leftovers: set[int] = set()

    def say(self, message: str) -> None:
        if not self.opts.quiet:
            print(f"[{time.monotonic() - self.started:7.1f}s] {message}", flush=True)

    def execute(self) -> Verdict:
        self.server = PrivatePostgres()
        db = self.db = Database(self.server)
        pool = self.pool = Supervisor(
            pool_env(db.dsn, self.workdir / "run", self.opts),
            self.log_path,
            self.rng,
            stop_timeout=self.opts.shutdown_timeout + 30,
        )
        feeder = self.feeder = Feeder(db.dsn, self.rng, backlog=8 * self.opts.children)
        self.say(f"pool log: {self.log_path}")
        pool.start()
        self.inject_faults(db, pool, feeder)
        self.drain(db, pool, feeder)
        return judge(db.dsn, feeder, self.faults, self.log_path)

    def supervise(self, db: Database, pool: Supervisor) -> bool:
        """Keep the server and the master coming back; True when the server just came back."""
        now = time.monotonic()
        came_back = db.supervise(now)
        exited = pool.supervise(now)
        if exited is not None and exited.cause == "unexpected":
            self.say(f"master {exited.pid} exited unexpectedly with status {exited.returncode}")
        return came_back

    def inject_faults(self, db: Database, pool: Supervisor, feeder: Feeder) -> None:
        chaos = Chaos(self.rng, pool, db)
        plan = schedule(self.rng, self.opts.seconds, self.opts.rates)
        heapq.heapify(plan)
        ties = itertools.count(len(plan))
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < self.opts.seconds:
            if self.supervise(db, pool) and self.rng.random() < AFTERSHOCK:
                heapq.heappush(plan, (elapsed + self.rng.uniform(*AFTERSHOCK_WITHIN), next(ties), "child_kill"))
                self.aftershocks += 1
            if db.up:
                feeder.tick(time.monotonic())
            while plan and plan[0][0] <= elapsed:
                _, tie, kind = heapq.heappop(plan)
                fault = chaos.inject(kind)
                if fault is None:
                    heapq.heappush(plan, (elapsed + DEFER, tie, kind))
                    break
                self.faults.append(fault)
                self.say(f"{kind:12} {fault.detail}")
            time.sleep(TICK)
        self.skipped.update(kind for _, _, kind in plan)

    def drain(self, db: Database, pool: Supervisor, feeder: Feeder) -> None:
        """No more faults: bring everything back and wait for every job to finish."""
        feeder.close()
        began = time.monotonic()
        db.start_at = 0.0  # a stopped server comes back now
        self.say("faults over; draining")
        while time.monotonic() - began < self.opts.drain_timeout:
            self.supervise(db, pool)
            if db.up and unfinished(db.dsn) == 0:
                break
            time.sleep(0.2)
        self.drain_seconds = time.monotonic() - began
        pool.stop()
        self.say(f"drain took {self.drain_seconds:.1f}s; pool stopped")
        time.sleep(1)  # stragglers, if any, get a moment before they count as left behind
        self.leftovers = pool.leftovers()

    def close(self) -> None:
        if self.feeder is not None:
            self.feeder.close()
        if self.pool is not None:
            self.pool.cleanup()
        if self.server is not None:
            self.server.remove()

    def report(self, v: Verdict) -> dict[str, Any]:
        assert self.db is not None and self.pool is not None
        kinds = Counter(f.kind for f in self.faults)
        return {
            "seed": self.opts.seed,
            "started_at": self.started_at,
            "children": self.opts.children,
            "fault_seconds": self.opts.seconds,
            "lease_seconds": self.opts.lease,
            "enqueued": v.enqueued,
            "succeeded": v.succeeded,
            "dead": v.dead,
            "lost": len(v.lost),
            "ran_more_than_once": v.ran_more_than_once,
            "max_runs": v.max_runs,
            "unaccounted_given_back": v.unaccounted_given_back,
            "unaccounted": len(v.unaccounted),
            "unexplained": len(v.unexplained),
            "succeeded_without_run": len(v.succeeded_without_run),
            "extra_attempts": v.extra_attempts,
            "jobs_with_extra_attempts": v.jobs_with_extra_attempts,
            "faults": {kind: kinds[kind] for kind in RATES},
            "pg_restart_modes": dict(self.db.modes),
            "faults_skipped": dict(self.skipped),
            "aftershocks": self.aftershocks,
            "master_exits": dict(Counter(e.cause for e in self.pool.exits)),
            "unexpected_master_exits": [asdict(e) for e in self.pool.exits if e.cause == "unexpected"],
            "orphans": len(self.pool.orphans),
            "leftover_processes": len(self.leftovers),
            "drain_seconds": round(self.drain_seconds, 1),
            "wall_seconds": round(time.monotonic() - self.started, 1),
            "failures": v.failures + self.process_failures(),
        }

    def process_failures(self) -> list[str]:
        assert self.pool is not None
        failures = [
            f"master {e.pid} exited on its own with status {e.returncode}"
            for e in self.pool.exits
            if e.cause == "unexpected"
        ]
        if self.pool.orphans:
            failures.append(f"processes outlived their killed master: {self.pool.orphans}")
        if self.leftovers:
            failures.append(f"processes left after the final stop: {sorted(self.leftovers)}")
        return failures


def print_report(r: dict[str, Any]) -> None:
    faults = ", ".join(f"{kind} {n}" for kind, n in r["faults"].items())
    modes = ", ".join(f"{mode} {n}" for mode, n in sorted(r["pg_restart_modes"].items()))
    skipped = ", ".join(f"{kind} {n}" for kind, n in r["faults_skipped"].items()) or "none"
    exits = ", ".join(f"{cause} {n}" for cause, n in sorted(r["master_exits"].items()))
    given_back = r["unaccounted_given_back"]
    lines = [
        f"chaos report: seed {r['seed']}, {r['children']} children, {r['fault_seconds']:g}s of faults,"
        f" lease {r['lease_seconds']:g}s, started {r['started_at']}",
        f"  jobs enqueued          {r['enqueued']}",
        f"  succeeded              {r['succeeded']}",
        f"  dead                   {r['dead']}",
        f"  lost                   {r['lost']}",
        f"  ran more than once     {r['ran_more_than_once']}  (at most {r['max_runs']} runs of one job)",
        f"    with no fault to explain it  {r['unexplained']}",
        f"    with a run no attempt counts {r['unaccounted']}"
        + (f"  ({given_back} released by the master with 'attempt not counted')" if given_back else ""),
        f"  succeeded, never ran   {r['succeeded_without_run']}",
        f"  attempts with no run   {r['extra_attempts']} on {r['jobs_with_extra_attempts']} jobs"
        "  (counted, not run: rescued unstarted, or failed before recording)",
        f"  faults injected        {faults}",
        f"    pg restarts              {modes or 'none'}",
        f"    child kills scheduled just after PostgreSQL came back: {r['aftershocks']}",
        f"    could not be injected    {skipped}",
        f"  master exits           {exits}",
        f"  orphaned processes     {r['orphans']} after killed masters, {r['leftover_processes']} after the end",
        f"  wall time              {r['wall_seconds']:.0f}s (drain {r['drain_seconds']:.0f}s)",
    ]
    lines += [f"  FAIL {failure}" for failure in r["failures"]]
    lines.append("RESULT: " + ("FAIL" if r["failures"] else "PASS"))
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="faults for this long: a soak test (default 1)")
    length.add_argument("--seconds", type=float, help="faults for this long (the test suite's short form)")
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="KIND=PER_MINUTE",
        help=f"change one kind's rate (defaults: {', '.join(f'{k}={v:g}' for k, v in RATES.items())})",
    )
    parser.add_argument("--lease", type=float, default=5.0, help="WORKERPOOL_LEASE_SECONDS (default 5)")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=4.0,
        help="WORKERPOOL_SHUTDOWN_TIMEOUT (default 4: above the longest job, so a SIGTERM kills no job)",
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--json", dest="json_path", type=Path, help="also write the report here, as JSON")
    parser.add_argument("--log", dest="log_path", type=Path, help="keep the pool's log here")
    parser.add_argument("--quiet", action="store_true", help="print the report only, not each fault")
    a = parser.parse_args(argv)
    seconds = a.seconds if a.seconds is not None else 60 * (a.minutes if a.minutes is not None else 1.0)
    rates = dict(RATES)
    for item in a.rate:
        kind, _, value = item.partition("=")
        if kind not in RATES:
            parser.error(f"--rate {item}: the kinds are {', '.join(RATES)}")
        try:
            rates[kind] = float(value)
        except ValueError:
            parser.error(f"--rate {item}: {value!r} is not a number of faults per minute")
    return Options(
        seed=a.seed,
        seconds=seconds,
        rates=rates,
        children=a.children,
        lease=a.lease,
        shutdown_timeout=a.shutdown_timeout,
        drain_timeout=a.drain_timeout,
        json_path=a.json_path,
        log_path=a.log_path,
        quiet=a.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # The run's settings are its own: a WORKERPOOL_SCHEMA in the caller's environment, say,
    # must not send the enqueues somewhere the pool does not look.
    for name in [name for name in os.environ if name.startswith("WORKERPOOL_")]:
        del os.environ[name]
    # The pool's log outlives the run when it fails: it is what explains the failure.
    log_path = opts.log_path or Path(tempfile.mkstemp(prefix="wp-chaos-", suffix=".log")[1])
    with tempfile.TemporaryDirectory(prefix="wp-chaos-") as workdir:
        run = Run(opts, Path(workdir), log_path)
        try:
            with interruptible():
                report = run.report(run.execute())
        except Interrupted as exc:
            print(f"chaos: interrupted by {exc}; cleaning up", file=sys.stderr)
            return 2
        except Exception:
            traceback.print_exc()
            print(f"chaos: the run could not be carried out; the pool's log is {log_path}", file=sys.stderr)
            return 2
        finally:
            with ignoring_signals():
                run.close()
    print_report(report)
    if opts.json_path:
        opts.json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if report["failures"]:
        print(f"the pool's log: {log_path}")
        return 1
    if opts.log_path is None:
        log_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
