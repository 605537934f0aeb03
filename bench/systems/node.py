"""The Node peers, graphile-worker and pg-boss, installed by npm into bench/node/node_modules.

Their workers are `node bench/node/worker.mjs`; their enqueuer is a long-lived
`node bench/node/enqueue.mjs` answering one JSON line per request, so enqueueing goes
through each system's own API and Node's start-up is never timed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg

from bench import procs
from bench.systems.base import Enqueuer, ProcessPerWorker, Run, check_recorded, expect_counts

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


def npm_install() -> str | None:
    """Install the Node peers if npm is here and they are missing; return why they can't run, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if (NODE_DIR / "node_modules" / ".package-lock.json").exists():
        return None
    if shutil.which("npm") is None:
        return "npm is not installed (the Node peers come from `npm ci` in bench/node)"
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        return f"`npm ci` in bench/node failed: {done.stderr.strip()[-300:]}"
    return None


class NodeEnqueuer(Enqueuer):
    def __init__(self, system: str, dsn: str) -> None:
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "enqueue.mjs"), system, dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.read()  # {"ready": true}: connected

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise procs.BenchError(f"the Node enqueuer exited with {self.proc.wait()}")
        answer = json.loads(line)
        if "error" in answer:
            raise procs.BenchError(f"the Node enqueuer failed: {answer['error']}")
        return answer

    def one(self) -> tuple[str, float]:
        answer = self.ask(op="one")
        return answer["id"], answer["t"]

    def bulk(self, n: int) -> float:
        return self.ask(op="bulk", n=n)["seconds"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            procs.kill_group(self.proc)  # type: ignore[arg-type]


class NodeSystem(ProcessPerWorker):
    package: str

    def unavailable(self) -> str | None:
        return npm_install()

    def versions(self) -> dict[str, str]:
        manifest = json.loads((NODE_DIR / "node_modules" / self.package / "package.json").read_text())
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        return {self.package: manifest["version"], "node": node}

    def install(self, dsn: str) -> None:
        enqueuer = NodeEnqueuer(self.name, dsn)
        try:
            enqueuer.ask(op="install")
        finally:
            enqueuer.close()

    def enqueuer(self, dsn: str) -> Enqueuer:
        return NodeEnqueuer(self.name, dsn)

    def worker_argv(self, run: Run) -> list[str]:
        argv = ["node", str(NODE_DIR / "worker.mjs"), self.name, run.dsn, str(run.record_dir)]
        return argv + (["stamp"] if run.stamp else [])

    def worker_env(self, run: Run) -> dict[str, str]:
        # graphile-worker builds its per-job success line before any logger could drop it.
        return {**super().worker_env(run), "NO_LOG_SUCCESS": "1"}


class Graphile(NodeSystem):
    name = "graphile"
    label = "graphile-worker"
    package = "graphile-worker"
    # Finished jobs are deleted; failed ones would stay.
    pending_sql = "SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs)"

    def settings(self) -> str:
        return (
            "one `run()` process per worker with its performance page's settings: concurrentJobs 24,"
            " maxPoolSize 25, localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0;"
            " NO_LOG_SUCCESS=1 and a logger that drops info/debug; enqueue with `addJob` / `addJobs`"
        )

    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        (left,) = conn.execute("SELECT count(*) FROM graphile_worker._private_jobs").fetchone()  # type: ignore[misc]
        return expect_counts("jobs left (failed or unfinished)", left, 0) + check_recorded(None, run, expected)


class PgBoss(NodeSystem):
    name = "pgboss"
    label = "pg-boss"
    package = "pg-boss"
    pending_sql = "SELECT EXISTS (SELECT 1 FROM pgboss.job WHERE name = 'bench' AND state < 'completed')"

    def settings(self) -> str:
        return (
            "one process per worker with 4 `work()` loops, batchSize 100, pollingIntervalSeconds 0.5"
            " (its minimum; pg-boss 10 has no LISTEN/NOTIFY), schedule and supervise off;"
            " enqueue with `send` / `insert`"
        )

    def verify(self, conn: psycopg.Connection, run: Run, expected: int) -> list[str]:
        rows = conn.execute("SELECT id::text, state, retry_count FROM pgboss.job WHERE name = 'bench'").fetchall()
        once = sum(1 for _, state, retries in rows if state == "completed" and retries == 0)
        return (
            expect_counts("jobs", len(rows), expected)
            + expect_counts("jobs completed at the first try", once, expected)
            + check_recorded([r[0] for r in rows], run, expected)
        )
