"""The `workerpool` command."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import click
import orjson
import psycopg

from workerpool import PayloadError, new_job, status, tasks
from workerpool.config import (
    EX_CONFIG,
    EX_DATAERR,
    EX_UNAVAILABLE,
    Config,
    ConfigError,
    EnqueueSettings,
    load_config,
)
from workerpool.db import connect, scrub, wait_for_database
from workerpool.migrations import current_version, latest_version, migrate
from workerpool.queue import STATUSES, NewJob, Queue

ENQUEUE_CHUNK = 5000


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"workerpool: {message}", err=True)
    sys.exit(code)


def get_config(as_log: bool = False) -> Config:
    """The configuration, or exit 78 listing every problem.

    `run` reports it as one JSON log line, like everything else the pool prints.
    """
    try:
        return load_config()
    except ConfigError as exc:
        if as_log:
            from workerpool.logs import setup_logging

            setup_logging()  # the defaults: the level and format variables may be the bad ones
            logging.getLogger("workerpool.master").critical(
                "configuration error: " + "; ".join(exc.problems), extra={"problems": exc.problems}
            )
            sys.exit(EX_CONFIG)
        lines = "\n".join(f"  - {p}" for p in exc.problems)
        fail(f"configuration error ({len(exc.problems)} problem(s)):\n{lines}", EX_CONFIG)


@contextmanager
def database(config: Config, wait: float = 0) -> Iterator[psycopg.Connection]:
    try:
        if wait:
            conn = wait_for_database(config.dsn, wait, application_name="workerpool-cli")
        else:
            conn = connect(config.dsn, application_name="workerpool-cli")
    except psycopg.OperationalError as exc:
        fail(
            f"cannot reach the database at {config.safe_dsn}: {scrub(str(exc), config.dsn).strip()}",
            EX_UNAVAILABLE,
        )
    with conn:
        yield conn


def require_schema(conn: psycopg.Connection, config: Config) -> None:
    version = current_version(conn, config.schema)
    if version < latest_version():
        fail(
            f"the schema {config.schema!r} is at version {version}, this workerpool needs "
            f"{latest_version()}: run `workerpool migrate`",
            EX_CONFIG,
        )


@click.group()
@click.version_option(package_name="workerpool")
def main() -> None:
    """A forking worker pool that runs jobs from PostgreSQL.

    Configuration comes from WORKERPOOL_* environment variables (see the README).
    """


@main.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the tables (safe to run again, or twice at once)."""
    config = get_config()
    with database(config, wait=config.start_timeout) as conn:
        applied = migrate(conn, config.schema)
    if applied:
        click.echo(f"schema {config.schema!r} migrated to version {applied[-1]}")
    else:
        click.echo(f"schema {config.schema!r} is up to date (version {latest_version()})")


def parse_run_at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    text = value.strip()
    try:
        if text.startswith("+"):
            seconds = float(text[1:])
            if not 0 <= seconds < 10**9:
                raise ValueError
            return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        when = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        fail(
            f"--run-at {value!r} is neither ISO 8601 (2026-01-31T09:00:00+00:00) nor +SECONDS",
            EX_DATAERR,
        )
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def load_tasks(config: Config) -> bool:
    """Import the task modules so names can be checked; False when none are configured."""
    if not config.tasks:
        return False
    try:
        tasks.import_task_modules(config.tasks)
    except tasks.TaskImportError as exc:
        fail(str(exc), EX_CONFIG)
    return True


@main.command("enqueue")
@click.argument("task_name", metavar="TASK")
@click.option("--payload", help="The payload as a JSON object.")
@click.option(
    "--payload-file",
    type=click.File("rb"),
    help="JSON Lines: one payload per line, one job each ('-' for stdin). All or nothing.",
)
@click.option("--queue", default=None, help="Queue name (default: the task's, else 'default').")
@click.option(
    "--priority", type=click.IntRange(-(2**31), 2**31 - 1), default=None, help="Lower runs sooner (default 0)."
)
@click.option("--run-at", default=None, help="ISO 8601 time, or +SECONDS from now.")
@click.option("--max-attempts", type=click.IntRange(1, 1000), default=None)
def enqueue_cmd(
    task_name: str,
    payload: str | None,
    payload_file: IO[bytes] | None,
    queue: str | None,
    priority: int | None,
    run_at: str | None,
    max_attempts: int | None,
) -> None:
    """Add jobs for TASK and print their ids, one per line."""
    config = get_config()
    if payload is not None and payload_file is not None:
        fail("give --payload or --payload-file, not both", 2)
    if load_tasks(config) and task_name not in tasks.REGISTRY:
        known = ", ".join(sorted(tasks.REGISTRY)) or "none"
        fail(f"unknown task {task_name!r} (tasks in WORKERPOOL_TASKS: {known})", EX_DATAERR)
    options = {
        "settings": EnqueueSettings(config.schema, config.max_attempts, config.max_payload_bytes),
        "queue": queue,
        "priority": priority,
        "run_at": parse_run_at(run_at),
        "max_attempts": max_attempts,
    }
    with database(config) as conn:
        require_schema(conn, config)
        q = Queue(conn, config.schema)
        if payload_file is None:
            value = parse_payload(payload if payload is not None else "{}", "--payload")
            job_id = q.enqueue(build(task_name, value, options, "--payload"))
            click.echo(job_id)
            return
        with tempfile.TemporaryFile() as ids:
            with conn.transaction():
                count = enqueue_file(q, payload_file, task_name, options, ids)
            # Printed only after the commit: every id shown is a job that exists.
            ids.seek(0)
            for chunk in iter(lambda: ids.read(1 << 16), b""):
                sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        click.echo(f"enqueued {count} job(s)", err=True)


