"""The pool's health, judged from the master's status snapshot and the database check.

`down` means the pool cannot take work (no live master, no database, no child ready):
/health/ready fails. `degraded` means it can, but something needs a look (a missing or
silent child, a stall): /health fails too, so an operator hears of it.
"""

from __future__ import annotations

from typing import Any

from health_app.probe import DatabaseState
from workerpool import status

# Children write a heartbeat every second and the master publishes every second; this
# leaves room for a loaded host without hiding a wedged child for long.
HEARTBEAT_STALE_S = 10.0
# A child has no heartbeat until it has imported the task modules.
START_GRACE_S = 30.0
RECYCLE_REASONS = ("memory", "hard_memory", "max_jobs", "max_age", "timeout", "crash")
READY_STATES = ("idle", "busy")


def assess(
    doc: dict[str, Any] | None,
    db: DatabaseState,
    *,
    now: float,
    stall_seconds: float,
    status_path: str,
) -> dict[str, Any]:
    """The /health body; `status` is ok, degraded or down and `reasons` says why."""
    problem = master_problem(doc, now, status_path)
    alive = problem is None
    down = [f"master: {problem}"] if problem else []
    degraded: list[str] = []
    if not db.ok:
        down.append(f"database: {db.error}")
    elif db.queue_error:
        degraded.append(f"queue: not measured, so a stall cannot be seen ({db.queue_error})")
    # A dead master's children are dead or orphaned whatever its last snapshot says.
    children = [_child_view(c, now) for c in doc["children"]] if alive and doc else []
    if alive and doc:
        _judge_pool(doc, children, db, now, stall_seconds, down, degraded)
    last = doc or {}
    master = last.get("master") or {}
    return {
        "status": "down" if down else "degraded" if degraded else "ok",
        "uptime_s": round(now - master["started_at"], 3) if alive else None,
        "timestamp": round(now, 3),
        "master": {
            "pid": master.get("pid"),
            "alive": alive,
            "started_at": master.get("started_at"),
            "state": master.get("state") if alive else None,
        },
        "database": {"ok": db.ok, "latency_ms": db.latency_ms, "error": db.error},
        "desired_children": last.get("desired_children"),
        "children": children,
        "recycles": {reason: (last.get("recycles") or {}).get(reason, 0) for reason in RECYCLE_REASONS},
        "reasons": down + degraded,
    }


def master_problem(doc: dict[str, Any] | None, now: float, status_path: str) -> str | None:
    """Why the master is not alive, or None when it is."""
    if not doc:
        return f"no status snapshot at {status_path} (the pool is not running)"
    pid = doc["master"]["pid"]
    age = now - doc.get("written_at", 0)
    if age > status.STALE_AFTER:
        return f"status snapshot is {age:.0f} s old (pid {pid} stopped publishing)"
    if not status.master_alive(doc, now):
        return f"pid {pid} has exited"
    return None


def _child_view(child: dict[str, Any], now: float) -> dict[str, Any]:
    heartbeat = child.get("last_heartbeat")
    age = round(now - heartbeat, 3) if heartbeat else None
    if age is None:
        stale = now - child["started_at"] > START_GRACE_S
    else:
        stale = age > HEARTBEAT_STALE_S
    return {**child, "heartbeat_age_s": age, "stale": stale}


def _judge_pool(
    doc: dict[str, Any],
    children: list[dict[str, Any]],
    db: DatabaseState,
    now: float,
    stall_seconds: float,
    down: list[str],
    degraded: list[str],
) -> None:
    if doc["master"].get("state") == "stopping":
        degraded.append(f"master: pid {doc['master']['pid']} is stopping")
    for child in children:
        if child["stale"] and not child["retiring"]:
            degraded.append(_stale_reason(child, now))
    # A replacement is spawned before the child it replaces is told to stop, so a
    # starting child counts: a routine recycle must not fail the health check.
    live = [c for c in children if not c["stale"] and not c["retiring"] and c["state"] in ("starting", *READY_STATES)]
    if not any(c["state"] in READY_STATES for c in live):
        down.append(f"children: none ready to take work ({_states(children)})")
    desired = doc["desired_children"]
    if len(live) < desired:
        degraded.append(f"children: {len(live)} of {desired} live ({_states(children)})")
    stall = _stall(doc, db, now, stall_seconds)
    if stall:
        degraded.append(stall)


def _stale_reason(child: dict[str, Any], now: float) -> str:
    who = f"child slot {child['slot']} (pid {child['pid']})"
    if child["heartbeat_age_s"] is None:
        return f"{who}: still starting after {now - child['started_at']:.0f} s"
    return f"{who}: no heartbeat for {child['heartbeat_age_s']:.0f} s"


def _states(children: list[dict[str, Any]]) -> str:
    return ", ".join(f"slot {c['slot']} {'stale' if c['stale'] else c['state']}" for c in children) or "no children"


def _stall(doc: dict[str, Any], db: DatabaseState, now: float, stall_seconds: float) -> str | None:
    """Due jobs have waited past the limit while nothing was claimed for as long."""
    waited = db.oldest_due_age
    if waited is None or waited <= stall_seconds:
        return None
    # A pool that started a moment ago has had no chance to claim what was waiting for it.
    quiet_since = max(doc.get("last_claim_at") or 0.0, doc["master"]["started_at"])
    quiet = now - quiet_since
    if quiet <= stall_seconds:
        return None
    return (
        f"stalled: the next due job has waited {waited:.0f} s and nothing was claimed for {quiet:.0f} s"
        f" (WORKERPOOL_STALL_SECONDS={stall_seconds:g})"
    )
