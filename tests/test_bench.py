"""The benchmark harness runs and its exactly-once checks pass. Speed is not asserted: CI is no benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_runs_and_every_job_runs_once(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    results = document["results"]
    assert set(results) == {"workerpool", "raw SQL ceiling"}
    for label, figures in results.items():
        assert figures["problems"] == [], label
        assert set(figures["values"]) >= {"drain_1", "drain_2", "enqueue_api"}, label
        assert figures["samples"]["latency"], label
    assert "enqueue_cli" in results["workerpool"]["values"]
    assert document["table"][-1] == ["exactly once", "ok", "ok"]
