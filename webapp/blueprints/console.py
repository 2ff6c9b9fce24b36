"""The customer cockpit (read side): search, the customer page, its fragments, live updates, time travel.

Views are thin: parse the request, call ``webapp.services.queries``, pick a page or a named block of
it (``render_page_or_block``). The only write here is the audited PII reveal. Manual action forms
and their endpoints live in the actions blueprint; each card includes its template.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, ValidationError

from webapp import audit
from webapp.auth_session import background
from webapp.current import now as _now
from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.current import tenants as _tenants
from webapp.diagrams import diagram_css
from webapp.htmx import is_htmx, render_page_or_block
from webapp.models import Customer
from webapp.policy import can, permission, why_not
from webapp.services import queries
from webapp.validation import InputError, clean_text

bp = Blueprint("console", __name__)

REVEAL_REASONS = (
    ("customer_contact", "Customer contact (call, chat, email)"),
    ("identity_verification", "Identity verification"),
    ("billing_dispute", "Billing dispute"),
    ("fraud_investigation", "Fraud investigation"),
    ("legal_request", "Legal or regulator request"),
)

TEMPLATE = "console/customer.html"


class RevealForm(FlaskForm):  # type: ignore[misc]
    """Why PII is being revealed: a reason code and a comment (the comment is hashed into the audit)."""

    reason_code = SelectField(
        "Reason",
        choices=[SelectChoice(v, label) for v, label in REVEAL_REASONS],
        validators=[InputRequired()],
    )
    comment = TextAreaField("Comment", validators=[InputRequired(), Length(min=10, max=500)])

    def validate_comment(self, field: Any) -> None:
        """Reject control characters and card numbers in free text."""
        try:
            field.data = clean_text(field.data, max_length=500, min_length=10, label="the comment")
        except InputError as exc:
            raise ValidationError(str(exc)) from None


def _customer_or_404(session: Any, customer_id: str) -> Customer:
    customer = queries.find_customer(session, customer_id, _tenants())
    if customer is None:
        abort(404, description="No such customer.")
    return customer


def _filters() -> queries.HistoryFilters:
    args = request.args
    return queries.HistoryFilters(
        governor=args.get("governor", "")[:32],
        actor=args.get("actor", "")[:120],
        event=args.get("event", "")[:64],
    )


def _cursor(name: str = "cursor") -> int | None:
    raw = request.args.get(name, "")
    return int(raw) if raw.isdigit() else None


def _context(session: Any, view: queries.CustomerView, **extra: Any) -> dict[str, Any]:
    """What customer.html needs besides the view."""
    filters = extra.pop("filters", None) or _filters()
    history = extra.pop("history", None) or queries.history_page(
        session, view.id, filters=filters, before=view.as_of
    )
    roles = _roles()
    return {
        "view": view,
        "customer": view,
        "history": history,
        "filters": filters,
        "choices": queries.history_choices(session, view.id, last_id=queries.parse_marker(view.marker)[0]),
        "governors": queries.GOVERNOR_ORDER,
        "read_only": view.as_of is not None,
        "can_reveal": can(roles, "customer.reveal_pii"),
        "reveal_why_not": "" if can(roles, "customer.reveal_pii") else why_not(roles, "customer.reveal_pii"),
        "reveal_form": extra.pop("reveal_form", None) or RevealForm(),
        "revealed": extra.pop("revealed", False),
        "as_of_value": extra.pop("as_of_value", ""),
        "as_of_error": extra.pop("as_of_error", ""),
        "now": _now(),
        "relative": queries.relative,
        "diagram_css": diagram_css(),
        **extra,
    }


def _redis(rt: Any) -> Any:
    """The Redis connection of the job queue, or None (in-process background work)."""
    try:
        from webapp.jobs import redis_connection
    except ImportError:
        return None
    return redis_connection(rt)


def _read_or_404(session: Any, customer_id: str) -> queries.CustomerRead:
    """The customer with everything its cards show, in one query (404 as ``_customer_or_404``)."""
    read = queries.read_customer(session, customer_id, _tenants())
    if read is None:
        abort(404, description="No such customer.")
    return read


def _live_view(
    session: Any, customer: Customer, only: Any = None, read: queries.CustomerRead | None = None
) -> queries.CustomerView:
    rt = _rt()
    return queries.customer_overview(
        session,
        customer,
        read=read,
        now=_now(),
        roles=_roles(),
        user_id=str(getattr(current_user, "id", "")),
        settings=rt.settings,
        only=only,
        redis=_redis(rt) if only is None or "jobs" in only else None,
    )


@bp.get("/")
@permission("customer.search")
def index() -> Any:
    """The console's home is customer search."""
    return redirect(url_for("console.customers"))


@bp.get("/customers")
@permission("customer.search")
def customers() -> Response:
    """Search customers by id, name, email or invoice id (keyset-paginated)."""
    q = request.args.get("q", "")
    cursor = request.args.get("cursor") or None
    with _rt().db.session() as session:
        page = queries.search_customers(session, q, cursor=cursor, tenants=_tenants())
    return render_page_or_block("console/customers.html", "results", page=page, q=q, cursor=cursor)


