"""`make install` and `make uninstall` into a DESTDIR: the layout a VM gets, this machine untouched.

One real install (a virtualenv with the package and its dependencies) is shared by the tests;
the test that reinstalls and uninstalls works on its own copy of it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from supervisor_harness import CONF, HEALTH_CONF
from test_systemd import ENV_EXAMPLE, UNIT, executables, verify

PREFIX = "/opt/workerpool-test"  # not the default: the unit and the example must follow it
ETC = "etc/workerpool"
UNIT_PATH = "etc/systemd/system/workerpool.service"
COMMANDS = ("workerpool", "supervisord", "supervisorctl", "gunicorn")


def make(target: str, destdir: Path) -> str:
    result = subprocess.run(
        ["make", "-s", target, f"DESTDIR={destdir}", f"PREFIX={PREFIX}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A DESTDIR holding one `make install`, and what it told the operator."""
    root = tmp_path_factory.mktemp("destdir")
    return root, make("install", root)


def test_install_lays_out_the_venv_configuration_unit_and_logs(staged: tuple[Path, str], tmp_path: Path) -> None:
    root, told = staged
    venv = root / PREFIX.lstrip("/") / "venv"
    for command in COMMANDS:
        # The scripts name the final location, not the staging root.
        assert (venv / "bin" / command).read_text().splitlines()[0] == f"#!{PREFIX}/venv/bin/python"
    staged_paths = [
        p.name for p in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"] if str(root) in p.read_text("latin-1")
    ]
    assert staged_paths == []
    # A real install, not a link to the checkout: run from elsewhere, it imports its own copy.
    probe = (
        "import workerpool, health_app, supervisor, gunicorn; from workerpool.migrations import latest_version;"
        " print(workerpool.__file__, latest_version())"
    )
    out = subprocess.run(
        [venv / "bin" / "python", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    where, version = out.stdout.split()
    assert where.startswith(str(venv)) and int(version) >= 1

    etc = root / ETC
    assert (etc / "supervisord.conf").read_text() == CONF.read_text()
    assert (etc / "gunicorn.conf.py").read_text() == HEALTH_CONF.read_text()
    example = ENV_EXAMPLE.read_text().replace("/opt/workerpool", PREFIX)
    assert (etc / "workerpool.env.example").read_text() == example
    assert (etc / "workerpool.env").read_text() == example
    assert mode(etc / "workerpool.env") == 0o640  # it holds the database password
    assert mode(etc) == 0o750
    assert (root / "var/log/workerpool").is_dir()

    unit = (root / UNIT_PATH).read_text()
    assert unit == UNIT.read_text().replace("/opt/workerpool", PREFIX)
    assert "systemctl enable --now workerpool" in told and "systemctl status workerpool" in told


def test_installed_unit_verifies_without_a_single_message(staged: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = staged
    # The unit names its executables by their final paths; point them into the staging root.
    unit = tmp_path / "workerpool.service"
    unit.write_text((root / UNIT_PATH).read_text().replace(PREFIX, f"{root}{PREFIX}"))
    assert all(Path(path).is_file() for path in executables(unit))
    assert verify(unit) == (0, [])


def test_reinstall_keeps_the_env_file_and_uninstall_leaves_only_it(staged: tuple[Path, str], tmp_path: Path) -> None:
    # A copy made of hard links is quick; every file the test changes is replaced, not written into.
    root = tmp_path / "root"
    shutil.copytree(staged[0], root, symlinks=True, copy_function=os.link)
    env = root / ETC / "workerpool.env"
    env.unlink()
    env.write_text("WORKERPOOL_DSN=postgresql://mine@db/mine\n")

    told = make("install", root)
    assert env.read_text() == "WORKERPOOL_DSN=postgresql://mine@db/mine\n"
    assert "kept the existing /etc/workerpool/workerpool.env" in told

    make("uninstall", root)
    assert [str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()] == [f"{ETC}/workerpool.env"]
    assert not (root / PREFIX.lstrip("/")).exists()
    assert (root / "var/log/workerpool").is_dir()  # the logs are kept too
