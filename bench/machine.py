"""The facts a reader needs to weigh the numbers: hardware, load, server, versions."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import psutil

from bench import pg
from bench.systems.base import System


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def facts(systems: Sequence[System]) -> dict[str, Any]:
    versions: dict[str, str] = {"python": platform.python_version()}
    for system in systems:
        versions.update(system.versions())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "load_at_start": load(),
        "server": pg.server_facts(),
        "versions": versions,
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
