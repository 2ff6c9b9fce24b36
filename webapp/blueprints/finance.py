"""Finance: overview, retry board, refunds and settlements, my approvals, reconciliation, the dunning
ladder preview (CONSOLE.md §3.2, GOVERNORS.md §2, §9, §11).

Views are thin: parse filters, call ``webapp.services.billing_queries`` (read), ``webapp.services.bulk``
(preview, start, progress) or ``webapp.services.ladder`` (simulate), render a page or a named block of it.
Every state change goes through the actions blueprint's forms (reason comment, CSRF, idempotency key)
and from there through ``fire_event``; four-eyes requests are decided on the approvals pages. The
buttons come from ``services.actions.best_actions`` (the engine's ``manual_actions`` over the user's
roles); a disabled action shows its reason and the actions blueprint refuses a forged POST with 403.

- ``/finance/``: counts that need someone (ladder, approvals, unreconciled, stuck), the dashboards'
  finance charts (``/dashboards/finance/*`` fragments, loaded by htmx) and links to each desk.
- ``/finance/retries``: invoices in the dunning ladder by stage, with decline reason, next attempt,
  amount and customer; filters and keyset pagination; retry now B10, dunning hold/release B23,
  escalate B11. Bulk retry: POST the filters to ``/finance/retries/bulk/preview`` (per invoice: would
  retry_now apply, or why not), confirm with a reason → one ``bulk_runs`` row and one job (RQ with
  Redis, inline otherwise); ``/finance/bulk/<id>`` shows progress (self-polling every 2 s) and the report.
- ``/finance/invoices``: paid, disputed, collections and still-refundable archived invoices with refund
  B22, force-reconcile B08, resolve B21, recovered B18, settle B19, write off B20.
- ``/finance/refunds``: issued refunds (B22, and B21 with a refund): amount, who asked, who approved.
- ``/finance/approvals``: billing requests waiting for me as approver, and mine with their status.
- ``/finance/reconciliation``: unreconciled (payment_received) and stuck (past their timer) invoices,
  with ages and CONSOLE.md §2.4 classes.
- ``/finance/ladder``: a sample renewal invoice declined at a chosen instant, simulated forward by the
  engine under the settings in force: dated attempts, notices and cascades.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user  # type: ignore[import-untyped,unused-ignore]

from webapp.current import roles as _roles
from webapp.current import rt as _rt
from webapp.current import tenants as _tenants
from webapp.htmx import render_page_or_block
from webapp.models import GovernorInstance
from webapp.models.bulk import BulkRun
from webapp.policy import can, permission, why_not
from webapp.services import billing_queries as bq
from webapp.services import bulk, users
from webapp.services.actions import best_actions_for_row
from webapp.services.queries import relative
from webapp.services.reconciliation import processor_findings
from webapp.validation import InputError, clean_text

bp = Blueprint("finance", __name__, url_prefix="/finance")

ROW_EVENTS = ("retry_now", "dunning_hold", "dunning_release", "escalate_to_admin")
"""The billing staff actions the board offers per invoice."""

_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def utcnow() -> datetime:
    """Now, timezone-aware UTC (tests may monkeypatch this)."""
    return datetime.now(UTC)


def _filters(source: Any) -> bq.BoardFilters:
    stage = str(source.get("stage", ""))[:32]
    return bq.BoardFilters(
        stage=stage if stage in bq.STAGES else "",
        reason=str(source.get("reason", "")).strip()[:64],
        customer=str(source.get("customer", "")).strip()[:64],
        min_cents=bq.parse_money(str(source.get("min", ""))[:20]),
        max_cents=bq.parse_money(str(source.get("max", ""))[:20]),
    )


def _min_reason() -> int:
    try:
        return max(10, int(_rt().settings["engine.min_reason_length"]))
    except (KeyError, TypeError, ValueError):
        return 10


def _row_actions(session: Any, rows: list[GovernorInstance], now: datetime) -> dict[str, list[Any]]:
    settings = _rt().settings
    roles = _roles()
    out: dict[str, list[Any]] = {}
    for row in rows:
        best = best_actions_for_row(session, row, roles, now, settings)
        out[row.id] = [best[e][0] for e in ROW_EVENTS if e in best]
    return out


@bp.get("/")
@permission("dashboard.finance")
def index() -> Response:
    """The finance overview: counts that need someone, links to each desk, and the charts."""
    now = utcnow()
    rt = _rt()
    tenants = _tenants()
    with rt.db.session() as session:
        ladder = bq.stage_counts(session, bq.BoardFilters(), tenants)
        money = bq.money_counts(session, tenants)
        unreconciled = bq.unreconciled(
            session, now, _duration("billing.unreconciled_attention_after"), tenants
        )
        stuck = bq.stuck(session, now, _duration("billing.payment_window"), tenants)
        waiting, mine = _my_approvals(session, now)
        return render_page_or_block(
            "finance/index.html",
            "content",
            ladder=ladder,
            money=money,
            unreconciled=unreconciled,
            stuck=stuck,
            waiting=waiting,
            mine=[a for a in mine if a.status == "pending"],
            charts=_chart_fragments(),
            now=now,
        )


def _duration(key: str) -> timedelta:
    return _rt().settings.duration(key)


CHART_PREFIX = "/dashboards/finance/"
"""The dashboards blueprint serves finance's Plotly charts as htmx fragments under this prefix."""

