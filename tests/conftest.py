"""Fixtures: a throw-away database per test, and a real pool run as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helper_tasks  # noqa: F401  (registers the tasks, so enqueue takes their defaults)
import orjson
import psutil
import psycopg
import pytest

import workerpool.examples  # noqa: F401
from workerpool.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN_DSN = os.environ.get("WORKERPOOL_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def dsn_for(name: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def db() -> Iterator[str]:
    """A fresh, migrated database with an `executions` table; dropped afterwards."""
    name = f"wp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = dsn_for(name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, "workerpool")
            conn.execute(
                "CREATE TABLE executions (job_id bigint, pid int, attempt int,"
                " started_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
        yield dsn
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sql(db: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """Run a query against the test database and return all rows."""
    conn = psycopg.connect(db, autocommit=True)

    def run(query: str, params: Any = None) -> list[tuple[Any, ...]]:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    yield run
    conn.close()


@pytest.fixture
def env(db: str, tmp_path: Path) -> dict[str, str]:
    """The environment for a pool or CLI run against the test database."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKERPOOL_")}
    base.update(
        {
            "WORKERPOOL_DSN": db,
            "WORKERPOOL_RUNTIME_DIR": str(tmp_path / "run"),
            "WORKERPOOL_TASKS": "workerpool.examples,helper_tasks",
            "WORKERPOOL_CHILDREN": "2",
            "WORKERPOOL_POLL_INTERVAL": "0.5",
            "WORKERPOOL_RETRY_BACKOFF": "0.2",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return base


def cli(
    env: dict[str, str], *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "workerpool"), *args], env=env, input=input, capture_output=True, timeout=timeout)


class Pool:
    """A real `workerpool run` in its own process group, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = open(log_path, "ab")

    def start(self, **overrides: str) -> Pool:
        env = {**self.env, **overrides}
        self.proc = subprocess.Popen(
            [str(BIN / "workerpool"), "run"],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.status_path = Path(env["WORKERPOOL_RUNTIME_DIR"]) / "status.json"
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(self.status_path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None
        return doc if doc["master"]["pid"] == self.pid else None

    def child_pids(self) -> list[int]:
        """The master's live children, straight from the process table."""
        try:
            return sorted(c.pid for c in psutil.Process(self.pid).children() if c.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return []

    def wait_children(self, n: int, timeout: float = 30) -> list[int]:
        def ready() -> list[int] | None:
            doc = self.status()
            if not doc:
                return None
            live = [c for c in doc["children"] if c["state"] in ("idle", "busy") and not c["retiring"]]
            return [c["pid"] for c in live] if len(live) == n else None

        return wait_until(ready, timeout, what=f"{n} children ready")

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill_all(self) -> None:
        """SIGKILL the master and its children together, as a lost host would."""
        procs = [psutil.Process(self.pid), *psutil.Process(self.pid).children()]
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.wait(30)

    def cleanup(self) -> None:
        if self.proc is None:
            return
        group = self.proc.pid
        if self.proc.poll() is None:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)
        self.log_file.close()
        # Nothing of the pool's process group may outlive it.
        wait_until(lambda: not _group_members(group), 15, what="the pool's processes to exit")


def _group_members(pgid: int) -> list[int]:
    members = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


@pytest.fixture
def pool_factory(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    pools: list[Pool] = []

    def make(env_: dict[str, str] | None = None, name: str = "pool") -> Pool:
        pool = Pool(env_ or env, tmp_path / f"{name}-{len(pools)}.log")
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.cleanup()


@pytest.fixture
def pool(pool_factory: Callable[..., Pool]) -> Pool:
    return pool_factory()


def enqueue(env: dict[str, str], task: str, payloads: list[Any], **options: Any) -> list[int]:
    """Enqueue through the Python API against the test database."""
    from workerpool import enqueue_many

    with psycopg.connect(env["WORKERPOOL_DSN"], autocommit=True) as conn:
        with conn.transaction():
            return enqueue_many([{"name": task, "payload": p, **options} for p in payloads], conn=conn)


def job_rows(sql: Callable[..., list[tuple[Any, ...]]], ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
    rows = sql(
        "SELECT id, status, attempts, last_error, result FROM workerpool.jobs"
        + (" WHERE id = ANY(%s)" if ids is not None else "")
        + " ORDER BY id",
        (ids,) if ids is not None else None,
    )
    return {r[0]: {"status": r[1], "attempts": r[2], "last_error": r[3], "result": r[4]} for r in rows}


def executions(sql: Callable[..., list[tuple[Any, ...]]]) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for job_id, pid, attempt in sql("SELECT job_id, pid, attempt FROM executions ORDER BY started_at"):
        out.setdefault(job_id, []).append((pid, attempt))
    return out


@pytest.fixture
def private_pg() -> Iterator[Any]:
    """A private PostgreSQL server (see pgserver.py) that a test may stop and restart."""
    from pgserver import PrivatePostgres

    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def outage_env(private_pg: Any, tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """`env`, but on a migrated database of the private server."""
    dsn = private_pg.create_database("wp_outage")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, "workerpool")
        conn.execute(
            "CREATE TABLE executions (job_id bigint, pid int, attempt int,"
            " started_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    return {**env, "WORKERPOOL_DSN": dsn}


@pytest.fixture
def health(env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    from health_harness import HealthApp

    app = HealthApp(env, tmp_path / "health.log")
    yield app
    app.cleanup()


@pytest.fixture
def supervisor(env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    from supervisor_harness import Supervisor, checkout_env, supervised

    with supervised(Supervisor(checkout_env(env, tmp_path))) as sup:
        yield sup
