"""The alerts panel (CONSOLE.md §2.3): what the periodic rule evaluation raised, and acknowledging it.

``webapp.services.alerts.evaluate_alerts`` runs from the periodic sweep (RQ worker or the demo's
in-process runner) and writes ``alerts`` rows; job failures that must reach a person (a must-apply
cascade that failed) land there too. This page lists the open ones, most severe and oldest first,
with their age and the escalation tier they have reached, and the recently closed ones. The panel
block polls itself every 10 s (ops tiles, §3), so a new page shows up without a reload.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, make_response, render_template
from flask_login import current_user

from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.htmx import render_page_or_block
from webapp.policy import can, permission, why_not
from webapp.services import alerts as alert_service

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


def _render(status: int = 200, message: str = "", kind: str = "ok") -> Response:
    now = datetime.now(UTC)
    with _rt().db.session() as s:
        open_rows, closed_rows = alert_service.panel(s, now)
        return render_page_or_block(
            "alerts/index.html",
            "panel",
            status,
            open_rows=open_rows,
            closed_rows=closed_rows,
            rules=alert_service.RULES,
            can_ack=can(_roles(), "alerts.ack"),
            why_not_ack=why_not(_roles(), "alerts.ack"),
            message=message,
            kind=kind,
        )


@bp.get("/")
@permission("alerts.view")
def index() -> Response:
    return _render()


@bp.post("/<int:alert_id>/acknowledge")
@permission("alerts.ack")
def acknowledge(alert_id: int) -> Response:
    """Acknowledge one open alert (audited); 409 with the reason when it is gone or already taken."""
    role = ",".join(sorted(_roles()))
    try:
        with _rt().db.session() as s:
            alert_service.acknowledge(
                s, alert_id, actor=str(current_user.id), role=role, now=datetime.now(UTC)
            )
    except alert_service.AlertNotOpen as exc:
        return _render(409, str(exc), "warn")
    return _render(200, f"Alert {alert_id} acknowledged.")


@bp.get("/count")
@permission("alerts.view")
def count() -> Response:
    """The number of open alerts as a small badge (for a nav or a dashboard tile)."""
    with _rt().db.session() as s:
        open_rows, _ = alert_service.panel(s, datetime.now(UTC), resolved_limit=0)
    response = make_response(render_template("alerts/_count.html", open_rows=open_rows))
    return response
