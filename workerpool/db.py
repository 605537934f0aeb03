"""Connections: opened after fork, never shared, never showing a password."""

from __future__ import annotations

import random
import re
import time

import psycopg

# Any scheme, any case; the password runs to the last "@" (an unencoded "@" may be in it).
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@]*:)(.*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ***, safe for logs and errors."""
    dsn = _URL_PASSWORD.sub(r"\1***\3", dsn)
    return _KV_PASSWORD.sub(r"\1***", dsn)


def dsn_password(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("password") or None
    except Exception:
        match = _URL_PASSWORD.search(dsn)
        return match.group(2) if match else None


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from any text (an error message, a traceback)."""
    password = dsn_password(dsn)
    text = redact_dsn(text)
    if password:
        text = text.replace(password, "***")
    return text


def connect(dsn: str, *, application_name: str, connect_timeout: float = 5) -> psycopg.Connection:
    """An autocommit connection; errors carry no password."""
    try:
        return psycopg.connect(
            dsn,
            autocommit=True,
            connect_timeout=max(1, int(connect_timeout)),
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise psycopg.OperationalError(scrub(str(exc), dsn)) from None


class Backoff:
    """Capped exponential delay with full jitter, for reconnecting."""

    def __init__(self, base: float = 0.5, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


def wait_for_database(dsn: str, timeout: float, application_name: str) -> psycopg.Connection:
    """Connect, retrying with backoff until `timeout`; re-raise the last error after it."""
    deadline = time.monotonic() + timeout
    backoff = Backoff()
    while True:
        try:
            return connect(dsn, application_name=application_name, connect_timeout=2)
        except psycopg.OperationalError:
            delay = backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
