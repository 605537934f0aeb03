"""The status snapshot: written by the master, read by the CLI and the health app.

Written to a temporary file and renamed into place, so a reader never sees half of
one; it carries its own `written_at`, so a reader can tell a dead master's last word.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import psutil

STALE_AFTER = 5.0  # seconds: the master writes about once a second


def write(path: str, document: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(document))
    os.replace(tmp, path)


def read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            return orjson.loads(f.read())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def master_alive(document: dict[str, Any] | None, now: float | None = None) -> bool:
    """True when the snapshot is fresh and its master process still exists."""
    if not document:
        return False
    now = time.time() if now is None else now
    if now - document.get("written_at", 0) > STALE_AFTER:
        return False
    try:
        # A killed master its parent has not reaped yet is a zombie: it exists, but is dead.
        return psutil.Process(int(document["master"]["pid"])).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists, under another user
