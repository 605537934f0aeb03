"""What the endpoints answer, kept apart from Flask so each piece stays small."""

from __future__ import annotations

import threading
import time
from typing import Any

from prometheus_client import generate_latest

from health_app.metrics import PoolCollector
from health_app.probe import DatabaseProbe
from health_app.report import assess, master_problem
from workerpool import status
from workerpool.config import Config


class HealthService:
    """One per worker process: the database check and the failure count live here."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.probe = DatabaseProbe(config.dsn, config.schema, config.queues)
        self._failures = 0
        self._lock = threading.Lock()

    def report(self) -> dict[str, Any]:
        return assess(
            status.read(self.config.status_path),
            self.probe.state(),
            now=time.time(),
            stall_seconds=self.config.stall_seconds,
            status_path=self.config.status_path,
        )

    def health(self) -> tuple[dict[str, Any], int]:
        body = self.report()
        if body["status"] == "ok":
            return body, 200
        with self._lock:
            self._failures += 1
        return body, 503

    def ready(self) -> tuple[dict[str, Any], int]:
        body = self.report()
        ready = body["status"] != "down"
        return {"ready": ready, "status": body["status"], "reasons": body["reasons"]}, 200 if ready else 503

    def metrics(self) -> bytes:
        doc = status.read(self.config.status_path)
        alive = master_problem(doc, time.time(), self.config.status_path) is None
        with self._lock:
            failures = self._failures
        return generate_latest(PoolCollector(doc, alive, self.probe.state(), failures))
