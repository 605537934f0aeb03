"""A raw-SQL worker: claim 50, run each, record the batch; wait on LISTEN when there is nothing."""

from __future__ import annotations

import select
import signal
import sys

import psycopg

from bench import recording
from bench.systems.rawsql import BATCH, CLAIM, COMPLETE

stopping = False


def on_term(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def noop(payload: object) -> None:
    """The job."""


def main(dsn: str, record_dir: str) -> None:
    signal.signal(signal.SIGTERM, on_term)
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("LISTEN bench_raw")
    recording.mark_ready(record_dir)
    while not stopping:
        rows = conn.execute(CLAIM, (BATCH,), prepare=True).fetchall()
        if not rows:
            # A notification that came during the claim is already read off the socket.
            if not any(True for _ in conn.notifies(timeout=0, stop_after=1)):
                select.select([conn.fileno()], [], [], 1.0)
                for _ in conn.notifies(timeout=0):
                    pass
            continue
        for job_id, payload in rows:
            recording.stamp(job_id)
            noop(payload)
        conn.execute(COMPLETE, ([r[0] for r in rows],), prepare=True)
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