CHART_ORDER = ("payments", "recovery", "failures")
"""The issue's order: payment success gauge per processor, recovery rate, failure reasons."""


def _chart_fragments() -> list[tuple[str, str]]:
    """(title, url) of each finance chart fragment the app serves (none: the page says they are pending)."""
    found = []
    for rule in current_app.url_map.iter_rules():
        path = rule.rule
        if not path.startswith(CHART_PREFIX) or path == CHART_PREFIX or rule.arguments:
            continue
        if "GET" not in (rule.methods or ()):
            continue
        doc = (current_app.view_functions[rule.endpoint].__doc__ or "").strip()
        found.append((doc.splitlines()[0].rstrip(".") if doc else path.rsplit("/", 1)[-1], path))

    def rank(item: tuple[str, str]) -> tuple[int, str]:
        name = item[1].rsplit("/", 1)[-1]
        return (CHART_ORDER.index(name) if name in CHART_ORDER else len(CHART_ORDER), name)

    return sorted(found, key=rank)


@bp.get("/retries")
@permission("dashboard.finance")
def retries() -> Response:
    """Invoices in the dunning ladder, filtered, keyset-paginated; each with its staff actions."""
    filters = _filters(request.args)
    cursor = request.args.get("cursor", "")[:80] or None
    now = utcnow()
    with _rt().db.session() as session:
        page = bq.board_page(session, filters, cursor=cursor, tenants=_tenants(), limit=bq.PAGE_SIZE)
        rows = {r.id: r for r in bq.instances(session, [i.id for i in page.items], _tenants())}
        actions = _row_actions(session, list(rows.values()), now)
        reasons = bq.reason_choices(session, _tenants())
        return render_page_or_block(
            "finance/retries.html",
            "board",
            page=page,
            filters=filters,
            cursor=cursor,
            stages=bq.STAGES,
            reasons=reasons,
            actions=actions,
            instances=rows,
            now=now,
            relative=relative,
            money=bq.money_text,
            can_approve=can(_roles(), "approval.view"),
        )


@bp.post("/retries/bulk/preview")
@permission("dashboard.finance")
def bulk_preview() -> Response:
    """Per payment_failed invoice under the filters: would retry_now apply for me, or why not."""
    filters = _filters(request.form)
    now = utcnow()
    rt = _rt()
    with rt.db.session() as session:
        rows = bq.bulk_candidates(session, filters, _tenants())
        items = bulk.preview_retry(session, rows, current_user.id, _roles(), now, rt.settings)
    refusal = _role_refusal(items)
    if refusal is not None:
        return refusal
    return make_response(
        render_template(
            "finance/bulk_preview.html",
            items=items,
            filters=filters,
            token=uuid.uuid4().hex,
            min_reason=_min_reason(),
            error="",
            reason="",
            limit=bq.BULK_LIMIT,
        )
    )


def _role_refusal(items: list[bulk.PreviewItem]) -> Response | None:
    """403 when no role of the user may retry at all (whatever the page showed)."""
    if any(i.applies for i in items) or not items:
        if not items and not can(_roles(), "governor.act"):
            return _forbidden(why_not(_roles(), "governor.act"))
        return None
    role_reasons = [i.outcome for i in items if i.outcome.startswith("needs ") and "you have" in i.outcome]
    if role_reasons and len(role_reasons) == len(items):
        return _forbidden(role_reasons[0])
    return None


def _forbidden(message: str) -> Response:
    body = render_template("errors/error.html", status=403, title="Not allowed", message=message)
    return make_response(body, 403)