@bp.get("/customers/<customer_id>")
@permission("customer.view")
def customer(customer_id: str) -> Response:
    """The customer cockpit: header, the eight governors, jobs and the timeline."""
    with _rt().db.session() as session:
        read = _read_or_404(session, customer_id)
        view = _live_view(session, read.customer, read=read)
        context = _context(session, view)
    return render_page_or_block(TEMPLATE, "cockpit", **context)


@bp.get("/customers/<customer_id>/cards")
@permission("customer.view")
def cards(customer_id: str) -> Response:
    """The governor cards (an htmx fragment; the whole page without htmx)."""
    with _rt().db.session() as session:
        read = _read_or_404(session, customer_id)
        view = _live_view(session, read.customer, read=read)
        context = _context(session, view)
    return render_page_or_block(TEMPLATE, "cards", **context)


@bp.get("/customers/<customer_id>/history")
@permission("customer.history")
def history(customer_id: str) -> Response:
    """A page of the timeline, newest first, filtered by governor, actor and event."""
    filters = _filters()
    at = _parse_instant(request.args.get("at", ""))
    with _rt().db.session() as session:
        found = _customer_or_404(session, customer_id)
        page = queries.history_page(session, found.id, cursor=_cursor(), filters=filters, before=at)
        if is_htmx():
            response = make_response(
                render_template(
                    "console/_timeline.html", history=page, customer_id=found.id, filters=filters, as_of=at
                )
            )
            response.headers["Vary"] = "HX-Request"
            return response
        view = queries.customer_as_of(session, found, at) if at else _live_view(session, found)
        context = _context(session, view, history=page, filters=filters)
    return render_page_or_block(TEMPLATE, "timeline", **context)


@bp.get("/customers/<customer_id>/changes")
@permission("customer.view")
@background
def changes(customer_id: str) -> Response:
    """204 while nothing changed since ``since``; otherwise the changed cards and new timeline rows (OOB)."""
    since = request.args.get("since", "")
    filters = _filters()
    with _rt().db.session() as session:
        found = _customer_or_404(session, customer_id)
        marker = queries.change_marker(session, found.id)
        if marker == since:
            response = make_response("", 204)
            response.headers["Vary"] = "HX-Request"
            return response
        since_id, since_jobs = queries.parse_marker(since)
        _, jobs_now = queries.parse_marker(marker)
        governors = (
            queries.changed_governors(session, found.id, since_id)
            if since_id is not None
            else list(queries.GOVERNOR_ORDER)
        )
        if "entitlement" in governors:
            governors.append("catalog")  # a new or archived entitlement changes the SKUs held
        view = _live_view(session, found, only=governors)
        rows = (
            queries.history_page(session, found.id, filters=filters, after_id=since_id)
            if since_id is not None
            else queries.HistoryPage([], None)
        )
        context = _context(session, view, history=rows, filters=filters)
        context.update(changed=governors, jobs_changed=jobs_now != since_jobs, marker=marker)
        body = render_template("console/_changes.html", **context)
    response = make_response(body)
    response.headers["Vary"] = "HX-Request"
    return response


def _parse_instant(raw: str) -> datetime | None:
    """A datetime-local value (read as UTC) or ISO 8601 with an offset; None when absent or invalid."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@bp.get("/customers/<customer_id>/as-of")
@permission("customer.time_travel")
def as_of(customer_id: str) -> Response:
    """The whole cockpit as it was at ``at`` (UTC), read-only."""
    raw = request.args.get("at", "")
    at = _parse_instant(raw)
    now = _now()
    error = ""
    if at is None:
        error = "Pick a date and time (UTC), for example 2026-03-02T09:00."
    elif at > now:
        error = "Pick an instant in the past: the cockpit cannot show the future."
    with _rt().db.session() as session:
        found = _customer_or_404(session, customer_id)
        if error or at is None:
            view = _live_view(session, found)
            context = _context(session, view, as_of_value=raw[:32], as_of_error=error)
            return render_page_or_block(TEMPLATE, "cockpit", status=422, **context)
        view = queries.customer_as_of(session, found, at)
        context = _context(session, view, as_of_value=at.strftime("%Y-%m-%dT%H:%M"))
    return render_page_or_block(TEMPLATE, "cockpit", **context)


@bp.post("/customers/<customer_id>/reveal")
@permission("customer.reveal_pii")
def reveal(customer_id: str) -> Response:
    """Show the unmasked name and email after an audited reason (CONSOLE.md §1.2)."""
    form = RevealForm()
    with _rt().db.session() as session:
        found = _customer_or_404(session, customer_id)
        if not form.validate_on_submit():
            view = _live_view(session, found, only=())
            context = _context(session, view, reveal_form=form)
            return render_page_or_block(TEMPLATE, "identity", status=422, **context)
        comment = str(form.comment.data)
        audit.append(
            session,
            found.tenant_id,
            actor=str(current_user.id),
            role=",".join(sorted(_roles())),
            action="pii.revealed",
            occurred_at=_now(),
            customer_id=found.id,
            payload={
                "fields": ["name", "email"],
                "reason_code": form.reason_code.data,
                # Free text may name people: the chain keeps its hash only (erasure stays verifiable).
                "comment_sha256": hashlib.sha256(comment.encode()).hexdigest(),
            },
        )
        view = _live_view(session, found, only=())
        context = _context(session, view, revealed=True)
    return render_page_or_block(TEMPLATE, "identity", **context)
