"""Throw-away databases on the shared server: always named wp_bench_*, always dropped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_DSN = os.environ.get("WORKERPOOL_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "wp_bench_"


def dsn_for(name: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


@contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """A fresh, empty database for one measurement, so no run inherits another's bloat."""
    name = f"{PREFIX}{os.getpid()}_{label}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield dsn_for(name)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_facts() -> dict[str, str]:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        facts = {
            "postgresql": conn.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
        }
        for setting in ("shared_buffers", "synchronous_commit", "max_connections", "shared_preload_libraries"):
            facts[setting] = conn.execute(f"SHOW {setting}").fetchone()[0]  # type: ignore[index]
    return facts