@bp.post("/retries/bulk")
@permission("dashboard.finance")
def bulk_confirm() -> Response:
    """Start one bulk retry job over the chosen invoices (those whose preview still applies)."""
    token = request.form.get("token", "")
    if not _TOKEN.match(token):
        abort(400, description="missing or malformed bulk token")
    run_id = f"bulk-{token}"
    rt = _rt()
    now = utcnow()
    with rt.db.session() as session:
        existing = session.get(BulkRun, run_id)
        if existing is not None:  # a second submit of the same confirmation: show the first run
            if existing.created_by != current_user.id:
                abort(404)
            return redirect(url_for("finance.bulk_status", run_id=run_id), 303)  # type: ignore[return-value]
        chosen = [i[:80] for i in request.form.getlist("instance_id")][: bq.BULK_LIMIT]
        rows = bq.instances(session, chosen, _tenants())
        items = bulk.preview_retry(session, rows, current_user.id, _roles(), now, rt.settings)
        refusal = _role_refusal(items)
        if refusal is not None:
            return refusal
        try:
            reason = clean_text(
                request.form.get("reason", ""), max_length=500, min_length=_min_reason(), label="the reason"
            )
        except InputError as exc:
            return _preview_again(items, str(exc), request.form.get("reason", ""), token)
        applicable = [i for i in items if i.applies]
        if not applicable:
            return _preview_again(items, "none of the selected invoices can be retried now", reason, token)
        role = applicable[0].role
        ids = [i.instance_id for i in applicable if i.role == role]
        bulk.create_run(
            session,
            user_id=current_user.id,
            role=role,
            reason=reason,
            instance_ids=ids,
            now=now,
            run_id=run_id,
        )
    bulk.start(rt, run_id)
    return redirect(url_for("finance.bulk_status", run_id=run_id), 303)  # type: ignore[return-value]


def _preview_again(items: list[bulk.PreviewItem], error: str, reason: str, token: str) -> Response:
    body = render_template(
        "finance/bulk_preview.html",
        items=items,
        filters=bq.BoardFilters(),
        token=token,
        min_reason=_min_reason(),
        error=error,
        reason=reason,
        limit=bq.BULK_LIMIT,
    )
    return make_response(body, 422)


def _run_or_404(session: Any, run_id: str) -> BulkRun:
    run = session.get(BulkRun, run_id[:40])
    if run is None:
        abort(404, description="no such bulk run")
    return run  # type: ignore[no-any-return]


@bp.get("/bulk/<run_id>")
@permission("dashboard.finance")
def bulk_status(run_id: str) -> Response:
    """A bulk run: progress while it runs, the per-invoice report when it is done."""
    with _rt().db.session() as session:
        run = _run_or_404(session, run_id)
        return render_page_or_block(
            "finance/bulk.html", "progress", run=run, counts=bulk.summary(run), now=utcnow()
        )


@bp.get("/bulk/<run_id>/progress")
@permission("dashboard.finance")
def bulk_progress(run_id: str) -> Response:
    """The progress fragment (polls itself every 2 s until the run has finished)."""
    with _rt().db.session() as session:
        run = _run_or_404(session, run_id)
        body = render_template("finance/_bulk_progress.html", run=run, counts=bulk.summary(run), now=utcnow())
    response = make_response(body)
    response.headers["Vary"] = "HX-Request"
    return response


# --------------------------------------------------------------------------- money actions and refunds


def _money_actions(session: Any, rows: list[GovernorInstance], now: datetime) -> dict[str, list[Any]]:
    settings = _rt().settings
    roles = _roles()
    out: dict[str, list[Any]] = {}
    for row in rows:
        best = best_actions_for_row(session, row, roles, now, settings)
        out[row.id] = [best[e][0] for e in bq.MONEY_EVENTS if e in best]
    return out


@bp.get("/invoices")
@permission("dashboard.finance")
def invoices() -> Response:
    """Paid, disputed and collections invoices with refund, reconcile, resolve, settle and write-off."""
    state = request.args.get("state", "")[:32]
    state = state if state in bq.MONEY_STATES else ""
    cursor = request.args.get("cursor", "")[:80] or None
    now = utcnow()
    with _rt().db.session() as session:
        page = bq.money_page(session, state, cursor=cursor, tenants=_tenants())
        rows = {r.id: r for r in bq.instances(session, [i.invoice.id for i in page.items], _tenants())}
        return render_page_or_block(
            "finance/invoices.html",
            "money",
            page=page,
            state=state,
            states=bq.MONEY_STATES,
            cap=bq.COUNT_CAP,
            cursor=cursor,
            actions=_money_actions(session, list(rows.values()), now),
            instances=rows,
            now=now,
            relative=relative,
        )


