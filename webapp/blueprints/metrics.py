"""``GET /metrics`` (INTERFACES.md): Prometheus text format, no sign-in.

Public like ``/healthz``: in production bind the console's metrics port to an internal address (or
block ``/metrics`` at the proxy) so only Prometheus reaches it. The values come from the database at
scrape time (``webapp.metrics.DatabaseCollector``), so any web node answers the same.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app

from webapp.policy import public

bp = Blueprint("metrics", __name__)

_KEY = "metrics_registry"


def _registry() -> Any:
    """This app's ``CollectorRegistry``, built on first use (one per app, never the global one)."""
    registry = current_app.extensions.get(_KEY)
    if registry is None:
        from webapp import runtime
        from webapp.jobs import queue_name
        from webapp.metrics import build_registry

        rt = runtime()
        redis_url = rt.config.redis_url
        registry = build_registry(rt.db, redis_url, queue_name(rt) if redis_url else None)
        current_app.extensions[_KEY] = registry
    return registry


@bp.get("/metrics")
@public
def metrics() -> Response:
    """The CONSOLE.md §2.2 metrics the console can compute, in the Prometheus text format."""
    try:  # imported here: a node without prometheus_client still serves the console
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    except ImportError:
        abort(503, description="prometheus_client is not installed")
    body = generate_latest(_registry())
    return Response(
        body, status=200, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"}
    )
