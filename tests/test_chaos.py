"""The chaos run in its short form (bench/chaos.py): every kind of fault, no job lost, every rerun counted."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
from conftest import ROOT


def test_a_short_chaos_run_loses_no_job_and_counts_every_rerun(tmp_path):
    report_path = tmp_path / "chaos.json"
    seed = os.environ.get("WORKERPOOL_CHAOS_SEED", "1")
    command = [sys.executable, "-m", "bench.chaos", "--seed", seed, "--seconds", "40", "--children", "3"]
    command += ["--json", str(report_path), "--log", str(tmp_path / "pool.log"), "--quiet"]
    # Generous: the run itself takes about 55 s; a loaded machine must not turn into a failure here.
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    output = f"{result.stdout}\n{result.stderr}\n(pool log: {tmp_path / 'pool.log'})"
    assert report_path.exists(), output
    report = orjson.loads(report_path.read_bytes())
    assert all(n >= 1 for n in report["faults"].values()), output
    assert report["enqueued"] >= 100, output
    assert report["lost"] == 0, output
    assert report["failures"] == [], output
    assert result.returncode == 0, output
