"""Versioned schema migrations: numbered SQL files applied once each, in order.

`migrate` takes a transaction-scoped advisory lock first, so two processes running it
at once apply each file exactly once; a file applies with its version row, or not at all.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

LOCK_KEY = "workerpool.migrate"


def migration_files() -> list[tuple[int, str]]:
    files = []
    for entry in resources.files(__package__).iterdir():
        if entry.name.endswith(".sql"):
            files.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(files)


def latest_version() -> int:
    return migration_files()[-1][0]


def current_version(conn: psycopg.Connection, schema: str) -> int:
    """The applied version, 0 when the schema has never been migrated."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",)).fetchone()
    if not row or not row[0]:
        return 0
    query = sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations")
    return conn.execute(query.format(sql.Identifier(schema))).fetchone()[0]


def migrate(conn: psycopg.Connection, schema: str) -> list[int]:
    """Apply the missing migrations; return the versions applied."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{LOCK_KEY}:{schema}",))
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(name)
        )
        done = current_version(conn, schema)
        for version, text in migration_files():
            if version <= done:
                continue
            conn.execute(sql.SQL(text).format(schema=name))
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(name),
                (version,),
            )
            applied.append(version)
    return applied
