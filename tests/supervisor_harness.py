"""A real supervisord on the shipped supervisord.conf, for tests, driven by supervisorctl.

Every process it starts carries a marker in its environment, so a test can prove that
nothing of it (supervisord, master, child, gunicorn) outlives `supervisorctl shutdown`.
"""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from configparser import RawConfigParser
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psutil
from conftest import BIN, ROOT, wait_until

CONF = ROOT / "supervisord.conf"
HEALTH_CONF = ROOT / "health_app" / "gunicorn.conf.py"
MARKER = "WORKERPOOL_TEST_SUPERVISOR"
MASTER = "workerpool"  # the master's program name, also the group's
HEALTH = "workerpool:health_app"


def read_conf() -> RawConfigParser:
    parser = RawConfigParser()
    parser.read(CONF)
    return parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries `marker`: everything a test started."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def checkout_env(env: dict[str, str], root: Path) -> dict[str, str]:
    """`env` plus the locations supervisord.conf needs, as a checkout sets them."""
    return {
        **env,
        "WORKERPOOL_RUNTIME_DIR": str(root / "run"),
        "WORKERPOOL_LOG_DIR": str(root / "log"),
        "WORKERPOOL_BIN_DIR": str(BIN),
        "WORKERPOOL_HEALTH_CONF": str(HEALTH_CONF),
        "WORKERPOOL_HEALTH_BIND": f"127.0.0.1:{free_port()}",
    }


class Supervisor:
    """One supervisord on the shipped configuration, in the environment `env` (nothing else)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.marker = uuid.uuid4().hex
        self.env = {**env, MARKER: self.marker}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_dir(self) -> Path:
        return Path(self.env["WORKERPOOL_LOG_DIR"])

    def start(self, command: list[str] | None = None, **overrides: str) -> Supervisor:
        """Start supervisord in the foreground (or `command`, e.g. the unit's ExecStart)."""
        self.env.update(overrides)
        Path(self.env["WORKERPOOL_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "supervisord.out", "ab") as out:
            self.proc = subprocess.Popen(
                command or [str(BIN / "supervisord"), "-n", "-c", str(CONF)],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(CONF), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict[str, tuple[str, str]]:
        """`supervisorctl status`: name -> (state, description)."""
        out = self.ctl("status").stdout
        rows = (re.match(r"^(\S+)\s+([A-Z]+)\s*(.*)$", line) for line in out.splitlines())
        return {m[1]: (m[2], m[3]) for m in rows if m}

    def state(self, name: str) -> str | None:
        return self.status().get(name, (None, ""))[0]

    def wait_state(self, name: str, state: str, timeout: float = 60) -> None:
        wait_until(lambda: self.state(name) == state, timeout, 0.25, f"{name} {state}")

    def wait_running(self) -> int:
        """Both programs RUNNING; the master's pid."""
        self.wait_state(MASTER, "RUNNING")
        self.wait_state(HEALTH, "RUNNING")
        return self.master_pid()

    def master_pid(self) -> int:
        state, description = self.status()[MASTER]
        assert state == "RUNNING", (state, description)
        return int(re.match(r"pid (\d+),", description)[1])  # type: ignore[index]

    def children(self, master_pid: int) -> set[int]:
        try:
            return {c.pid for c in psutil.Process(master_pid).children() if c.status() != psutil.STATUS_ZOMBIE}
        except psutil.NoSuchProcess:
            return set()

    def health(self) -> tuple[int, dict[str, Any]]:
        url = f"http://{self.env['WORKERPOOL_HEALTH_BIND']}/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, orjson.loads(exc.read())

    def health_when(self, code: int, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        """Poll /health (gunicorn may not listen yet) until it answers `code`."""

        def answer() -> tuple[int, dict[str, Any]] | None:
            try:
                got = self.health()
            except OSError:
                return None
            return got if got[0] == code else None

        return wait_until(answer, timeout, 0.25, f"/health {code}")

    def pool_log(self) -> list[dict[str, Any]]:
        lines = (self.log_dir / "workerpool.log").read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]

    def supervisord_log(self) -> str:
        path = self.log_dir / "supervisord.log"
        return path.read_text() if path.exists() else ""  # supervisord may not have written it yet

    def processes(self) -> list[psutil.Process]:
        return marked_processes(self.marker)

    def shutdown(self) -> None:
        """`supervisorctl shutdown`; then nothing of this test may be left alive."""
        assert self.proc is not None
        result = self.ctl("shutdown")
        assert result.returncode == 0, result.stdout + result.stderr
        self.wait_gone()

    def wait_gone(self, timeout: float = 90) -> None:
        """supervisord exits 0 and every process of the test is gone."""
        assert self.proc is not None
        assert self.proc.wait(timeout) == 0
        wait_until(lambda: not self.processes(), 30, 0.25, "every process of the test to exit")

    def kill_leftovers(self) -> None:
        """After a failed test: SIGKILL whatever is left, so it cannot disturb the next one."""
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.wait(30)


@contextmanager
def supervised(sup: Supervisor) -> Iterator[Supervisor]:
    """Shut `sup` down at the end, proving nothing is left; kill the leftovers if that fails."""
    try:
        yield sup
        if sup.proc is not None and sup.proc.poll() is None:
            sup.shutdown()
    finally:
        sup.kill_leftovers()
