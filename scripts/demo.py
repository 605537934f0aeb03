"""`make demo`: the pool, under supervisord, digesting every file of the Python standard library.

Without WORKERPOOL_DSN it starts a private PostgreSQL under ./var (scripts/private-postgres.sh)
with a fresh `workerpool_demo` database. Then: `workerpool migrate`, supervisord in the
foreground with the pool and the health app (the shipped supervisord.conf, its files under
./var), one `file_digest` job per file, a live progress line, a summary, /health and
`supervisorctl status`. Everything it started is stopped again at the end, on Ctrl-C or on
an error: no process is left running.

Run it with the venv's Python (the Makefile does): its bin directory holds the commands.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
BIN = Path(sys.executable).parent
CONF = ROOT / "supervisord.conf"
QUEUE = "demo"  # the demo's pool claims only its own jobs, even on a shared database
DATABASE = "workerpool_demo"
STALL_SECONDS = 60


class DemoError(Exception):
    pass


def interrupted(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def private_postgres(cleanup: contextlib.ExitStack) -> str:
    """Start the private cluster (stopped again by `cleanup`); the DSN of a fresh demo database."""
    script = [str(ROOT / "scripts" / "private-postgres.sh")]
    pg_dir = str(VAR / "pg")
    step(f"private PostgreSQL in {pg_dir} (Unix socket only)")
    cleanup.callback(subprocess.run, [*script, "stop", pg_dir], check=True)
    admin = subprocess.run([*script, "start", pg_dir], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return make_conninfo(admin, dbname=DATABASE)


def demo_env(cleanup: contextlib.ExitStack) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("WORKERPOOL_DSN"):
        env["WORKERPOOL_DSN"] = private_postgres(cleanup)
    env.update(
        {
            "WORKERPOOL_TASKS": "workerpool.examples",
            "WORKERPOOL_QUEUES": QUEUE,
            "WORKERPOOL_RUNTIME_DIR": str(VAR / "run"),
            "WORKERPOOL_LOG_DIR": str(VAR / "log"),
            "WORKERPOOL_BIN_DIR": str(BIN),
            "WORKERPOOL_HEALTH_CONF": str(ROOT / "health_app" / "gunicorn.conf.py"),
        }
    )
    env.setdefault("WORKERPOOL_HEALTH_BIND", f"127.0.0.1:{free_port()}")
    return env


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "supervisorctl"), "-c", str(CONF), *args], env=env, cwd=ROOT, capture_output=True, text=True
    )


def start_supervisord(env: dict[str, str], cleanup: contextlib.ExitStack) -> subprocess.Popen[bytes]:
    step(f"supervisord in the foreground (logs in {VAR / 'log'})")
    (VAR / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    (VAR / "log").mkdir(parents=True, exist_ok=True)
    with open(VAR / "log" / "supervisord.out", "ab") as out:
        # Its own session: a Ctrl-C reaches the demo, which then stops supervisord in order.
        proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(CONF)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cleanup.callback(stop_supervisord, proc, env)
    deadline = time.monotonic() + 60
    # RUNNING comes startsecs after the spawn (`status` exits 0 for STARTING and BACKOFF too).
    while not all(line.split()[1:2] == ["RUNNING"] for line in ctl(env, "status").stdout.splitlines() or [""]):
        if proc.poll() is not None:
            raise DemoError(f"supervisord exited with {proc.returncode}: see {VAR / 'log'}")
        if time.monotonic() > deadline:
            raise DemoError(f"the programs did not start:\n{ctl(env, 'status').stdout}see {VAR / 'log'}")
        time.sleep(0.5)
    return proc


def stop_supervisord(proc: subprocess.Popen[bytes], env: dict[str, str]) -> None:
    step("supervisorctl shutdown")
    if proc.poll() is None and ctl(env, "shutdown").returncode != 0:
        proc.terminate()  # the control socket is not up yet; TERM is supervisord's shutdown too
    proc.wait(120)


def stdlib_files() -> list[str]:
    """Every regular file of the standard library, without installed packages or bytecode."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "dist-packages", "__pycache__"}
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
    return found


