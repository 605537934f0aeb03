"""The workerpool task of the latency measurement (the drain uses workerpool.examples.noop)."""

from __future__ import annotations

from bench import recording
from workerpool import current_job, task


@task(name="stamp")
def stamp() -> None:
    """Record this job's start time, then do nothing."""
    job = current_job()
    recording.stamp(job.id if job else "?")
