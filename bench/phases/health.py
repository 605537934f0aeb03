"""`/health` latency under a steady request rate, against an idle workerpool pool.

Open loop: request i is due at start + i/rate whatever happened to the others, and its
latency counts from that due time, so a stalled server cannot hide its queue (no
coordinated omission). Each request opens its own connection, as a prober does.
"""

from __future__ import annotations

import asyncio
import socket
import time

import psycopg

from bench import pg, procs
from bench.phases.measure import Outcome
from bench.phases.session import work_dir
from bench.systems.base import Run
from bench.systems.workerpool import BIN, Workerpool, pool_env

APP_DIR = procs.ROOT / "health_app"
POOL_CHILDREN = 2


def unavailable() -> str | None:
    for name in ("wsgi.py", "gunicorn.conf.py"):
        if not (APP_DIR / name).exists():
            return f"health_app/{name} is not in this checkout yet"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _get(port: int, due: float) -> tuple[float, int, float]:
    """(ms from the due time to the whole response, HTTP status or 0 on error, ms the client itself was late)."""
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    late = (time.monotonic() - due) * 1000
    status = 0
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
        status = int(response.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        pass
    return (time.monotonic() - due) * 1000, status, late


async def _load(port: int, rate: float, seconds: float) -> list[tuple[float, int, float]]:
    start = time.monotonic() + 0.1
    n = int(rate * seconds)
    return await asyncio.gather(*(_get(port, start + i / rate) for i in range(n)))


def health(rate: float, seconds: float) -> Outcome:
    out = Outcome()
    system = Workerpool()
    with pg.scratch_database("health") as dsn, work_dir("health") as directory:
        system.install(dsn)
        run = Run(dsn, POOL_CHILDREN, directory, directory, stamp=False)
        pool = system.start(run)
        port = free_port()
        env = pool_env(dsn, directory / "runtime", WORKERPOOL_HEALTH_BIND=f"127.0.0.1:{port}")
        app = procs.spawn(
            [str(BIN / "gunicorn"), "-c", "health_app/gunicorn.conf.py", "health_app.wsgi:app"],
            env,
            directory / "gunicorn.log",
        )
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                procs.wait_until(lambda: system.ready(conn, run, pool), 60, "the pool to start")
            procs.wait_until(lambda: (directory / "runtime" / "status.json").exists(), 10, "the pool's status file")
            procs.wait_until(lambda: _answers(port), 30, "gunicorn to answer /health")
            results = asyncio.run(_load(port, rate, seconds))
        finally:
            out.problems += procs.stop([app, *pool.procs])
    out.samples["health"] = [ms for ms, _, _ in results]
    # The client's own lateness, to tell a slow server from a starved load generator.
    out.samples["health_client_late"] = [late for _, _, late in results]
    codes: dict[int, int] = {}
    for _, status, _ in results:
        codes[status] = codes.get(status, 0) + 1
    bad = {code: n for code, n in codes.items() if code != 200}
    if bad:
        out.problems.append(f"/health answered other than 200: {bad} (0 = connection error) of {len(results)}")
    return out


def _answers(port: int) -> bool:
    _, status, _ = asyncio.run(_get(port, time.monotonic()))
    return status != 0
