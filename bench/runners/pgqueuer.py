"""A PgQueuer worker process; SIGTERM sets its shutdown event, so buffers flush on the way out."""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.core.qm import QueueManager
from pgqueuer.domain.models import Job

from bench import recording
from bench.systems.pgqueuer import BATCH_SIZE, ENTRYPOINT


async def main(dsn: str, record_dir: str) -> None:
    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        recording.stamp(job.id)

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    recording.mark_ready(record_dir)
    await qm.run(batch_size=BATCH_SIZE)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
