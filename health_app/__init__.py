"""The health app: /health, /health/live, /health/ready and /metrics for a workerpool pool.

It runs in its own processes under gunicorn and only reads what the master publishes and
what the database answers. It never imports task code: nothing a task does at import
time can take down the process that reports on the pool.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from health_app.service import HealthService
from health_app.settings import load_health_config
from workerpool.config import Config

EXTENSION = "workerpool_health"


def create_app(config: Config | None = None) -> Flask:
    """The Flask app; opens no connection (the first database check does, in the worker)."""
    service = HealthService(config or load_health_config())
    app = Flask(__name__)
    app.json.sort_keys = False  # keep the documented field order
    app.extensions[EXTENSION] = service

    @app.get("/health")
    def health() -> tuple[Response, int]:
        body, code = service.health()
        return jsonify(body), code

    @app.get("/health/live")
    def live() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/health/ready")
    def ready() -> tuple[Response, int]:
        body, code = service.ready()
        return jsonify(body), code

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(service.metrics(), content_type=CONTENT_TYPE_LATEST)

    @app.after_request
    def no_store(response: Response) -> Response:
        # A cached health answer is a wrong one.
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def warm_up(app: Flask) -> None:
    """Start the first database check as a worker boots, so its first request finds an answer."""
    app.extensions[EXTENSION].probe.refresh()
