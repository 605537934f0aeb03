"""Prometheus metrics, built per scrape from the status snapshot and the cached database check.

The master already aggregates its children's counters into the snapshot, so a plain
collector over one snapshot is exact: no multiprocess mode, no state kept between scrapes
except this process's own count of failed health checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from health_app.probe import DatabaseState
from health_app.report import RECYCLE_REASONS

OUTCOMES = ("succeeded", "retry", "dead")  # the order of a task's counters in the snapshot
CHILD_STATES = ("starting", "idle", "busy", "stopping")


class PoolCollector(Collector):
    def __init__(self, doc: dict[str, Any] | None, alive: bool, db: DatabaseState, health_failures: int) -> None:
        self.doc = doc
        self.alive = alive
        self.db = db
        self.health_failures = health_failures

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("workerpool_up", "1 when the pool's master is alive", value=int(self.alive))
        if self.alive and self.doc:
            yield from _pool(self.doc)
        yield from _database(self.db)
        yield CounterMetricFamily(
            "workerpool_health_check_failures",
            "/health answers that were 503, counted by this health app process",
            value=self.health_failures,
        )


def _pool(doc: dict[str, Any]) -> Iterator[Metric]:
    started = doc["master"]["started_at"]
    yield GaugeMetricFamily("workerpool_master_start_time_seconds", "Master start, unix time", value=started)
    yield GaugeMetricFamily("workerpool_children_desired", "Children the master keeps", value=doc["desired_children"])
    yield from _jobs(doc)
    yield from _children(doc["children"])
    recycles = CounterMetricFamily("workerpool_recycles", "Children replaced, by reason", labels=["reason"])
    for reason in RECYCLE_REASONS:
        recycles.add_metric([reason], doc["recycles"].get(reason, 0))
    yield recycles


def _jobs(doc: dict[str, Any]) -> Iterator[Metric]:
    finished = CounterMetricFamily(
        "workerpool_jobs_finished",
        "Job attempts finished, by task and outcome (retry: failed and queued again)",
        labels=["task", "outcome"],
    )
    durations = HistogramMetricFamily("workerpool_job_duration_seconds", "Job run time, by task", labels=["task"])
    bounds = [floatToGoString(b) for b in doc["duration_buckets"]]
    for task, entry in sorted(doc["jobs"].items()):
        for outcome, count in zip(OUTCOMES, entry[:3], strict=True):
            finished.add_metric([task, outcome], count)
        # The snapshot counts each run in its own bucket; Prometheus buckets are cumulative,
        # and runs longer than the last bound are only in +Inf.
        cumulative, buckets = 0.0, []
        for bound, count in zip(bounds, entry[4:], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        buckets.append(("+Inf", sum(entry[:3])))
        durations.add_metric([task], buckets, sum_value=entry[3])
    yield finished
    yield durations


def _children(children: list[dict[str, Any]]) -> Iterator[Metric]:
    counts = Counter(c["state"] for c in children)
    states = GaugeMetricFamily("workerpool_children", "Children, by state", labels=["state"])
    # Every known state always has a series, so a state's count can drop to 0 on a graph.
    for state in (*CHILD_STATES, *sorted(set(counts) - set(CHILD_STATES))):
        states.add_metric([state], counts[state])
    yield states
    # During a recycle two children share a slot; the snapshot lists the newer one last.
    newest = {c["slot"]: c for c in children if c.get("memory_bytes") is not None}
    memory = GaugeMetricFamily(
        "workerpool_child_memory_bytes", "Memory of the child in each slot (USS, or RSS)", labels=["slot"]
    )
    for slot, child in sorted(newest.items()):
        memory.add_metric([str(slot)], child["memory_bytes"])
    yield memory


def _database(db: DatabaseState) -> Iterator[Metric]:
    yield GaugeMetricFamily("workerpool_database_up", "1 when the database answered the last check", value=int(db.ok))
    if not db.ok:
        return  # the figures below would be stale
    if db.latency_ms is not None:
        yield GaugeMetricFamily(
            "workerpool_database_latency_seconds", "Round trip of a trivial query", value=db.latency_ms / 1000
        )
    if db.queue_error:
        return
    depth = GaugeMetricFamily("workerpool_queue_jobs", "Unfinished jobs, by queue and state", labels=["queue", "state"])
    for queue, state, count in sorted(db.queue_counts):
        depth.add_metric([queue, state], count)
    yield depth
    yield GaugeMetricFamily(
        "workerpool_queue_oldest_due_age_seconds",
        "How long the longest-waiting due job has waited (0 when none is due)",
        value=db.oldest_due_age or 0.0,
    )
