"""A procrastinate worker process; SIGTERM makes it finish its jobs and leave (its own handler)."""

from __future__ import annotations

import asyncio
import sys

import procrastinate

from bench import recording
from bench.systems.procrastinate import CONCURRENCY, make_app


async def main(dsn: str, record_dir: str) -> None:
    app, _ = make_app(procrastinate.PsycopgConnector(conninfo=dsn))
    async with app.open_async():
        recording.mark_ready(record_dir)
        await app.run_worker_async(concurrency=CONCURRENCY)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
