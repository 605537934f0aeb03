"""What the workers ran and when, for the exactly-once check and the pickup latency.

Python tasks append one line per job straight to a file: a workerpool child leaves with
os._exit, so nothing buffered in it would survive. Only the latency runs stamp, and their
jobs are 20 ms apart, so the write costs nothing that is measured. Node workers keep
their records in memory and write them after a graceful stop (bench/node/record.mjs).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STAMP_DIR_ENV = "BENCH_STAMP_DIR"

_fd: int | None = None
_off = False  # this process runs no latency measurement


def stamp(job_id: object) -> None:
    """Record that job `job_id` starts now, if this process runs a latency measurement."""
    global _fd, _off
    if _fd is None:
        directory = os.environ.get(STAMP_DIR_ENV)
        if _off or not directory:
            _off = True
            return
        _fd = os.open(os.path.join(directory, f"stamps.{os.getpid()}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, f"{job_id} {time.time():.6f}\n".encode())


def mark_ready(directory: str | Path) -> None:
    Path(directory, f"ready.{os.getpid()}").touch()


@dataclass
class Records:
    ids: Counter[str] = field(default_factory=Counter)
    stamps: dict[str, list[float]] = field(default_factory=dict)
    ready: int = 0


def read_records(directory: Path) -> Records:
    records = Records()
    for path in directory.iterdir():
        kind = path.name.split(".", 1)[0]
        if kind == "ready":
            records.ready += 1
        elif kind == "ids":
            records.ids.update(line for line in path.read_text().split() if line)
        elif kind == "stamps":
            for line in path.read_text().splitlines():
                job_id, at = line.split()
                records.stamps.setdefault(job_id, []).append(float(at))
    return records


def count_ready(directory: Path) -> int:
    return sum(1 for path in directory.iterdir() if path.name.startswith("ready."))
