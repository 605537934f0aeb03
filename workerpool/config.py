"""Configuration from environment variables, validated all at once.

Every problem is collected before anything starts, so an operator fixes a bad
environment in one round instead of one variable per restart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workerpool.board import MAX_HELD
from workerpool.db import redact_dsn

# Exit codes (sysexits.h), documented in the README.
EX_OK = 0
EX_USAGE = 2
EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
MIN_LEASE_SECONDS = 3.0
MAX_CHILDREN = 256


class ConfigError(Exception):
    """One or more variables are wrong; `problems` names each of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    dsn: str
    schema: str
    tasks: tuple[str, ...]
    preload: bool
    children: int
    queues: tuple[str, ...]
    poll_interval: float
    batch_size: int
    shutdown_timeout: float
    lease_seconds: float
    job_timeout: float | None
    max_attempts: int
    retry_backoff: float
    retry_backoff_max: float
    max_memory_mb: float | None
    hard_memory_mb: float | None
    memory_check_interval: float
    max_jobs_per_child: int | None
    max_jobs_per_child_jitter: int
    max_child_age: float | None
    runtime_dir: str
    log_level: str
    log_format: str
    health_bind: str
    stall_seconds: float
    max_payload_bytes: int
    start_timeout: float

    @property
    def safe_dsn(self) -> str:
        return redact_dsn(self.dsn)

    @property
    def status_path(self) -> str:
        return os.path.join(self.runtime_dir, "status.json")


class _Reader:
    """Reads typed variables and records every failure instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def bad(self, name: str, value: str, why: str) -> None:
        self.problems.append(f"{name}={value!r}: {why}")

    def number(
        self,
        name: str,
        default: Any,
        parse: Callable[[str], Any],
        lo: float,
        hi: float,
        kind: str,
        optional: bool = False,
    ) -> Any:
        value = self.env.get(name)
        if value is None or (optional and value.strip() == ""):
            return default
        try:
            if not value.strip().isascii():  # int() would take "３" or "٣"
                raise ValueError(value)
            parsed = parse(value.strip())
        except ValueError:
            self.bad(name, value, f"must be {kind} between {lo:g} and {hi:g}")
            return default
        if parsed != parsed or not lo <= parsed <= hi:  # NaN fails the first test
            self.bad(name, value, f"must be {kind} between {lo:g} and {hi:g}")
            return default
        return parsed

    def integer(self, name: str, default: int | None, lo: int, hi: int, optional: bool = False) -> Any:
        return self.number(name, default, int, lo, hi, "a whole number", optional)

    def seconds(self, name: str, default: float | None, lo: float, hi: float, optional: bool = False) -> Any:
        return self.number(name, default, float, lo, hi, "a number of seconds", optional)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in choices:
            self.bad(name, value, f"must be one of {', '.join(choices)}")
            return default
        return value.lower()

    def names(self, name: str) -> tuple[str, ...]:
        value = self.raw(name) or ""
        return tuple(part.strip() for part in value.split(",") if part.strip())


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build a Config from `env` (default os.environ) or raise ConfigError."""
    env = os.environ if env is None else env
    r = _Reader(env)

    dsn = r.raw("WORKERPOOL_DSN") or r.raw("DATABASE_URL") or ""
    if not dsn:
        r.problems.append(
            "WORKERPOOL_DSN is not set (nor DATABASE_URL): set it to a PostgreSQL URL, "
            "e.g. postgresql://user@localhost:5432/dbname"
        )
    else:
        _check_dsn(r, dsn)

    schema = r.raw("WORKERPOOL_SCHEMA") or "workerpool"
    if not SCHEMA_RE.match(schema):
        r.bad("WORKERPOOL_SCHEMA", schema, "must be a lower-case identifier ([a-z_][a-z0-9_]*)")

    tasks = r.names("WORKERPOOL_TASKS")
    for module in tasks:
        if not re.match(r"^[A-Za-z_][\w.]*$", module):
            r.bad("WORKERPOOL_TASKS", module, "is not a Python module name")

    children = r.integer("WORKERPOOL_CHILDREN", os.cpu_count() or 1, 1, MAX_CHILDREN)
    lease = r.seconds("WORKERPOOL_LEASE_SECONDS", 30.0, MIN_LEASE_SECONDS, 86400)
    max_memory = r.number("WORKERPOOL_MAX_MEMORY_MB", None, float, 1, 1_048_576, "a number of MiB", optional=True)
    hard_memory = r.number("WORKERPOOL_HARD_MEMORY_MB", None, float, 1, 1_048_576, "a number of MiB", optional=True)
    if max_memory is not None and hard_memory is not None and hard_memory <= max_memory:
        r.problems.append(
            f"WORKERPOOL_HARD_MEMORY_MB={hard_memory:g} must be above "
            f"WORKERPOOL_MAX_MEMORY_MB={max_memory:g} (the hard limit kills mid-job)"
        )

    runtime_default = os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", "workerpool")
    runtime_dir = r.raw("WORKERPOOL_RUNTIME_DIR") or runtime_default

    health_bind = r.raw("WORKERPOOL_HEALTH_BIND") or "127.0.0.1:8080"
    if not re.match(r"^[\w.\-\[\]:]+:\d{1,5}$", health_bind):
        r.bad("WORKERPOOL_HEALTH_BIND", health_bind, "must be HOST:PORT, e.g. 127.0.0.1:8080")

    config = Config(
        dsn=dsn,
        schema=schema,
        tasks=tasks,
        preload=r.choice("WORKERPOOL_PRELOAD", "false", ("true", "false", "1", "0")) in ("true", "1"),
        children=children,
        queues=r.names("WORKERPOOL_QUEUES"),
        poll_interval=r.seconds("WORKERPOOL_POLL_INTERVAL", 1.0, 0.01, 3600),
        batch_size=r.integer("WORKERPOOL_BATCH_SIZE", 500, 1, MAX_HELD),
        shutdown_timeout=r.seconds("WORKERPOOL_SHUTDOWN_TIMEOUT", 30.0, 0, 86400),
        lease_seconds=lease,
        job_timeout=r.seconds("WORKERPOOL_JOB_TIMEOUT", None, 0.1, 31 * 86400, optional=True),
        max_attempts=r.integer("WORKERPOOL_MAX_ATTEMPTS", 5, 1, 1000),
        retry_backoff=r.seconds("WORKERPOOL_RETRY_BACKOFF", 2.0, 0, 86400),
        retry_backoff_max=r.seconds("WORKERPOOL_RETRY_BACKOFF_MAX", 3600.0, 0, 31 * 86400),
        max_memory_mb=max_memory,
        hard_memory_mb=hard_memory,
        memory_check_interval=r.seconds("WORKERPOOL_MEMORY_CHECK_INTERVAL", 1.0, 0.1, 3600),
        max_jobs_per_child=r.integer("WORKERPOOL_MAX_JOBS_PER_CHILD", None, 1, 2**31, optional=True),
        max_jobs_per_child_jitter=r.integer("WORKERPOOL_MAX_JOBS_PER_CHILD_JITTER", 0, 0, 2**31),
        max_child_age=r.seconds("WORKERPOOL_MAX_CHILD_AGE", None, 1, 365 * 86400, optional=True),
        runtime_dir=runtime_dir,
        log_level=r.choice("WORKERPOOL_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")),
        log_format=r.choice("WORKERPOOL_LOG_FORMAT", "json", ("json", "pretty")),
        health_bind=health_bind,
        stall_seconds=r.seconds("WORKERPOOL_STALL_SECONDS", 60.0, 1, 86400),
        max_payload_bytes=r.integer("WORKERPOOL_MAX_PAYLOAD_BYTES", 1_048_576, 2, 1_073_741_824),
        start_timeout=r.seconds("WORKERPOOL_START_TIMEOUT", 15.0, 0, 3600),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return config


