"""The health app's slice of the pool's configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping

from workerpool.config import Config, load_config

# Only these are validated: a mistake in a pool-only variable must not stop the one
# process that can report it (the pool itself refuses to start and says why).
HEALTH_VARIABLES = (
    "WORKERPOOL_DSN",
    "DATABASE_URL",
    "WORKERPOOL_SCHEMA",
    "WORKERPOOL_QUEUES",
    "WORKERPOOL_RUNTIME_DIR",
    "WORKERPOOL_STALL_SECONDS",
    "WORKERPOOL_HEALTH_BIND",
    "WORKERPOOL_LOG_LEVEL",
    "WORKERPOOL_LOG_FORMAT",
)


def load_health_config(env: Mapping[str, str] | None = None) -> Config:
    """The pool's Config built from the health app's variables alone; raises ConfigError."""
    env = os.environ if env is None else env
    return load_config({name: env[name] for name in HEALTH_VARIABLES if name in env})
