"""A real gunicorn running the health app, for tests: start it, ask it, clean it up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from conftest import BIN, ROOT, _group_members, wait_until
from prometheus_client.parser import text_string_to_metric_families

# urllib would send 127.0.0.1 through an http_proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    seconds: float

    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)


class HealthApp:
    """A real `gunicorn -c health_app/gunicorn.conf.py` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **overrides: str) -> HealthApp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**self.env, "WORKERPOOL_HEALTH_BIND": f"127.0.0.1:{port}", **overrides}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", "health_app/gunicorn.conf.py", "health_app.wsgi:app"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._serving, 30, what="gunicorn to serve /health/live")
        return self

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_text()}")
        try:
            return self.get("/health/live").status == 200
        except OSError:
            return False

    def get(self, path: str) -> Answer:
        started = time.monotonic()
        try:
            with _opener.open(self.url + path, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return Answer(status, body, time.monotonic() - started)

    def health_when(self, predicate: Callable[[Answer], bool], timeout: float = 30, what: str = "") -> dict[str, Any]:
        """Poll /health until `predicate(answer)` holds; the answer's body."""
        return wait_until(lambda: (a := self.get("/health")) and predicate(a) and a.json(), timeout, what=what)

    def metrics(self) -> Samples:
        text = self.get("/metrics").body.decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.proc is None:
            return
        group = self.proc.pid
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        wait_until(lambda: not _group_members(group), 15, what="gunicorn's processes to exit")