@dataclass(frozen=True)
class EnqueueSettings:
    schema: str
    max_attempts: int
    max_payload_bytes: int


def load_enqueue_settings(env: Mapping[str, str] | None = None) -> EnqueueSettings:
    """The few variables enqueueing needs, so a web process need not set the pool's."""
    r = _Reader(os.environ if env is None else env)
    schema = r.raw("WORKERPOOL_SCHEMA") or "workerpool"
    if not SCHEMA_RE.match(schema):
        r.bad("WORKERPOOL_SCHEMA", schema, "must be a lower-case identifier ([a-z_][a-z0-9_]*)")
    settings = EnqueueSettings(
        schema=schema,
        max_attempts=r.integer("WORKERPOOL_MAX_ATTEMPTS", 5, 1, 1000),
        max_payload_bytes=r.integer("WORKERPOOL_MAX_PAYLOAD_BYTES", 1_048_576, 2, 1_073_741_824),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings


def _check_dsn(r: _Reader, dsn: str) -> None:
    """Reject a DSN libpq cannot parse, naming it without its password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        r.problems.append(
            f"WORKERPOOL_DSN={redact_dsn(dsn)!r}: not a valid PostgreSQL connection string "
            "(expected postgresql://user:password@host:port/dbname)"
        )
        return
    port = str(params.get("port") or "5432")
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        r.problems.append(f"WORKERPOOL_DSN={redact_dsn(dsn)!r}: port {port!r} is not a number from 1 to 65535")
