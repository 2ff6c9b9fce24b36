"""``GET /healthz`` (INTERFACES.md): database and queue status, no sign-in."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from webapp.policy import public

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@public
def healthz() -> Any:
    """200 with db ok and queue ok/degraded; 503 when the database cannot be reached."""
    from webapp import runtime

    rt = runtime()
    status = {"status": "ok", "db": "ok", "queue": "ok"}
    try:
        with rt.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        status.update(status="down", db="down")
        return jsonify(status), 503
    if rt.config.redis_url:
        try:
            from redis import Redis

            Redis.from_url(rt.config.redis_url, socket_timeout=1).ping()
        except Exception:
            status["queue"] = "degraded"
    return jsonify(status)
