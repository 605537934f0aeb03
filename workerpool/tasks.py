"""The task registry: what `@task` records and how a payload becomes a call."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class NonRetryableError(Exception):
    """Raise from a task to make its job `dead` at once: retrying cannot help."""


class JobTimeout(BaseException):
    """Raised inside a task whose job ran past its timeout.

    A BaseException, so a task's broad `except Exception` does not swallow it.
    """


class TaskImportError(Exception):
    """A module named in WORKERPOOL_TASKS failed to import."""


@dataclass(frozen=True)
class Task:
    name: str
    fn: Callable[..., Any]
    queue: str
    priority: int
    max_attempts: int | None
    timeout: float | None
    signature: inspect.Signature
    required: frozenset[str]  # keyword arguments without a default
    accepted: frozenset[str] | None  # every keyword it takes; None when it takes **kwargs


@dataclass(frozen=True)
class JobContext:
    """What a running task can learn about its job (see `current_job`)."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int


REGISTRY: dict[str, Task] = {}
_current: JobContext | None = None


def task(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int | None = None,
    timeout: float | None = None,
) -> Any:
    """Register a function as a task; its payload's keys are its keyword arguments.

    Usable bare (`@task`) or with options (`@task(name="x", max_attempts=3)`).
    """

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        task_name = name or f"{func.__module__}.{func.__qualname__}"
        signature = inspect.signature(func)
        keywords = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
        REGISTRY[task_name] = Task(
            name=task_name,
            fn=func,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout=timeout,
            signature=signature,
            # A positional-only argument can never come from a payload: keep such a task on the
            # slow path, where Signature.bind explains the mismatch.
            required=frozenset(p.name for p in keywords if p.default is p.empty)
            | {f"/{p.name}" for p in signature.parameters.values() if p.kind == p.POSITIONAL_ONLY},
            accepted=None if takes_kwargs else frozenset(p.name for p in keywords),
        )
        return func

    return register(fn) if fn is not None else register


def current_job() -> JobContext | None:
    """The job the calling task is running, or None outside a job."""
    return _current


def set_current_job(context: JobContext | None) -> None:
    global _current
    _current = context


def import_task_modules(modules: tuple[str, ...]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # a module may even call sys.exit at import
            raise TaskImportError(
                f"WORKERPOOL_TASKS: importing {module!r} failed: {type(exc).__name__}: {exc}"
            ) from exc


def bind(task_: Task, payload: Any) -> dict[str, Any]:
    """Check that `payload` fits the task's signature; raise NonRetryableError if not."""
    if not isinstance(payload, dict):
        raise NonRetryableError(
            f"payload must be a JSON object of keyword arguments for {task_.name!r}, got {type(payload).__name__}"
        )
    keys = payload.keys()
    if task_.required <= keys and (task_.accepted is None or keys <= task_.accepted):
        return payload  # the common case, checked without building a BoundArguments
    try:
        task_.signature.bind(**payload)
    except TypeError as exc:
        raise NonRetryableError(f"payload does not fit task {task_.name!r}: {exc}") from None
    return payload
