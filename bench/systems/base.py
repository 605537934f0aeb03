"""What the harness needs from each system, and the parts the systems share."""

from __future__ import annotations

import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import psycopg

from bench import procs, recording


@dataclass(frozen=True)
class Run:
    """One measurement's setting: where the jobs are and how the workers run."""

    dsn: str
    workers: int
    record_dir: Path  # ready files, executed ids, start stamps
    log_dir: Path
    stamp: bool  # a latency run: every job records when it started


@dataclass
class Workers:
    """The running processes of one system."""

    procs: list[subprocess.Popen[bytes]]
    master: int | None = None  # workerpool's master; the peers have none
    child_pids: list[int] = field(default_factory=list)


class Enqueuer(ABC):
    """A client enqueueing through the system's own API."""

    @abstractmethod
    def one(self) -> tuple[str, float]:
        """Enqueue one job and commit; return its id and the wall time right after the commit returned."""

    @abstractmethod
    def bulk(self, n: int) -> float:
        """Enqueue `n` jobs in one transaction; return how many seconds that took."""

    def close(self) -> None:  # noqa: B027  (most enqueuers have nothing to close)
        pass


class System(ABC):
    name: ClassVar[str]  # as given to --only
    label: ClassVar[str]  # as shown in the table
    packages: ClassVar[tuple[str, ...]] = ()
    # True while any job is neither finished nor failed; cheap, run every 10 ms.
    pending_sql: ClassVar[str]

    def unavailable(self) -> str | None:
        """Why this system cannot be measured here, or None."""
        return None

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in self.packages}

    @abstractmethod
    def settings(self) -> str:
        """The settings it runs with, for the report."""

    @abstractmethod
    def install(self, dsn: str) -> None: ...

    @abstractmethod
    def enqueuer(self, dsn: str) -> Enqueuer: ...

    @abstractmethod
    def start(self, run: Run) -> Workers: ...

    def ready(self, conn: psycopg.Connection, run: Run, workers: Workers) -> bool:
        return recording.count_ready(run.record_dir) >= run.workers

    @abstractmethod
    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        """Problems with exactly-once execution of the `expected` jobs (empty when all ran once)."""

    def pending(self, conn: psycopg.Connection) -> bool:
        return bool(conn.execute(self.pending_sql, prepare=True).fetchone()[0])  # type: ignore[index]


class ProcessPerWorker(System):
    """A peer run as `workers` identical processes, each writing a ready file once it takes jobs."""

    def start(self, run: Run) -> Workers:
        started = [
            procs.spawn(self.worker_argv(run), self.worker_env(run), run.log_dir / f"{self.name}-{i}.log")
            for i in range(run.workers)
        ]
        return Workers(started, None, [p.pid for p in started])

    @abstractmethod
    def worker_argv(self, run: Run) -> list[str]: ...

    def worker_env(self, run: Run) -> dict[str, str]:
        env = procs.python_env()
        if run.stamp:
            env[recording.STAMP_DIR_ENV] = str(run.record_dir)
        return env


def python_worker(module: str, run: Run) -> list[str]:
    return [sys.executable, "-m", module, run.dsn, str(run.record_dir)]


def check_recorded(ids: Sequence[str] | None, run: Run, expected: int) -> list[str]:
    """The workers' own records: `expected` distinct jobs, each run once (and, given `ids`, those jobs)."""
    records = recording.read_records(run.record_dir)
    problems = []
    total = sum(records.ids.values())
    twice = [job for job, n in records.ids.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} job(s) ran more than once, e.g. {twice[:3]}")
    if len(records.ids) != expected:
        problems.append(f"the workers recorded {len(records.ids)} distinct jobs ({total} runs), expected {expected}")
    if ids is not None and set(ids) != set(records.ids):
        problems.append(f"{len(set(ids) ^ set(records.ids))} job(s) differ between the table and the workers' records")
    return problems


def expect_counts(label: str, got: int, expected: int) -> list[str]:
    return [] if got == expected else [f"{label}: {got}, expected {expected}"]
