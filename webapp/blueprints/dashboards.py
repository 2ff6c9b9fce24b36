"""Dashboards (CONSOLE.md §3.1 manager ops/SLA, §3.2 finance charts): Plotly panels as htmx fragments.

``/dashboards/`` is the managers' page (capability ``dashboard.ops``, every role per §1.2): each panel
is a placeholder that loads its fragment (``hx-trigger="load, every 60s"``). The fragments read the
rollup tables (``webapp.services.rollups``, ``webapp.services.sla``) that the periodic job keeps up to
date, never the raw history; the two live lists (entitlement approval queue, stuck instances) are
indexed reads of the current instances only. Figures are built server-side
(``webapp.dashboard_charts``) and handed to the page as JSON in a ``data-figure`` attribute, which
``static/js/charts.js`` draws (the CSP forbids inline scripts).

Finance charts (capability ``dashboard.finance``) are fragments under ``/dashboards/finance/``:
``payments`` (success-rate gauge per processor, 98/99 % thresholds), ``recovery`` (weekly recovery
rate, 70 % line) and ``failures`` (declines per day by reason); ``/dashboards/finance/`` shows all
three. Any fragment URL requested without ``HX-Request`` renders as a full page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from flask import Blueprint, Response, make_response, render_template
from flask_login import current_user
from sqlalchemy import func, select

from webapp import dashboard_charts as charts
from webapp.current import rt as _rt
from webapp.current import tenants as _tenants
from webapp.htmx import is_htmx
from webapp.models import GovernorInstance
from webapp.models.rollups import RollupStateCount
from webapp.policy import can, permission
from webapp.services import rollups, sla
from webapp.services.queries import duration_text

bp = Blueprint("dashboards", __name__, url_prefix="/dashboards")

# Thresholds (CONSOLE.md §2.2–§2.4, §3).
DECISION_SLO_MS: Final = 500.0
DECISION_ALERT_MS: Final = 1000.0
DECISION_HIGH_MS: Final = 5000.0
ERROR_SLO_PCT: Final = 0.1
ERROR_CRITICAL_PCT: Final = 1.0
QUEUE_CAPACITY: Final = 1000
QUEUE_HIGH_WATER_PCT: Final = 80.0
RESPONSE_LIMIT_MS: Final = 2000.0
CHURN_LIMIT_PCT: Final = 5.0
CONVERSION_GOAL_PCT: Final = 20.0
APPROVAL_WARN: Final = timedelta(hours=12)
APPROVAL_ESCALATE: Final = timedelta(hours=24)
PAYMENT_RED_PCT: Final = 98.0
PAYMENT_GREEN_PCT: Final = 99.0
RECOVERY_GOAL_PCT: Final = 70.0

# Windows.
DAY: Final = timedelta(hours=24)
STATE_WINDOW: Final = timedelta(days=30)
SLA_WINDOW: Final = timedelta(days=90)
WEEKS: Final = 12
FAILURE_DAYS: Final = 7
LIST_LIMIT: Final = 25

PAID_SUBSCRIPTION_STATES: Final = ("active", "paused", "awaiting_renewal", "renewal_grace")
TRIAL_STATES: Final = ("trial", "trial_ended")
RETRY_STATES: Final = ("payment_failed", "retry_1", "retry_2", "retry_3")

OPS_PANELS: Final = (
    ("latency", "Decision latency", "dashboards.latency"),
    ("errors", "Error rate", "dashboards.errors"),
    ("queue", "Event queue depth", "dashboards.queue"),
    ("response", "Governor response time", "dashboards.response_times"),
    ("sla", "SLA achievement and credits", "dashboards.sla_panel"),
    ("subscriptions", "Subscriptions, churn and trial conversion", "dashboards.subscriptions"),
    ("approvals", "Entitlement approvals", "dashboards.approvals"),
    ("stuck", "Stuck instances", "dashboards.stuck"),
    ("states", "Time in state", "dashboards.states"),
)
"""(name, title, endpoint) of the managers' panels, in page order."""
FINANCE_PANELS: Final = (
    ("payments", "Payment success rate", "dashboards.payments"),
    ("recovery", "Recovery rate", "dashboards.recovery"),
    ("failures", "Payment failures by reason", "dashboards.failures"),
)


