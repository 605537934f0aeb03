"""A system's workers running against a fresh database, and waiting for them to drain."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from bench import pg, procs, recording
from bench.systems.base import Enqueuer, Run, System, Workers

START_TIMEOUT = 60.0
POLL = 0.01


@dataclass
class Session:
    system: System
    run: Run
    workers: Workers
    conn: psycopg.Connection  # the harness's own, for pending checks and verification
    enqueuer: Enqueuer
    enqueued: int = 0  # every job this session added, warm-up included
    problems: list[str] = field(default_factory=list)
    records: recording.Records = field(default_factory=recording.Records)  # read once the workers stopped

    def drain(self, timeout: float) -> float:
        """Wait until no job is left; return the wall time it was first seen so."""
        procs.wait_until(lambda: not self.system.pending(self.conn), timeout, f"{self.system.label} to drain", POLL)
        return time.time()

    def bulk(self, n: int) -> float:
        seconds = self.enqueuer.bulk(n)
        self.enqueued += n
        return seconds

    def cpu(self) -> tuple[dict[int, float], dict[int, float]]:
        """CPU seconds so far of the workers' processes and of the database backends serving them."""
        workers = list(self.workers.child_pids)
        if self.workers.master is not None:
            workers.append(self.workers.master)
            workers += [c.pid for c in psutil.Process(self.workers.master).children()]
        backends = [
            row[0]
            for row in self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
        return procs.cpu_seconds(sorted(set(workers))), procs.cpu_seconds(backends)

    def one(self) -> tuple[str, float]:
        self.enqueued += 1
        return self.enqueuer.one()


@contextmanager
def work_dir(label: str) -> Iterator[Path]:
    """Logs and records of one measurement; kept (and named) only when it fails."""
    path = Path(tempfile.mkdtemp(prefix=f"wp-bench-{label}-"))
    try:
        yield path
    except BaseException as exc:
        exc.add_note(f"logs and records kept in {path}")
        raise
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running(system: System, workers: int, stamp: bool, warm_up: int) -> Iterator[Session]:
    """Fresh database, schema, workers up and warmed; on leaving, a graceful stop and the exactly-once check."""
    label = f"{system.name}{workers}"
    with pg.scratch_database(label) as dsn, work_dir(label) as directory:
        (directory / "records").mkdir()
        run = Run(dsn, workers, directory / "records", directory, stamp)
        system.install(dsn)
        enqueuer = system.enqueuer(dsn)
        started = system.start(run)
        conn = psycopg.connect(dsn, autocommit=True)
        session = Session(system, run, started, conn, enqueuer)
        try:
            procs.wait_until(lambda: system.ready(conn, run, started), START_TIMEOUT, f"{system.label} to start")
            # Jobs that warm connections, prepared statements and the claim-size estimate.
            session.bulk(warm_up)
            session.drain(START_TIMEOUT)
            yield session
            session.problems += procs.stop(started.procs)
            session.records = recording.read_records(run.record_dir)
            session.problems += system.verify(conn, run, session.enqueued)
        finally:
            for proc in started.procs:
                procs.kill_group(proc)
            enqueuer.close()
            conn.close()
