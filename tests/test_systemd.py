"""The systemd unit and its example environment file: lint, stop-timeout nesting, a real start.

The unit cannot be started by systemd here (no systemd as PID 1, no workerpool user), so the
last test does what systemd would: the unit's Environment= lines plus its environment file
(the shipped example, as `make install` installs it), its ExecStart and ExecReload, and a stop
the way KillMode=mixed does it, with the installed paths mapped into the checkout and tmp_path.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, ROOT, wait_until
from supervisor_harness import CONF, HEALTH_CONF, MASTER, Supervisor, free_port, read_conf, supervised

from workerpool.config import load_config

UNIT = ROOT / "systemd" / "workerpool.service"
ENV_EXAMPLE = ROOT / "systemd" / "workerpool.env.example"
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")
# systemd's PATH for services: the unit must not depend on a venv being on it.
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def service(key: str, unit: Path = UNIT) -> list[str]:
    """Every value of `key` in the unit's [Service] section, in order."""
    values, section = [], None
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


def env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile= (the subset the example uses: KEY=value, optional quotes)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("\"'")
    return values


def program_environment(program: str) -> dict[str, str]:
    text = read_conf().get(f"program:{program}", "environment", fallback="")
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def timespan(value: str) -> float:
    """Seconds in a systemd time span ("90", "1min 30s"), as systemd itself reads it."""
    out = subprocess.run(["systemd-analyze", "timespan", value], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"μs: (\d+)", out)[1]) / 1e6  # type: ignore[index]


def verify(unit: Path) -> tuple[int, list[str]]:
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def executables(unit: Path) -> set[str]:
    # The first word of each command line, without systemd's prefixes (-, @, :, +, !).
    return {shlex.split(value)[0].lstrip("-@:+!") for key in EXEC_KEYS for value in service(key, unit)}


def test_unit_verifies_clean_but_for_executables_not_installed_here() -> None:
    code, lines = verify(UNIT)
    missing = sorted(path for path in executables(UNIT) if not os.path.exists(path))
    allowed = {f"workerpool.service: Command {path} is not executable: No such file or directory" for path in missing}
    assert set(lines) <= allowed, "\n".join(lines)
    assert code == (1 if lines else 0)


def test_stop_timeouts_nest_pool_grace_stopwaitsecs_timeoutstopsec() -> None:
    """Shared case C-07 on the configuration side: no layer SIGKILLs a drain the layer below allows."""
    # The pool's grace as shipped: the example environment file (which must itself be valid),
    # then anything supervisord.conf sets for the program, else the default.
    grace = load_config({**env_file(ENV_EXAMPLE), **program_environment("workerpool")}).shutdown_timeout
    conf = read_conf()
    pool_wait = conf.getint("program:workerpool", "stopwaitsecs")
    health_wait = conf.getint("program:health_app", "stopwaitsecs")
    [stop_timeout] = [timespan(value) for value in service("TimeoutStopSec")]
    # After the grace the master still kills the children and records their jobs' release,
    # retrying a lost database connection (3 tries of up to 3 s): stopwaitsecs leaves room.
    assert grace + 10 <= pool_wait
    assert pool_wait + health_wait < stop_timeout  # even if supervisord stopped them in turn


def test_env_example_documents_every_variable_with_its_default() -> None:
    text = ENV_EXAMPLE.read_text()
    sources = [*(ROOT / "workerpool").glob("*.py"), *(ROOT / "health_app").glob("*.py")]
    read = {name for path in sources for name in re.findall(r"WORKERPOOL_[A-Z_]*[A-Z]", path.read_text())}
    documented = set(re.findall(r"^#?(WORKERPOOL_[A-Z_]+)=", text, re.MULTILINE))
    assert read - documented == set()
    # A commented-out line shows the default: setting it changes nothing. Not so for the unit's
    # locations, nor for the number of children, whose default is the machine's CPU count.
    base = {"WORKERPOOL_DSN": "postgresql://localhost/db"}
    skip = {assignment.split("=", 1)[0] for assignment in service("Environment")} | {"WORKERPOOL_CHILDREN"}
    for name, value in re.findall(r"^#(WORKERPOOL_[A-Z_]+)=(.*)$", text, re.MULTILINE):
        if name not in skip:
            assert load_config({**base, name: value}) == load_config(base), f"#{name}={value}"


def localize(text: str, root: Path) -> str:
    """`text` with the installed locations replaced: the checkout's files, `root` for the rest."""
    places = {
        "/opt/workerpool/venv/bin": str(BIN),
        "/etc/workerpool/supervisord.conf": str(CONF),
        "/etc/workerpool/gunicorn.conf.py": str(HEALTH_CONF),
        "/run/workerpool": str(root / "run"),
        "/var/log/workerpool": str(root / "log"),
    }
    for installed, here in places.items():
        text = text.replace(installed, here)
    assert "/opt/workerpool" not in text and "/etc/workerpool" not in text, text
    return text


@pytest.fixture
def unit_env(db: str, tmp_path: Path) -> dict[str, str]:
    """The unit's Environment= and environment file, localized, on the test database."""
    [path] = service("EnvironmentFile")
    assert path == "/etc/workerpool/workerpool.env"  # make install creates it from the example
    env = dict(assignment.split("=", 1) for assignment in service("Environment"))
    env.update(env_file(ENV_EXAMPLE))
    env = {key: localize(value, tmp_path) for key, value in env.items()}
    env.update({"WORKERPOOL_DSN": db, "WORKERPOOL_HEALTH_BIND": f"127.0.0.1:{free_port()}", "PATH": SYSTEMD_PATH})
    return env


@pytest.fixture
def unit_service(unit_env: dict[str, str]) -> Iterator[Supervisor]:
    with supervised(Supervisor(unit_env)) as sup:
        yield sup


def test_unit_exec_start_brings_up_a_healthy_service(unit_service: Supervisor, tmp_path: Path) -> None:
    sup = unit_service
    [exec_start] = service("ExecStart")
    sup.start(shlex.split(localize(exec_start, tmp_path)))
    master = sup.wait_running()
    wait_until(lambda: sup.health()[0] == 200, 30, 0.25, "/health 200")
    n = load_config(sup.env).children  # the example leaves it to the number of CPUs
    children = wait_until(lambda: len(c := sup.children(master)) == n and c, 30, what=f"{n} children")

    # systemctl reload: every child replaced, the master kept.
    [exec_reload] = service("ExecReload")
    command = shlex.split(localize(exec_reload, tmp_path))
    reloaded = subprocess.run(command, env=sup.env, capture_output=True, text=True, timeout=60)
    assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
    wait_until(lambda: len(c := sup.children(master)) == n and c.isdisjoint(children), 30, what="new children")
    assert sup.master_pid() == master and sup.state(MASTER) == "RUNNING"

    # systemctl stop with KillMode=mixed: TERM to supervisord alone, within TimeoutStopSec.
    assert sup.proc is not None
    sup.proc.send_signal(signal.SIGTERM)
    sup.wait_gone(timeout=timespan(service("TimeoutStopSec")[0]))
