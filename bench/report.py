"""The table (ratios to workerpool) and the targets, as text for the terminal or Markdown for the docs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.results import Metric, Results

BASE = "workerpool"


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "jobs/s":
        return f"{value:,.0f}".replace(",", " ")
    if unit in ("ms", "µs"):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{value:.1f}"


def advantage(base: float, other: float, metric: Metric) -> float:
    """How many times better workerpool is (>1) or worse (<1) than `other`."""
    if math.isnan(base) or math.isnan(other) or base <= 0 or other <= 0:
        return math.nan
    return base / other if metric.higher_is_better else other / base


def rows(results: Results, labels: Sequence[str], metrics: Sequence[Metric]) -> list[list[str]]:
    header = ["", *labels]
    out = [header]
    for metric in metrics:
        values = [results.value(label, metric) for label in labels]
        if all(math.isnan(v) for v in values):
            continue
        base = results.value(BASE, metric)
        cells = [f"{metric.label} ({metric.unit})"]
        for label, value in zip(labels, values, strict=True):
            cell = fmt(value, metric.unit)
            ratio = advantage(base, value, metric)
            if label != BASE and not math.isnan(ratio):
                cell += f" ({ratio:.2f}×)"
            cells.append(cell)
        out.append(cells)
    checks = ["exactly once"]
    for label in labels:
        problems = results.systems[label].problems if label in results.systems else []
        checks.append("ok" if not problems else f"FAILED ({len(problems)})")
    out.append(checks)
    return out


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" + "---:|" * (len(table[0]) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    text: str
    measured: str
    met: bool | None  # None: not measured in this run


def targets(results: Results, by_key: dict[str, Metric]) -> list[Target]:
    def v(label: str, key: str) -> float:
        return results.value(label, by_key[key]) if key in by_key else math.nan

    out = []
    wp2 = v(BASE, "drain_2")
    for peer, factor in (("graphile-worker", 1.2), ("PgQueuer", 4.0)):
        other = v(peer, "drain_2")
        ratio = wp2 / other if other and not math.isnan(other) else math.nan
        out.append(
            Target(
                f"throughput, 2 children ≥ {factor:g}× {peer}'s",
                f"{fmt(wp2, 'jobs/s')} vs {fmt(other, 'jobs/s')} jobs/s = {ratio:.2f}×",
                None if math.isnan(ratio) else ratio >= factor,
            )
        )
    for key, limit in (("latency_p50", 1.0), ("latency_p95", 2.5)):
        value = v(BASE, key)
        out.append(_limit(f"pickup latency {key[-3:]} ≤ {limit:g} ms", value, limit, "ms"))
    for key, what in (("enqueue_api", "API enqueue_many"), ("enqueue_cli", "CLI --payload-file")):
        value = v(BASE, key)
        met = None if math.isnan(value) else value >= 100_000
        out.append(Target(f"bulk enqueue ≥ 100 000 jobs/s ({what})", f"{fmt(value, 'jobs/s')} jobs/s", met))
    out.append(_limit("idle child USS ≤ 15 MiB", v(BASE, "uss_child"), 15, "MiB"))
    out.append(_limit("/health p99 ≤ 20 ms at 200 req/s", v(BASE, "health_p99"), 20, "ms"))
    out.append(_growth(results, by_key))
    return out


def _limit(text: str, value: float, limit: float, unit: str) -> Target:
    return Target(text, f"{fmt(value, unit)} {unit}", None if math.isnan(value) else value <= limit)


def _growth(results: Results, by_key: dict[str, Metric]) -> Target:
    """More children help until the database saturates: 2 beats 1 clearly, and 4 gives back no more than noise."""
    keys = sorted((k for k in by_key if k.startswith("drain_")), key=lambda k: int(k.split("_")[1]))
    values = [results.value(BASE, by_key[k]) for k in keys]
    measured = ", ".join(f"{k.split('_')[1]}: {fmt(x, 'jobs/s')}" for k, x in zip(keys, values, strict=True))
    raw = [results.value("raw SQL ceiling", by_key[k]) for k in keys]
    if not all(math.isnan(x) for x in raw):
        measured += " (raw SQL ceiling " + ", ".join(fmt(x, "jobs/s") for x in raw) + ")"
    if len(values) < 2 or any(math.isnan(x) for x in values):
        return Target("throughput grows with children until the database saturates", measured, None)
    grows = values[1] > 1.1 * values[0] and all(b >= 0.9 * a for a, b in zip(values[1:], values[2:], strict=False))
    return Target("throughput grows with children until the database saturates", measured, grows)


def target_rows(found: Sequence[Target]) -> list[list[str]]:
    status = {True: "met", False: "MISSED", None: "not measured"}
    return [["target", "measured (workerpool)", ""]] + [[t.text, t.measured, status[t.met]] for t in found]