def parse_payload(text: str | bytes, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        fail(f"{where}: invalid JSON: {exc}", EX_DATAERR)


def build(task_name: str, value: Any, options: dict[str, Any], where: str) -> NewJob:
    try:
        return new_job(task_name, value, **options)
    except PayloadError as exc:
        fail(f"{where}: {exc}", EX_DATAERR)


def enqueue_file(q: Queue, stream: IO[bytes], task_name: str, options: dict[str, Any], ids: IO[bytes]) -> int:
    """Stream JSON Lines into the open transaction, a chunk at a time (bounded memory)."""
    name = getattr(stream, "name", "-")
    total = _size(stream)
    bar = None
    if sys.stderr.isatty() and total:
        bar = click.progressbar(length=total, label="enqueueing", file=sys.stderr)
        bar.__enter__()
    chunk: list[Any] = []
    count = 0
    try:
        for lineno, line in enumerate(stream, 1):
            if bar is not None:
                bar.update(len(line))
            if not line.strip():
                continue
            where = f"{name} line {lineno}"
            chunk.append(build(task_name, parse_payload(line, where), options, where))
            if len(chunk) >= ENQUEUE_CHUNK:
                count += _write_chunk(q, chunk, ids)
        count += _write_chunk(q, chunk, ids)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return count


def _write_chunk(q: Queue, chunk: list[Any], ids: IO[bytes]) -> int:
    if not chunk:
        return 0
    written = q.enqueue_many(chunk)
    ids.write(b"".join(b"%d\n" % i for i in written))
    n = len(chunk)
    chunk.clear()
    return n


def _size(stream: IO[bytes]) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return 0


@main.command("run")
def run_cmd() -> None:
    """Run the pool in the foreground until SIGTERM or SIGINT."""
    # HUP and USR1 terminate a process by default: until the master installs its handlers
    # (after a wait for the database that can last WORKERPOOL_START_TIMEOUT), a reload or a
    # resize must not kill it.
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    from workerpool.logs import setup_logging
    from workerpool.master import Master

    config = get_config(as_log=True)
    setup_logging(config.log_level, config.log_format)
    log = logging.getLogger("workerpool.master")
    try:
        os.makedirs(config.runtime_dir, mode=0o700, exist_ok=True)
        status.write(os.path.join(config.runtime_dir, ".writable"), {})  # fail now, not at the first publish
        os.unlink(os.path.join(config.runtime_dir, ".writable"))
    except OSError as exc:
        log.critical(f"WORKERPOOL_RUNTIME_DIR={config.runtime_dir!r} cannot be created: {exc}")
        sys.exit(EX_CONFIG)
    deadline = time.monotonic() + config.start_timeout
    while True:
        try:
            conn = wait_for_database(
                config.dsn, max(0.0, deadline - time.monotonic()), application_name="workerpool-master"
            )
            with conn:
                version = current_version(conn, config.schema)
            break
        except psycopg.OperationalError as exc:
            # The connection can also drop right after it was made (a restart, a network blip).
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            log.critical(
                f"database unreachable after {config.start_timeout:g}s (WORKERPOOL_START_TIMEOUT)",
                extra={"dsn": config.safe_dsn, "error": scrub(str(exc), config.dsn).strip()},
            )
            sys.exit(EX_UNAVAILABLE)
    if version < latest_version():
        log.critical(
            f"the schema {config.schema!r} is at version {version}, this workerpool needs "
            f"{latest_version()}: run `workerpool migrate`"
        )
        sys.exit(EX_CONFIG)
    if config.preload and config.tasks:
        try:
            tasks.import_task_modules(config.tasks)
        except tasks.TaskImportError as exc:
            log.critical(str(exc), exc_info=exc.__cause__)
            sys.exit(EX_CONFIG)
    sys.exit(Master(config).run())


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


@main.command("jobs")
@click.option("--status", "status_", type=click.Choice(STATUSES), default=None)
@click.option("--task", "task_name", default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def jobs_cmd(status_: str | None, task_name: str | None, limit: int, as_json: bool) -> None:
    """List jobs, newest first."""
    config = get_config()
    with database(config) as conn:
        require_schema(conn, config)
        rows = Queue(conn, config.schema).list_jobs(status_, task_name, limit)
    if as_json:
        click.echo(orjson.dumps([{k: _iso(v) for k, v in r.items()} for r in rows]).decode())
        return
    click.echo(f"{'ID':>8}  {'TASK':20} {'QUEUE':10} {'STATUS':10} {'ATT':>5}  CREATED")
    for r in rows:
        created = r["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        attempts = f"{r['attempts']}/{r['max_attempts']}"
        click.echo(f"{r['id']:>8}  {r['task'][:20]:20} {r['queue'][:10]:10} {r['status']:10} {attempts:>5}  {created}")


@main.command("job")
@click.argument("job_id", type=int)
@click.option("--json", "as_json", is_flag=True)
def job_cmd(job_id: int, as_json: bool) -> None:
    """Show one job: payload, result, attempts, last error."""
    config = get_config()
    with database(config) as conn:
        require_schema(conn, config)
        row = Queue(conn, config.schema).get_job(job_id)
    if row is None:
        fail(f"no job with id {job_id}", EX_DATAERR)
    row = {k: _iso(v) for k, v in row.items()}
    if as_json:
        click.echo(orjson.dumps(row).decode())
        return
    for key, value in row.items():
        if key in ("payload", "result") and value is not None:
            value = orjson.dumps(value).decode()
        if key == "last_error" and value:
            click.echo(f"{key}:\n{value}")
            continue
        click.echo(f"{key}: {value}")


@main.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
def cancel_cmd(job_ids: tuple[int, ...]) -> None:
    """Cancel queued jobs (running ones are left to finish)."""
    config = get_config()
    with database(config) as conn:
        n = Queue(conn, config.schema).cancel(job_ids)
    click.echo(f"cancelled {n} of {len(job_ids)} job(s)")


@main.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True)
def retry_cmd(job_ids: tuple[int, ...]) -> None:
    """Queue dead or cancelled jobs again, with a fresh set of attempts."""
    config = get_config()
    with database(config) as conn:
        n = Queue(conn, config.schema).retry(job_ids)
    click.echo(f"queued {n} of {len(job_ids)} job(s) again")


@main.command("prune")
@click.option("--older-than", type=click.FloatRange(0, 36500), required=True, help="Age in days.")
@click.option(
    "--status",
    "statuses",
    type=click.Choice(("succeeded", "cancelled", "dead")),
    multiple=True,
    help="Which finished jobs (default: succeeded and cancelled; dead ones are kept for inspection).",
)
def prune_cmd(older_than: float, statuses: tuple[str, ...]) -> None:
    """Delete finished jobs older than --older-than days, so the table does not grow forever."""
    if older_than != older_than:  # FloatRange lets NaN through
        fail("--older-than must be a number of days", 2)
    config = get_config()
    with database(config) as conn:
        require_schema(conn, config)
        n = Queue(conn, config.schema).prune(older_than * 86400, statuses or ("succeeded", "cancelled"))
    click.echo(f"deleted {n} job(s)")


@main.command("status")
@click.option("--json", "as_json", is_flag=True)
def status_cmd(as_json: bool) -> None:
    """The running pool's children, from the master's status snapshot."""
    config = get_config()
    doc = status.read(config.status_path)
    alive = status.master_alive(doc)
    if as_json:
        click.echo(orjson.dumps({"alive": alive, **(doc or {})}).decode())
        sys.exit(0 if alive else 3)
    if not doc or not alive:
        fail(f"no running pool (no fresh status in {config.runtime_dir})", 3)
    now = time.time()
    master = doc["master"]
    click.echo(
        f"master pid {master['pid']}  {master['state']}  up {_age(now - master['started_at'])}  "
        f"children {len(doc['children'])}/{doc['desired_children']}"
    )
    click.echo(
        f"{'SLOT':>4} {'PID':>7}  {'STATE':9} {'JOB':>9}  {'TASK':18} {'DONE':>7} {'FAIL':>5} {'MEM':>9}  UPTIME"
    )
    for c in doc["children"]:
        mem = f"{c['memory_bytes'] / 1048576:.1f}M"
        job = str(c["job_id"] or "-")
        click.echo(
            f"{c['slot']:>4} {c['pid']:>7}  {c['state']:9} {job:>9}  {(c['task'] or '-')[:18]:18} "
            f"{c['jobs_done']:>7} {c['jobs_failed']:>5} {mem:>9}  {_age(now - c['started_at'])}"
        )
    recycles = ", ".join(f"{k} {v}" for k, v in doc["recycles"].items() if v) or "none"
    click.echo(f"recycles: {recycles}")


def _age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


if __name__ == "__main__":
    main()
