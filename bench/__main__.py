"""`python -m bench`: measure workerpool and its peers on this machine, in one run, alternating systems.

Every measurement gets a fresh wp_bench_* database and fresh workers; the systems take turns
within each step (their order rotates from step to step and repeat to repeat), so drift on a
shared machine hits them all alike. The run ends with one table, ratios to workerpool, and
the targets; it exits non-zero when any exactly-once check or measurement failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import machine, report
from bench.phases import health, measure
from bench.phases.measure import Outcome
from bench.procs import ROOT
from bench.results import Results, metrics
from bench.systems import NAMES, load
from bench.systems.base import System

PHASES = ("drain", "latency", "enqueue", "health")
QUICK_SYSTEMS = ("workerpool", "raw")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20_000, help="jobs per drain (default 20000)")
    p.add_argument("--workers", default="1,2,4", help="worker counts for the drain (default 1,2,4)")
    p.add_argument("--repeat", type=int, default=1, help="rounds over every step (default 1)")
    p.add_argument("--only", default=None, help=f"comma-separated systems (default all: {','.join(NAMES)})")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated (default {','.join(PHASES)})")
    p.add_argument("--latency-samples", type=int, default=200, help="jobs timed per latency run (default 200)")
    p.add_argument("--spacing-ms", type=float, default=20.0, help="gap between latency jobs (default 20)")
    p.add_argument("--latency-workers", type=int, default=2, help="workers of the latency/memory run (default 2)")
    p.add_argument("--enqueue-jobs", type=int, default=100_000, help="jobs per bulk enqueue (default 100000)")
    p.add_argument("--health-rate", type=float, default=200.0, help="/health requests per second (default 200)")
    p.add_argument("--health-seconds", type=float, default=10.0, help="length of the /health load (default 10)")
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, workerpool and raw SQL, no health")
    p.add_argument("--note", default="", help="a remark stored with the results, e.g. 'machine shared/noisy'")
    p.add_argument("--json", type=Path, default=None, help="where to write every figure (default bench/results/)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs = min(args.jobs, 300)
        args.workers = "1,2"
        args.latency_samples = min(args.latency_samples, 20)
        args.enqueue_jobs = min(args.enqueue_jobs, 2000)
        args.only = args.only or ",".join(QUICK_SYSTEMS)
        if args.phases == ",".join(PHASES):
            args.phases = "drain,latency,enqueue"
    args.workers = tuple(int(w) for w in args.workers.split(","))
    args.only = tuple(s.strip() for s in (args.only or ",".join(NAMES)).split(","))
    args.phases = tuple(s.strip() for s in args.phases.split(","))
    for name in args.only:
        if name not in NAMES:
            p.error(f"unknown system {name!r} (known: {', '.join(NAMES)})")
    for phase in args.phases:
        if phase not in PHASES:
            p.error(f"unknown phase {phase!r} (known: {', '.join(PHASES)})")
    return args


def steps(args: argparse.Namespace) -> list[tuple[str, Callable[[System], Outcome]]]:
    """One repeat's steps, each run for every system in turn."""
    out: list[tuple[str, Callable[[System], Outcome]]] = []
    if "drain" in args.phases:
        for w in args.workers:
            out.append((f"drain/{w}", lambda s, w=w: measure.drain(s, w, args.jobs)))
    if "latency" in args.phases:
        lw = args.latency_workers
        out.append(("latency", lambda s: measure.latency(s, lw, args.latency_samples, args.spacing_ms / 1000)))
    if "enqueue" in args.phases:
        out.append(("enqueue", lambda s: measure.enqueue(s, args.enqueue_jobs)))
    return out


def attempt(what: str, action: Callable[[], Outcome]) -> Outcome:
    """A measurement that fails becomes a problem in the table, not the end of the run."""
    started = time.monotonic()
    try:
        outcome = action()
    except Exception as exc:
        notes = "; ".join(getattr(exc, "__notes__", []))
        print(f"  {what}: ERROR {exc} {notes}", file=sys.stderr)
        traceback.print_exc(limit=3, file=sys.stderr)
        outcome = Outcome(problems=[f"{what}: {type(exc).__name__}: {exc} {notes}".strip()])
    shown = ", ".join(f"{k} {v:,.1f}" for k, v in outcome.values.items())
    shown += "".join(f", {k} n={len(v)}" for k, v in outcome.samples.items())
    status = "ok" if not outcome.problems else "PROBLEMS: " + " | ".join(outcome.problems)
    print(f"  {what}: {shown} [{time.monotonic() - started:.1f}s] {status}", file=sys.stderr, flush=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    systems, skipped = load(args.only)
    for label, why in skipped.items():
        print(f"skipping {label}: {why}", file=sys.stderr)
    if "health" in args.phases and "workerpool" in args.only:
        why = health.unavailable()
        if why:
            skipped["/health"] = why
            print(f"skipping /health: {why}", file=sys.stderr)
    facts = machine.facts(systems)
    results = Results()
    for repeat in range(args.repeat):
        for n, (name, step) in enumerate(steps(args)):
            shift = (repeat + n) % len(systems) if systems else 0
            for system in systems[shift:] + systems[:shift]:
                what = f"[{repeat + 1}/{args.repeat}] {name} {system.label}"
                outcome = attempt(what, lambda s=system, step=step: step(s))
                results.add(system.label, outcome.values, outcome.samples, outcome.problems)
        if "health" in args.phases and "workerpool" in args.only and "/health" not in skipped:
            what = f"[{repeat + 1}/{args.repeat}] /health"
            outcome = attempt(what, lambda: health.health(args.health_rate, args.health_seconds))
            results.add("workerpool", outcome.values, outcome.samples, outcome.problems)
    facts["load_at_end"] = machine.load()
    return finish(args, systems, skipped, facts, results)


def finish(
    args: argparse.Namespace, systems: list[System], skipped: dict[str, str], facts: dict, results: Results
) -> int:
    found = metrics(args.workers, args.jobs, args.health_rate)
    labels = [s.label for s in systems]
    table = report.rows(results, labels, found)
    goals = report.target_rows(report.targets(results, {m.key: m for m in found}))
    notes = [f"{label}: skipped, {why}" for label, why in skipped.items()]
    problems = [f"{label}: {p}" for label, r in results.systems.items() for p in r.problems]
    print()
    print(report.text_table(table))
    print("\n(×N: how many times better workerpool is; below 1, the peer is better)\n")
    print(report.text_table(goals))
    for line in notes + problems:
        print(line)
    document = {
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "markdown")},
        "facts": facts,
        "settings": {s.label: s.settings() for s in systems},
        "skipped": skipped,
        "results": results.to_json(),
        "table": table,
        "targets": goals,
    }
    path = args.json or ROOT / "bench" / "results" / time.strftime("bench-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str))
    print(f"\nevery figure: {path}")
    if args.markdown:
        listed = "".join(f"- {line}\n" for line in notes + problems)
        args.markdown.write_text(f"{report.markdown_table(table)}\n\n{report.markdown_table(goals)}\n\n{listed}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