def enqueue(env: dict[str, str]) -> tuple[int, int]:
    """One file_digest job per file; (the lowest job id, the number of jobs)."""
    files = stdlib_files()
    payloads = VAR / "demo-payloads.jsonl"
    payloads.write_bytes(b"".join(orjson.dumps({"path": path}) + b"\n" for path in files))
    step(f"enqueueing {len(files)} file_digest jobs, one per file under {sysconfig.get_paths()['stdlib']}")
    result = subprocess.run(
        [str(BIN / "workerpool"), "enqueue", "file_digest", "--payload-file", str(payloads), "--queue", QUEUE],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
    )
    ids = [int(line) for line in result.stdout.split()]
    return min(ids), len(ids)


def watch(env: dict[str, str], proc: subprocess.Popen[bytes], first_id: int, total: int) -> dict[str, Any]:
    """Poll the jobs table until every demo job is done, showing progress; the final counts."""
    schema = sql.Identifier(env.get("WORKERPOOL_SCHEMA") or "workerpool")
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,"
        " count(*) FILTER (WHERE status = 'dead') AS dead,"
        " coalesce(sum((result->>'bytes')::bigint), 0)::bigint AS bytes,"
        # Times count from the enqueue's transaction, by the database's clock: until now, and
        # until the last job done.
        " extract(epoch FROM clock_timestamp() - min(created_at))::float AS elapsed,"
        " extract(epoch FROM max(finished_at) - min(created_at))::float AS span"
        " FROM {}.jobs WHERE queue = %s AND id >= %s"
    ).format(schema)
    tty = sys.stdout.isatty()
    last_change = last_line = time.monotonic()
    done_before = -1
    with psycopg.connect(env["WORKERPOOL_DSN"], autocommit=True) as conn:
        while True:
            row = conn.execute(query, (QUEUE, first_id)).fetchone()
            succeeded, dead, hashed, elapsed, span = row
            done = succeeded + dead
            now = time.monotonic()
            line = f"{done}/{total} done  {done / elapsed:7.1f} jobs/s  {elapsed:6.1f} s"
            if tty:
                print(f"\r    {line}", end="", flush=True)
            elif now - last_line >= 2 or done >= total:
                print(f"    {line}", flush=True)  # one line every 2 s in a log, not a carriage-return smear
                last_line = now
            if done >= total:
                if tty:
                    print()
                return {"succeeded": succeeded, "dead": dead, "bytes": hashed, "seconds": span}
            if done != done_before:
                done_before, last_change = done, now
            elif now - last_change > STALL_SECONDS:
                raise DemoError(f"no job finished for {STALL_SECONDS} s: see {VAR / 'log' / 'workerpool.log'}")
            if proc.poll() is not None:
                raise DemoError(f"supervisord exited with {proc.returncode}: see {VAR / 'log'}")
            time.sleep(0.25)


def show_health(env: dict[str, str]) -> None:
    url = f"http://{env['WORKERPOOL_HEALTH_BIND']}/health"
    step(f"curl {url}")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            code, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    print(f"HTTP {code}")
    print(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode())


def demo(cleanup: contextlib.ExitStack) -> int:
    env = demo_env(cleanup)
    step("workerpool migrate")
    subprocess.run([str(BIN / "workerpool"), "migrate"], env=env, check=True)
    proc = start_supervisord(env, cleanup)
    print(ctl(env, "status").stdout, end="")
    first_id, total = enqueue(env)
    result = watch(env, proc, first_id, total)
    step(
        f"summary: {total} jobs, {result['succeeded']} succeeded, {result['dead']} dead, "
        f"{result['bytes'] / 1e6:.1f} MB hashed in {result['seconds']:.2f} s from enqueue to the last one "
        f"({total / result['seconds']:.0f} jobs/s)"
    )
    show_health(env)
    step("supervisorctl status")
    print(ctl(env, "status").stdout, end="")
    return 0 if result["dead"] == 0 else 1


def main() -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, interrupted)
    cleanup = contextlib.ExitStack()
    try:
        return demo(cleanup)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except (DemoError, subprocess.CalledProcessError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup.close()
        step(f"everything stopped; demo wall time {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
