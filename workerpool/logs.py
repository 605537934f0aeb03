"""Logging: one JSON object per line on stdout, or readable lines for a terminal.

Task code that logs through the standard `logging` module gets the same format, so a
pool's output stays one parseable stream.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# The slot of the child this process is (None in the master and the CLI).
_slot: int | None = None


def set_slot(slot: int | None) -> None:
    global _slot
    _slot = slot


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "msg": record.getMessage(),
        "pid": record.process,
        "slot": _slot,
        "logger": record.name,
    }
    for key, value in vars(record).items():
        if key not in _STANDARD:
            out[key] = value
    if record.exc_info:
        out["traceback"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(_fields(record), default=str).decode()


class PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        head = f"{fields.pop('time')} {fields.pop('level'):7} [{fields.pop('pid')}]"
        msg = fields.pop("msg")
        fields.pop("logger")
        tb = fields.pop("traceback", None)
        rest = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        line = f"{head} {msg} {rest}".rstrip()
        return f"{line}\n{tb}" if tb else line


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(PrettyFormatter() if fmt == "pretty" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter (psycopg pool, werkzeug) stays at warning unless asked for.
    for noisy in ("psycopg", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # A closed stdout (`workerpool run | head`) must not turn every later line into a
    # traceback on stderr: the pool goes on, its log lines are dropped.
    logging.raiseExceptions = False


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
