"""The audit desk: browse the audit log, verify the chains, export them.

The KYC review queue moved to the compliance desk (``/compliance/kyc``); ``/audit/kyc`` redirects.

Views are thin: parse the request, call ``webapp.services.audit_queries``, render. Every read of
the log is audited (``audit.read`` per page view, ``audit.verified``, ``audit.exported``); where
each entry goes is documented in that module.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, redirect, render_template, request, stream_with_context, url_for

from webapp.current import now as _now
from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.current import tenants as _tenants
from webapp.current import who as _who
from webapp.htmx import render_page_or_block
from webapp.policy import can, permission
from webapp.services import audit_queries as aq

bp = Blueprint("audit_desk", __name__, url_prefix="/audit")

TEMPLATE = "audit/log.html"
FORMATS = {"jsonl": "application/jsonl; charset=utf-8", "csv": "text/csv; charset=utf-8"}


def _moment(name: str) -> datetime | None:
    """An ISO 8601 date or time argument (read as UTC without an offset); ValueError when malformed."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"“{raw[:40]}” is not an ISO 8601 date or time ({name})") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _filters() -> tuple[aq.AuditFilters, str]:
    """The browser's filters and an error message (filters with a bad time are dropped)."""
    args = request.args
    error = ""
    since = until = None
    try:
        since = _moment("since")
        until = _moment("until")
    except ValueError as exc:
        error = str(exc)
    return (
        aq.AuditFilters(
            tenant=args.get("tenant", "").strip()[:64],
            customer=args.get("customer", "").strip()[:64],
            actor=args.get("actor", "").strip()[:120],
            action=args.get("action", "").strip()[:64],
            since=since,
            until=until,
        ),
        error,
    )


@bp.get("")
@permission("audit.view")
def log() -> Response:
    """The audit log, newest first, filtered and keyset-paginated; the view itself is audited."""
    filters, error = _filters()
    raw_cursor = request.args.get("cursor", "")
    cursor = aq.decode_cursor(raw_cursor) if raw_cursor else None
    actor, role = _who()
    roles = _roles()
    with _rt().db.session() as s:
        page = aq.audit_page(s, filters, tenants=_tenants(), cursor=cursor)
        aq.record_read(s, page, actor=actor, role=role, now=_now(), cursor=raw_cursor or None)
        context = {
            "page": page,
            "filters": filters,
            "cursor": raw_cursor if cursor else "",
            "error": error,
            "actions": aq.action_choices(s),
            "tenants": aq.chain_tenants(s, _tenants()),
            "can_verify": can(roles, "audit.verify"),
            "can_export": can(roles, "audit.export"),
            "can_kyc": can(roles, "dashboard.compliance"),
        }
    return render_page_or_block(TEMPLATE, "results", status=422 if error else 200, **context)


@bp.post("/verify")
@permission("audit.verify")
def verify() -> Response:
    """Verify every chain in scope (or the one named in ``tenant``) and show the first broken seq."""
    rt = _rt()
    only = request.form.get("tenant", "").strip()[:64] or None
    scope = _tenants()
    if only is not None:
        with rt.db.session() as s:
            if only not in aq.chain_tenants(s, scope):
                abort(404, description="No audit chain for that tenant.")
    actor, role = _who()
    report = aq.verify_chains(
        rt.db,
        only=only,
        tenants=scope,
        anchor_dir=rt.config.audit_anchor_dir,
        key=rt.config.audit_anchor_key,
        actor=actor,
        role=role,
        now=_now(),
    )
    body = render_template("audit/verify.html", report=report, only=only)
    return Response(body, status=200, mimetype="text/html")


@bp.get("/export")
@permission("audit.export")
def export() -> Response:
    """Stream the entries as ``marketplace audit export`` does (JSON Lines or CSV); audited."""
    fmt = request.args.get("format", "jsonl")
    if fmt not in FORMATS:
        abort(422, description="format must be jsonl or csv.")
    try:
        since = _moment("since")
    except ValueError as exc:
        abort(422, description=str(exc))
    tenant = request.args.get("tenant", "").strip()[:64]
    rt = _rt()
    with rt.db.session() as s:
        names = aq.chain_tenants(s, _tenants())
    if tenant:
        if tenant not in names:
            abort(404, description="No audit chain for that tenant.")
        names = [tenant]
    actor, role = _who()
    now = _now()
    lines = aq.export_lines(rt.db, names=names, fmt=fmt, since=since, actor=actor, role=role, now=now)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    scope = re.sub(r"[^A-Za-z0-9_.-]", "_", tenant) or "all"
    response = Response(stream_with_context(lines), mimetype=FORMATS[fmt].split(";")[0])
    response.headers["Content-Type"] = FORMATS[fmt]
    response.headers["Content-Disposition"] = f'attachment; filename="audit-{scope}-{stamp}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/kyc")
@permission("dashboard.compliance")
def kyc() -> Response:
    """The KYC review queue moved to the compliance desk; old links and bookmarks follow it."""
    return redirect(url_for("compliance.kyc"), code=301)  # type: ignore[return-value]
