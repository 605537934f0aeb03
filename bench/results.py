"""Every figure of a run, kept per system, and the summaries the table shows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import median, percentile


@dataclass
class SystemResults:
    values: dict[str, list[float]] = field(default_factory=dict)  # one per repeat
    samples: dict[str, list[float]] = field(default_factory=dict)  # pooled over repeats
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    summary: Callable[[SystemResults], float]


def _median_of(key: str) -> Callable[[SystemResults], float]:
    return lambda r: median(r.values.get(key, []))


def _pct_of(key: str, pct: float) -> Callable[[SystemResults], float]:
    return lambda r: percentile(r.samples.get(key, []), pct)


def _median_sample(key: str) -> Callable[[SystemResults], float]:
    return lambda r: median(r.samples.get(key, []))


def metrics(workers: tuple[int, ...], jobs: int, rate: float) -> list[Metric]:
    rows = [
        Metric(f"drain_{w}", f"drain {jobs} no-op jobs, {w} worker(s)", "jobs/s", True, _median_of(f"drain_{w}"))
        for w in workers
    ]
    rows += [
        Metric(f"cpu_{side}_{w}", f"{who} CPU per job, {w} worker(s)", "µs", False, _median_of(f"cpu_{side}_{w}"))
        for w in workers
        for side, who in (("workers", "workers'"), ("db", "PostgreSQL backends'"))
    ]
    rows += [
        Metric("latency_p50", "pickup latency p50", "ms", False, _pct_of("latency", 50)),
        Metric("latency_p95", "pickup latency p95", "ms", False, _pct_of("latency", 95)),
        Metric("latency_max", "pickup latency max", "ms", False, _pct_of("latency", 100)),
        Metric("enqueue_api", "bulk enqueue, API", "jobs/s", True, _median_of("enqueue_api")),
        Metric("enqueue_cli", "bulk enqueue, CLI --payload-file", "jobs/s", True, _median_of("enqueue_cli")),
        Metric("uss_child", "idle USS per worker process", "MiB", False, _median_sample("uss_child")),
        Metric("uss_master", "idle USS of the master", "MiB", False, _median_of("uss_master")),
        Metric("health_p50", f"/health p50 at {rate:g} req/s", "ms", False, _pct_of("health", 50)),
        Metric("health_p99", f"/health p99 at {rate:g} req/s", "ms", False, _pct_of("health", 99)),
        Metric("health_max", f"/health max at {rate:g} req/s", "ms", False, _pct_of("health", 100)),
        Metric("health_late", "  load generator's own lateness, p99", "ms", False, _pct_of("health_client_late", 99)),
    ]
    return rows


class Results:
    def __init__(self) -> None:
        self.systems: dict[str, SystemResults] = {}

    def add(self, label: str, values: dict[str, float], samples: dict[str, list[float]], problems: list[str]) -> None:
        r = self.systems.setdefault(label, SystemResults())
        for key, value in values.items():
            r.values.setdefault(key, []).append(value)
        for key, more in samples.items():
            r.samples.setdefault(key, []).extend(more)
        r.problems += problems

    def value(self, label: str, metric: Metric) -> float:
        r = self.systems.get(label)
        return metric.summary(r) if r else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            label: {"values": r.values, "samples": r.samples, "problems": r.problems}
            for label, r in self.systems.items()
        }
