"""Processes the bench starts: each in its own session, stopped by its own pid or group only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


class BenchError(Exception):
    """A measurement could not be taken; the message says why."""


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def spawn(argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30) -> list[str]:
    """TERM each process, wait for a graceful exit, KILL its group past `timeout`; return problems."""
    problems = []
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            problems.append(f"pid {proc.pid} ignored SIGTERM for {timeout:g}s and was killed")
        kill_group(proc)
        if proc.returncode not in (0, None):
            problems.append(f"pid {proc.pid} exited with {proc.returncode}")
    return problems


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Nothing the process started (a pool's children) may outlive a measurement."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(10)


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User plus system CPU seconds of each process still there (a reused pid would be a new process)."""
    out = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = times.user + times.system
    return out


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots; a process born in between counts whole."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def uss(pid: int) -> int:
    return psutil.Process(pid).memory_full_info().uss


def python_env(**extra: str) -> dict[str, str]:
    """The environment for a Python process of the bench: this checkout importable, no stray config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKERPOOL_", "PGQUEUER_", "PROCRASTINATE_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env
