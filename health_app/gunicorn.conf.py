"""Gunicorn settings for the health app; from the repository root:
`gunicorn -c health_app/gunicorn.conf.py health_app.wsgi:app`
"""

from __future__ import annotations

import os
import sys

from gunicorn.workers.base import Worker

from health_app import warm_up
from health_app.settings import load_health_config
from workerpool.config import EX_CONFIG, ConfigError
from workerpool.logs import setup_logging

# Checked here, in the arbiter, so a bad environment stops gunicorn at once with the
# problems listed, instead of workers failing to boot one after another.
try:
    _config = load_health_config()
except ConfigError as exc:
    print("workerpool health app: bad configuration:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
    sys.exit(EX_CONFIG)

setup_logging(_config.log_level, _config.log_format)

bind = [_config.health_bind]
proc_name = "workerpool-health"
# One process: the failed-check counter and the cached database answer are per process,
# and a counter that jumped between workers' values from scrape to scrape would be useless.
# Requests take a millisecond, so a few threads are plenty on a 2-core host.
workers = 1
worker_class = "gthread"
threads = 4
timeout = 10
graceful_timeout = 5
keepalive = 5
# Connections are opened by the first database check, inside the worker, never before fork.
preload_app = False
# The worker's heartbeat file on disk-backed /tmp can stall the worker under I/O load.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
# Probes every few seconds would drown the log; the app logs what changes.
accesslog = None
errorlog = "-"
# Nothing needs runtime control, and the default socket path is shared by every gunicorn of the user.
control_socket_disable = True


def post_worker_init(worker: Worker) -> None:
    warm_up(worker.wsgi)
