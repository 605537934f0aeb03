"""A child's status board: a page of shared memory the child writes and the master reads.

Writing is a memory store, with no system call on the per-job path, and the board
outlives the child: when a child dies, the master reads what it was doing (the job it
was running, the jobs it had finished but not yet recorded) to release them correctly.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

STATES = ("starting", "idle", "busy", "stopping")
STARTING, IDLE, BUSY, STOPPING = range(4)

REQUESTS = (None, "memory", "max_jobs", "max_age")

MAX_HELD = 1000  # the largest claim batch a board can describe

_FIELDS = {
    # name: (format, offset)
    "state": ("B", 0),
    "request": ("B", 1),
    "abort": ("B", 2),
    "job_id": ("q", 8),
    "job_started": ("d", 16),
    "job_timeout": ("d", 24),
    "jobs_done": ("Q", 32),
    "jobs_failed": ("Q", 40),
    "heartbeat": ("d", 48),
    "last_claim": ("d", 56),
    "born_memory": ("Q", 64),
    "memory": ("Q", 72),
    "held_n": ("I", 80),
    "done_n": ("I", 84),
}
_TASK = struct.Struct("64s")
_TASK_OFFSET = 88
_HELD_OFFSET = 152
_ID = struct.Struct("q")
# The per-job writes, each one pack over fields that sit side by side.
_JOB, _JOB_OFFSET = struct.Struct("qdd"), 8  # job_id, job_started, job_timeout
_COUNTERS, _COUNTERS_OFFSET = struct.Struct("QQ"), 32  # jobs_done, jobs_failed
_DONE_N, _DONE_N_OFFSET = struct.Struct("I"), 84
SIZE = _HELD_OFFSET + 8 * MAX_HELD


@dataclass
class Snapshot:
    state: str
    request: str | None
    job_id: int | None
    task: str | None
    job_started: float | None
    job_timeout: float | None
    jobs_done: int
    jobs_failed: int
    heartbeat: float
    last_claim: float
    born_memory: int
    memory: int
    held: list[int]
    done_n: int


class Board:
    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, SIZE)
        self._structs = {name: (struct.Struct(fmt), off) for name, (fmt, off) in _FIELDS.items()}

    def set(self, name: str, value: int | float) -> None:
        st, off = self._structs[name]
        st.pack_into(self.mem, off, value)

    def get(self, name: str) -> int | float:
        st, off = self._structs[name]
        return st.unpack_from(self.mem, off)[0]

    def start_job(self, job_id: int, task: str, started: float, timeout: float | None) -> None:
        _TASK.pack_into(self.mem, _TASK_OFFSET, task.encode()[:64])
        _JOB.pack_into(self.mem, _JOB_OFFSET, job_id, started, timeout or 0.0)
        self.mem[0] = BUSY

    def end_job(self, jobs_done: int, jobs_failed: int, done_n: int) -> None:
        """The job is over: the counters (kept by the child) and the batch position."""
        # Done first, idle second: a child killed in between must not leave a job that ran
        # looking neither running nor finished (the master would give its attempt back).
        _DONE_N.pack_into(self.mem, _DONE_N_OFFSET, done_n)
        self.mem[0] = IDLE
        _COUNTERS.pack_into(self.mem, _COUNTERS_OFFSET, jobs_done, jobs_failed)

    def hold(self, ids: list[int]) -> None:
        """Record a freshly claimed batch (or an empty one once it is all recorded)."""
        for i, job_id in enumerate(ids):
            _ID.pack_into(self.mem, _HELD_OFFSET + 8 * i, job_id)
        self.set("done_n", 0)
        self.set("held_n", len(ids))

    def read(self) -> Snapshot:
        state = int(self.get("state"))
        held_n = min(int(self.get("held_n")), MAX_HELD)
        held = [_ID.unpack_from(self.mem, _HELD_OFFSET + 8 * i)[0] for i in range(held_n)]
        busy = state == BUSY
        task = _TASK.unpack_from(self.mem, _TASK_OFFSET)[0].rstrip(b"\0").decode(errors="replace")
        return Snapshot(
            state=STATES[state],
            request=REQUESTS[int(self.get("request"))],
            job_id=int(self.get("job_id")) if busy else None,
            task=task if busy else None,
            job_started=float(self.get("job_started")) if busy else None,
            job_timeout=(float(self.get("job_timeout")) or None) if busy else None,
            jobs_done=int(self.get("jobs_done")),
            jobs_failed=int(self.get("jobs_failed")),
            heartbeat=float(self.get("heartbeat")),
            last_claim=float(self.get("last_claim")),
            born_memory=int(self.get("born_memory")),
            memory=int(self.get("memory")),
            held=held,
            done_n=min(int(self.get("done_n")), held_n),
        )

    def close(self) -> None:
        self.mem.close()