def utcnow() -> datetime:
    """Now, timezone-aware UTC (tests may monkeypatch this)."""
    return datetime.now(UTC)


def _window(delta: timedelta) -> str:
    if delta % timedelta(days=7) == timedelta(0) and delta >= timedelta(days=14):
        return f"last {delta.days // 7} weeks"
    if delta >= timedelta(days=2):
        return f"last {delta.days} days"
    return f"last {int(delta.total_seconds() // 3600)} h"


def _panel(name: str, title: str, **context: Any) -> Response:
    """The panel fragment for htmx; the same panel on a page of its own otherwise."""
    context.setdefault("charts", [])
    context.setdefault("note", "")
    with _rt().db.sessions() as session:
        context.setdefault("refreshed", rollups.refreshed_at(session))
    partial = f"dashboards/_{name}.html"
    body = (
        render_template(partial, name=name, title=title, **context)
        if is_htmx()
        else render_template("dashboards/panel.html", partial=partial, name=name, title=title, **context)
    )
    response = make_response(body)
    response.headers["Vary"] = "HX-Request"
    return response


def _until(now: datetime) -> datetime:
    """The exclusive end of a window ending now: the end of the current hour bucket."""
    return rollups.hour_of(now) + rollups.HOUR


def _week(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def _weeks(now: datetime) -> list[datetime]:
    last = _week(now)
    return [last - timedelta(weeks=i) for i in range(WEEKS - 1, -1, -1)]


# --------------------------------------------------------------------------- pages


@bp.get("/")
@permission("dashboard.ops")
def index() -> str:
    """The managers' ops and SLA overview: every panel loads itself."""
    roles = getattr(current_user, "roles", ())
    return render_template(
        "dashboards/index.html",
        panels=OPS_PANELS,
        show_finance=can(roles, "dashboard.finance"),
        show_approvals=can(roles, "approval.view"),
    )


@bp.get("/finance/")
@permission("dashboard.finance")
def finance() -> str:
    """The finance charts on one page (the finance pages embed the same fragments)."""
    return render_template("dashboards/finance.html", panels=FINANCE_PANELS)


# --------------------------------------------------------------------------- ops panels


@bp.get("/panels/latency")
@permission("dashboard.ops")
def latency() -> Response:
    """Decision latency P50/P95/P99 per hour against the 500 ms SLO (1 s alert, 5 s HIGH)."""
    now = utcnow()
    with _rt().db.sessions() as session:
        points = rollups.decision_latency_series(session, now - DAY, _until(now))
        per_gov = rollups.decision_latency_by_governor(session, now - DAY, _until(now))
    fig = charts.decision_latency(
        [p.hour for p in points],
        [p.p50 for p in points],
        [p.p95 for p in points],
        [p.p99 for p in points],
        window=_window(DAY),
        slo_ms=DECISION_SLO_MS,
        alert_ms=DECISION_ALERT_MS,
        high_ms=DECISION_HIGH_MS,
        span=(now - DAY, _until(now)),
    )
    total = sum(p.count for p in per_gov.values())
    worst = max((p.p99 for p in per_gov.values() if p.p99 is not None), default=None)
    stats = [
        ("decisions", f"{total:,}", ""),
        (
            "worst governor P99",
            "–" if worst is None else f"{worst * 1000:.0f} ms",
            "" if worst is None else ("ok" if worst * 1000 <= DECISION_SLO_MS else "bad"),
        ),
    ]
    return _panel("latency", "Decision latency", charts=[charts.as_json(fig)], stats=stats)


@bp.get("/panels/errors")
@permission("dashboard.ops")
def errors() -> Response:
    """Background error rate (failed or refused effect runs) per hour; 0.1 % and 1 % bands."""
    now = utcnow()
    with _rt().db.sessions() as session:
        rows = rollups.hourly_error_rate(session, now - DAY, _until(now))
    fig = charts.error_rate(
        [h for h, _, _ in rows],
        [round(100.0 * e / r, 3) if r else None for _, r, e in rows],
        window=_window(DAY),
        slo_pct=ERROR_SLO_PCT,
        critical_pct=ERROR_CRITICAL_PCT,
        span=(now - DAY, _until(now)),
    )
    runs, errs = sum(r for _, r, _ in rows), sum(e for _, _, e in rows)
    rate = 100.0 * errs / runs if runs else None
    stats = [
        ("effect runs", f"{runs:,}", ""),
        (
            "error rate",
            "–" if rate is None else f"{rate:.2f} %",
            ""
            if rate is None
            else "ok"
            if rate < ERROR_SLO_PCT
            else "warn"
            if rate < ERROR_CRITICAL_PCT
            else "bad",
        ),
    ]
    return _panel("errors", "Error rate", charts=[charts.as_json(fig)], stats=stats)


@bp.get("/panels/queue")
@permission("dashboard.ops")
def queue() -> Response:
    """Outbox queue depth sampled by each refresh, as % of the 1000 capacity; 80 % line."""
    now = utcnow()
    with _rt().db.sessions() as session:
        points = rollups.samples(session, "queue_depth", now - DAY, now)
        pending = rollups.samples(session, "pending_approvals", now - DAY, now)
    fig = charts.queue_depth(
        [at for at, _ in points],
        [v for _, v in points],
        window=_window(DAY),
        capacity=QUEUE_CAPACITY,
        high_water_pct=QUEUE_HIGH_WATER_PCT,
        span=(now - DAY, _until(now)),
    )
    last = points[-1][1] if points else None
    stats = [
        ("queue now", "–" if last is None else f"{last:.0f}", ""),
        ("four-eyes requests waiting", "–" if not pending else f"{pending[-1][1]:.0f}", ""),
    ]
    return _panel("queue", "Event queue depth", charts=[charts.as_json(fig)], stats=stats)


@bp.get("/panels/response")
@permission("dashboard.ops")
def response_times() -> Response:
    """Per-governor decision times as boxes against the 2 s line."""
    now = utcnow()
    with _rt().db.sessions() as session:
        q = rollups.latency_quantiles(session, now - DAY, _until(now), (0.05, 0.25, 0.5, 0.75, 0.99))
        counts = rollups.decision_latency_by_governor(session, now - DAY, _until(now))
    boxes = [
        charts.BoxStats(g, v[0], v[1], v[2], v[3], v[4], counts[g].count if g in counts else 0)
        for g, v in q.items()
    ]
    fig = charts.response_times(boxes, window=_window(DAY), limit_ms=RESPONSE_LIMIT_MS)
    return _panel("response", "Governor response time", charts=[charts.as_json(fig)])


@bp.get("/panels/states")
@permission("dashboard.ops")
def states() -> Response:
    """Time in state P50/P95/P99 per governor and state (completed stays in the window)."""
    now = utcnow()
    with _rt().db.sessions() as session:
        rows = rollups.time_in_state(session, now - STATE_WINDOW, _until(now))

    def text(seconds: float | None) -> str:
        return "–" if seconds is None else duration_text(timedelta(seconds=seconds))

    table = [
        {
            "governor": r.governor,
            "state": r.state,
            "count": r.stats.count,
            "p50": text(r.stats.p50),
            "p95": text(r.stats.p95),
            "p99": text(r.stats.p99),
            "p99_seconds": r.stats.p99,
        }
        for r in rows
    ]
    return _panel("states", "Time in state", rows=table, window=_window(STATE_WINDOW))


@bp.get("/panels/stuck")
@permission("dashboard.ops")
def stuck() -> Response:
    """Instances whose next timer is past (by more than the sweep's grace), per governor and the oldest."""
    now = utcnow()
    cutoff = now - rollups.STUCK_GRACE
    tenants = _tenants()
    with _rt().db.sessions() as session:
        snapshot_at, counts = rollups.latest_state_counts(session)
        g = GovernorInstance
        stmt = (
            select(g.id, g.tenant_id, g.customer_id, g.governor, g.state, g.timeout_at)
            .where(g.timeout_at < cutoff)
            .order_by(g.timeout_at)
            .limit(LIST_LIMIT)
        )
        if tenants is not None:
            stmt = stmt.where(g.tenant_id.in_(tenants))
        oldest = session.execute(stmt).all()
    per_governor: dict[str, int] = defaultdict(int)
    for c in counts:
        per_governor[c.governor] += c.overdue
    rows = [
        {
            "id": r.id,
            "customer_id": r.customer_id,
            "governor": r.governor,
            "state": r.state,
            "timeout_at": r.timeout_at,
            "late": duration_text(now - r.timeout_at),
        }
        for r in oldest
    ]
    return _panel(
        "stuck",
        "Stuck instances",
        rows=rows,
        per_governor=sorted(per_governor.items()),
        snapshot_at=snapshot_at,
        grace=duration_text(rollups.STUCK_GRACE),
    )


@bp.get("/panels/sla")
@permission("dashboard.ops")
def sla_panel() -> Response:
    """SLA achievement by tier (uptime and latency targets), credits due, violations of the last 24 h."""
    now = utcnow()
    targets = _rt().settings["quota_sla.sla_targets"]
    with _rt().db.sessions() as session:
        tiers = sla.achievement_by_tier(session, now - SLA_WINDOW, targets)
        recent = sla.violations(session, now - DAY)
        rows = [
            {
                "customer_id": v.customer_id,
                "period": v.period,
                "tier": v.tier,
                "missed": list(v.detail.get("missed", [])),
                "uptime_pct": v.uptime_pct,
                "p99_ms": v.p99_ms,
                "error_rate_pct": v.error_rate_pct,
                "credit_pct": v.credit_pct,
                "credit_cents": v.credit_cents,
                "closed_at": v.closed_at,
            }
            for v in recent
        ]
    bars = [
        charts.TierBar(
            t.tier,
            t.mean_uptime_pct,
            t.uptime_target_pct,
            t.mean_p99_ms,
            t.p99_target_ms,
            t.uptime_met_pct,
            t.p99_met_pct,
        )
        for t in tiers
    ]
    fig = charts.sla_by_tier(bars, window=_window(SLA_WINDOW))
    return _panel(
        "sla",
        "SLA achievement and credits",
        charts=[charts.as_json(fig)],
        tiers=tiers,
        violations=rows,
        window=_window(SLA_WINDOW),
    )


@bp.get("/panels/subscriptions")
@permission("dashboard.ops")
def subscriptions() -> Response:
    """Subscription state distribution (latest snapshot), weekly churn and trial conversion."""
    now = utcnow()
    weeks = _weeks(now)
    since = weeks[0]
    with _rt().db.sessions() as session:
        snapshot_at, counts = rollups.latest_state_counts(session)
        moves = rollups.transition_counts_by_bucket(session, "subscription", weeks, _until(now))
        paid = session.execute(
            select(RollupStateCount.hour, func.sum(RollupStateCount.count))
            .where(
                RollupStateCount.governor == "subscription",
                RollupStateCount.state.in_(PAID_SUBSCRIPTION_STATES),
                RollupStateCount.hour >= since,
            )
            .group_by(RollupStateCount.hour)
            .order_by(RollupStateCount.hour)
        ).all()
    distribution = {c.state: c.count for c in counts if c.governor == "subscription"}
    churned: dict[datetime, int] = defaultdict(int)
    converted: dict[datetime, int] = defaultdict(int)
    trial_exits: dict[datetime, int] = defaultdict(int)
    for bucket, _event, frm, to, n in moves:
        week = weeks[bucket]
        if to == "cancelled" and frm in PAID_SUBSCRIPTION_STATES:
            churned[week] += n
        if to == "active" and frm in TRIAL_STATES:
            converted[week] += n
        if frm == "trial" and to != "trial":
            trial_exits[week] += n
    base: dict[datetime, int] = {}
    for hour, n in paid:  # the last snapshot of each week is its base of paying subscriptions
        base[_week(hour)] = int(n or 0)
    churn = [round(100.0 * churned[w] / base[w], 2) if base.get(w) else None for w in weeks]
    conversion = [round(100.0 * converted[w] / trial_exits[w], 2) if trial_exits[w] else None for w in weeks]
    pie = charts.subscription_states(distribution, window="now" if snapshot_at is None else "latest snapshot")
    lines = charts.churn_and_conversion(
        weeks,
        churn,
        conversion,
        window=_window(timedelta(weeks=WEEKS)),
        churn_limit_pct=CHURN_LIMIT_PCT,
        conversion_goal_pct=CONVERSION_GOAL_PCT,
    )
    return _panel(
        "subscriptions",
        "Subscriptions, churn and trial conversion",
        charts=[charts.as_json(pie), charts.as_json(lines)],
        distribution=distribution,
        snapshot_at=snapshot_at,
    )


def age_class(age: timedelta) -> str:
    """CONSOLE.md §2.4 entitlement pending age: > 24 h ESCALATE, > 12 h WARN, else OK."""
    if age > APPROVAL_ESCALATE:
        return "ESCALATE"
    if age > APPROVAL_WARN:
        return "WARN"
    return "OK"


@bp.get("/panels/approvals")
@permission("dashboard.ops")
def approvals() -> Response:
    """Entitlements waiting in pending_approval, by age class, oldest first (a live indexed read)."""
    now = utcnow()
    tenants = _tenants()
    g = GovernorInstance
    with _rt().db.sessions() as session:
        cond = [g.governor == "entitlement", g.state == "pending_approval"]
        if tenants is not None:
            cond.append(g.tenant_id.in_(tenants))
        ok, warn, escalate = session.execute(
            select(
                func.count().filter(g.entered_at >= now - APPROVAL_WARN),
                func.count().filter(
                    g.entered_at < now - APPROVAL_WARN, g.entered_at >= now - APPROVAL_ESCALATE
                ),
                func.count().filter(g.entered_at < now - APPROVAL_ESCALATE),
            ).where(*cond)
        ).one()
        oldest = session.execute(
            select(g.id, g.customer_id, g.subject_id, g.entered_at)
            .where(*cond)
            .order_by(g.entered_at)
            .limit(LIST_LIMIT)
        ).all()
    classes = {"OK": int(ok), "WARN": int(warn), "ESCALATE": int(escalate)}
    rows = [
        {
            "id": r.id,
            "customer_id": r.customer_id,
            "sku": r.subject_id,
            "entered_at": r.entered_at,
            "age": duration_text(now - r.entered_at),
            "class": age_class(now - r.entered_at),
        }
        for r in oldest
    ]
    fig = charts.approval_ages(
        classes,
        window="now",
        warn_h=APPROVAL_WARN.total_seconds() / 3600,
        escalate_h=APPROVAL_ESCALATE.total_seconds() / 3600,
    )
    roles = getattr(current_user, "roles", ())
    return _panel(
        "approvals",
        "Entitlement approvals",
        charts=[charts.as_json(fig)],
        rows=rows,
        classes=classes,
        show_queue=can(roles, "approval.view"),
        refreshed=now,
    )


# --------------------------------------------------------------------------- finance panels


def _payment_rates(rows: Sequence[tuple[datetime, str, str, str, int]]) -> dict[str, tuple[int, int]]:
    received: dict[str, int] = defaultdict(int)
    attempts: dict[str, int] = defaultdict(int)
    for _hour, processor, outcome, _reason, n in rows:
        attempts[processor] += n
        if outcome == "received":
            received[processor] += n
    return {p: (received[p], attempts[p]) for p in attempts}


@bp.get("/finance/payments")
@permission("dashboard.finance")
def payments() -> Response:
    """Payment success rate per processor (gauges: red < 98 %, yellow < 99 %, green ≥ 99 %)."""
    now = utcnow()
    since = rollups.hour_of(now) - rollups.HOUR
    with _rt().db.sessions() as session:
        rows = rollups.payments(session, since, _until(now))
    rates = _payment_rates(rows)
    window = f"since {since:%H:%M} UTC (this and the previous hour)"
    fig = charts.payment_gauges(rates, window=window, red_pct=PAYMENT_RED_PCT, green_pct=PAYMENT_GREEN_PCT)
    table = [
        {
            "processor": p,
            "received": ok,
            "attempts": n,
            "rate": 100.0 * ok / n if n else None,
            "slo": "PASS" if n and ok / n >= PAYMENT_GREEN_PCT / 100 else "FAIL",
        }
        for p, (ok, n) in sorted(rates.items())
    ]
    return _panel("payments", "Payment success rate", charts=[charts.as_json(fig)], rows=table)


def recovery_by_week(
    moves: Sequence[tuple[int, str, str, str, int]], weeks: Sequence[datetime]
) -> tuple[list[float | None], Mapping[datetime, int], Mapping[datetime, int]]:
    """Weekly recovery %: invoices paid after failing (retry ladder or collections) / invoices that failed."""
    failed: dict[datetime, int] = defaultdict(int)
    recovered: dict[datetime, int] = defaultdict(int)
    for bucket, event, frm, to, n in moves:
        week = weeks[bucket]
        if to == "payment_failed" and frm != "payment_failed":
            failed[week] += n
        if (to == "payment_received" and frm in RETRY_STATES) or (
            frm == "collection_agency" and event == "payment_recovered"
        ):
            recovered[week] += n
    rates = [round(100.0 * recovered[w] / failed[w], 2) if failed[w] else None for w in weeks]
    return rates, failed, recovered


@bp.get("/finance/recovery")
@permission("dashboard.finance")
def recovery() -> Response:
    """Weekly recovery rate of failed invoices against the 70 % line."""
    now = utcnow()
    weeks = _weeks(now)
    with _rt().db.sessions() as session:
        moves = rollups.transition_counts_by_bucket(session, "billing", weeks, _until(now))
    rates, failed, recovered = recovery_by_week(moves, weeks)
    fig = charts.recovery_rate(
        weeks, rates, window=_window(timedelta(weeks=WEEKS)), goal_pct=RECOVERY_GOAL_PCT
    )
    stats = [("failed", f"{sum(failed.values()):,}", ""), ("recovered", f"{sum(recovered.values()):,}", "")]
    return _panel("recovery", "Recovery rate", charts=[charts.as_json(fig)], stats=stats)


@bp.get("/finance/failures")
@permission("dashboard.finance")
def failures() -> Response:
    """Declined payments per day over the last week, stacked by decline reason."""
    now = utcnow()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [today - timedelta(days=i) for i in range(FAILURE_DAYS - 1, -1, -1)]
    with _rt().db.sessions() as session:
        rows = rollups.payments(session, days[0], _until(now))
    by_reason: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    index = {d: i for i, d in enumerate(days)}
    for hour, _processor, outcome, reason, n in rows:
        if outcome != "declined":
            continue
        day = hour.replace(hour=0)
        if day in index:
            by_reason[reason or "unknown"][index[day]] += n
    fig = charts.failure_reasons(days, dict(by_reason), window=_window(timedelta(days=FAILURE_DAYS)))
    totals = sorted(((r, sum(v)) for r, v in by_reason.items()), key=lambda x: -x[1])
    return _panel("failures", "Payment failures by reason", charts=[charts.as_json(fig)], totals=totals)
