"""Memory figures: USS where the kernel can tell it, RSS otherwise.

After fork a child's RSS counts pages it still shares copy-on-write with the master,
so RSS overstates what the child itself holds; USS counts only its private pages.
"""

from __future__ import annotations

import os

import psutil

MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_self() -> int:
    """This process's RSS, cheaply (one small read, no psutil)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def measure(pid: int) -> tuple[int, int, str]:
    """(private bytes, rss bytes, measure name) of process `pid`."""
    proc = psutil.Process(pid)
    try:
        full = proc.memory_full_info()
        return full.uss, full.rss, "uss"
    except (psutil.AccessDenied, AttributeError):
        rss = proc.memory_info().rss
        return rss, rss, "rss"


def over_soft_limit(private: int, born: int, limit_mb: float) -> bool:
    """Whether a child with `private` bytes (born with `born`) must be recycled for memory.

    A child born over the limit is only replaced once it has grown by a quarter of the limit:
    its replacement would be born just as big (celery #4125).
    """
    limit = limit_mb * MIB
    return private > max(limit, born + limit / 4)


def mib(n: float) -> float:
    return round(n / MIB, 1)
