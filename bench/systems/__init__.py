"""Every system the bench measures, in the table's column order, imported only when chosen."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench.systems.base import System


@dataclass(frozen=True)
class Entry:
    name: str
    label: str
    module: str
    cls: str


REGISTRY = (
    Entry("workerpool", "workerpool", "bench.systems.workerpool", "Workerpool"),
    Entry("raw", "raw SQL ceiling", "bench.systems.rawsql", "RawSql"),
    Entry("procrastinate", "procrastinate", "bench.systems.procrastinate", "Procrastinate"),
    Entry("pgqueuer", "PgQueuer", "bench.systems.pgqueuer", "Pgqueuer"),
    Entry("graphile", "graphile-worker", "bench.systems.node", "Graphile"),
    Entry("pgboss", "pg-boss", "bench.systems.node", "PgBoss"),
)
NAMES = tuple(e.name for e in REGISTRY)


def load(names: tuple[str, ...]) -> tuple[list[System], dict[str, str]]:
    """The chosen systems that can run here, and a note for each one that cannot."""
    systems: list[System] = []
    skipped: dict[str, str] = {}
    for entry in REGISTRY:
        if entry.name not in names:
            continue
        try:
            system: System = getattr(importlib.import_module(entry.module), entry.cls)()
        except ImportError as exc:
            skipped[entry.label] = f"not installed ({exc.name}): pip install -e '.[bench]'"
            continue
        reason = system.unavailable()
        if reason:
            skipped[entry.label] = reason
        else:
            systems.append(system)
    return systems, skipped
