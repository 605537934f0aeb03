"""Example tasks: real work for the demo, and well-behaved misbehaviour for trying the pool.

Load them with WORKERPOOL_TASKS=workerpool.examples.
"""

from __future__ import annotations

import hashlib
import time

from workerpool import task

CHUNK = 1 << 16
_leaked: list[bytearray] = []


@task(name="file_digest")
def file_digest(path: str) -> dict[str, object]:
    """Stream a file in chunks; return its size, SHA-256 and line count."""
    digest = hashlib.sha256()
    size = lines = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    return {"path": path, "bytes": size, "sha256": digest.hexdigest(), "lines": lines}


@task(name="allocate")
def allocate(mb: float) -> dict[str, float]:
    """Keep `mb` MiB alive in this child after returning: a leak on purpose."""
    block = bytearray(int(mb * 1024 * 1024))
    for i in range(0, len(block), 4096):  # touch every page so it is really resident
        block[i] = 1
    _leaked.append(block)
    return {"held_mb": sum(len(b) for b in _leaked) / 1048576}


@task(name="sleep")
def sleep(seconds: float) -> dict[str, float]:
    """Sleep, for demos of draining and timeouts."""
    time.sleep(seconds)
    return {"slept": seconds}


@task(name="noop")
def noop() -> None:
    """Do nothing: the benchmark's job."""