@bp.get("/refunds")
@permission("dashboard.finance")
def refunds() -> Response:
    """Issued refunds: amount, invoice, customer, who asked, who approved, when and why."""
    with _rt().db.session() as session:
        rows = bq.refunds(session, _tenants())
        return render_page_or_block("finance/refunds.html", "refunds", refunds=rows, now=utcnow())


def _my_approvals(session: Any, now: datetime) -> tuple[list[Any], list[Any]]:
    """Billing requests waiting for me (not mine, one of my roles approves) and the ones I made."""
    from webapp.services import approvals as approval_service

    scope = _tenants()
    waiting = [
        a
        for a in approval_service.pending_for(session, current_user.id, _roles(), now)
        if a.governor == "billing"
        and (scope is None or a.tenant_id in scope)
        and approval_service.void_if_stale(session, a, now) is None
    ]
    mine = [
        a
        for a in approval_service.requested_by(session, current_user.id, now)
        if a.governor == "billing" and (scope is None or a.tenant_id in scope)
    ]
    return waiting, mine


@bp.get("/approvals")
@permission("dashboard.finance")
def my_approvals() -> Response:
    """My approvals: billing requests waiting for me as approver, and my own requests with their status."""
    now = utcnow()
    with _rt().db.session() as session:
        waiting, mine = _my_approvals(session, now)
        return render_page_or_block(
            "finance/approvals.html",
            "approvals",
            waiting=waiting,
            mine=mine,
            people=users.staff_emails(
                session, [a.requested_by for a in waiting] + [a.decided_by for a in mine]
            ),
            now=now,
            relative=relative,
            can_decide=can(_roles(), "approval.decide"),
        )


# --------------------------------------------------------------------------- unreconciled and stuck


@bp.get("/reconciliation")
@permission("dashboard.finance")
def reconciliation() -> Response:
    """Unreconciled invoices (paid, not yet archived) and stuck ones (past their timer), with ages."""
    now = utcnow()
    with _rt().db.session() as session:
        limit_age = _duration("billing.unreconciled_attention_after")
        unreconciled = bq.unreconciled(session, now, limit_age, _tenants())
        return render_page_or_block(
            "finance/reconciliation.html",
            "tables",
            unreconciled=unreconciled,
            findings=processor_findings(session, [a.invoice.id for a in unreconciled]),
            stuck=bq.stuck(session, now, _duration("billing.payment_window"), _tenants()),
            limit_age=limit_age,
            payment_window=_duration("billing.payment_window"),
            now=now,
            age_text=_age_text,
        )


def _age_text(age: timedelta) -> str:
    """3 d 4 h / 5 h 12 min / 7 min."""
    minutes = int(age.total_seconds()) // 60
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins:02d} min"
    return f"{mins} min"


# --------------------------------------------------------------------------- dunning ladder preview


def _parse_start(raw: str, now: datetime) -> datetime:
    """ "2026-04-01" or "2026-04-01T09:30" (UTC) → an aware datetime; InputError with a usable message."""
    text = raw.strip()
    if not text:
        return now.replace(minute=0, second=0, microsecond=0)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            "give the start as a date (2026-04-01) or a date and time (2026-04-01T09:30), UTC"
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    if not 2000 <= parsed.year <= 2100:
        raise InputError("choose a start between the years 2000 and 2100")
    return parsed.replace(tzinfo=UTC, second=0, microsecond=0)


@bp.get("/ladder")
@permission("dashboard.finance")
def ladder_preview() -> Response:
    """The dunning ladder's calendar for a sample renewal invoice declined at the chosen start."""
    from webapp.services import ladder

    settings = _rt().settings
    tiers = ladder.tiers(settings)
    tier = request.args.get("tier", "")[:32] or (tiers[0] if tiers else "")
    raw_start = request.args.get("start", "")[:40]
    error = ""
    result = None
    start = None
    try:
        start = _parse_start(raw_start, utcnow())
        if tier not in tiers:
            raise InputError(f"choose one of the tiers with a list price: {', '.join(tiers)}")
        result = ladder.calendar(start, tier, settings)
    except (InputError, ladder.LadderError) as exc:
        error = str(exc)
    return render_page_or_block(
        "finance/ladder.html",
        "calendar",
        422 if error else 200,
        result=result,
        error=error,
        tier=tier,
        tiers=tiers,
        start_value=start.strftime("%Y-%m-%dT%H:%M") if start else raw_start,
        shown=ladder.SHOWN_SETTINGS,
        settings=settings,
    )
