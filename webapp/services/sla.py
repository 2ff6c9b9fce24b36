"""SLA achievement, violations and credits due (GOVERNORS.md §6, §6.3; CONSOLE.md §3.1).

A closed SLA period (quota_sla ``sla_period_closed``: ``period``, ``uptime_pct``, optional ``p99_ms``
and ``error_rate_pct``) is judged against its tier's targets (``quota_sla.sla_targets``: uptime %,
p99 ms, error rate %); the credit is the §6.3 formula of ``governors.money.sla_credit_percent``
applied to the customer's monthly price. The rollup job stores one row per (customer, period) and
per-tier sums; the dashboard reads those sums, never the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from governors.money import percent_of, sla_credit_percent, to_decimal
from webapp.models.rollups import RollupSlaPeriod, RollupSlaTier

PAID_TIERS = ("starter", "professional", "enterprise")


def _pct_text(value: Decimal) -> str:
    return "0" if value == 0 else format(value.normalize(), "f")


@dataclass(frozen=True)
class Assessment:
    """One customer period against its tier's targets, with the credit due."""

    uptime_pct: Decimal
    p99_ms: int | None
    error_rate_pct: Decimal | None
    uptime_met: bool
    p99_met: bool | None
    error_met: bool | None
    credit_pct: Decimal
    credit_cents: int
    targets: Mapping[str, Any]

    @property
    def violated(self) -> bool:
        """True when any measured target was missed."""
        return not self.uptime_met or self.p99_met is False or self.error_met is False

    def missed(self) -> list[str]:
        """Which SLOs were missed: uptime, latency, error_rate."""
        out = []
        if not self.uptime_met:
            out.append("uptime")
        if self.p99_met is False:
            out.append("latency")
        if self.error_met is False:
            out.append("error_rate")
        return out

    def columns(self) -> dict[str, Any]:
        """The ``rollup_sla_periods`` columns this assessment fills."""
        return {
            "uptime_pct": _pct_text(self.uptime_pct),
            "p99_ms": self.p99_ms,
            "error_rate_pct": None if self.error_rate_pct is None else _pct_text(self.error_rate_pct),
            "uptime_met": self.uptime_met,
            "p99_met": self.p99_met,
            "error_met": self.error_met,
            "violated": self.violated,
            "credit_pct": _pct_text(self.credit_pct),
            "credit_cents": self.credit_cents,
            "detail": {"missed": self.missed(), "targets": dict(self.targets)},
        }


def assess_period(
    tier: str,
    payload: Mapping[str, Any],
    *,
    targets: Mapping[str, Any],
    formula: Mapping[str, Any],
    monthly_cents: int,
) -> Assessment | None:
    """Judge one closed period; None for a tier without an SLA or a payload without an uptime."""
    target = targets.get(tier) if isinstance(targets, Mapping) else None
    uptime = to_decimal(payload.get("uptime_pct"))
    if not isinstance(target, Mapping) or uptime is None:
        return None
    uptime_target = to_decimal(target.get("uptime_pct")) or Decimal(0)
    raw_p99 = payload.get("p99_ms")
    p99 = raw_p99 if isinstance(raw_p99, int) and not isinstance(raw_p99, bool) else None
    p99_target = target.get("p99_ms")
    error = to_decimal(payload.get("error_rate_pct"))
    error_target = to_decimal(target.get("error_rate_pct"))
    credit = sla_credit_percent(
        uptime_pct=uptime,
        uptime_target_pct=uptime_target,
        p99_ms=p99,
        p99_target_ms=int(p99_target) if p99_target is not None else None,
        error_rate_pct=error,
        error_rate_target_pct=error_target,
        uptime_cap_pct=Decimal(str(formula["sla_uptime_cap_pct"])),
        uptime_factor=Decimal(str(formula["sla_uptime_factor"])),
        p99_penalty_pct=Decimal(str(formula["sla_p99_penalty_pct"])),
        error_penalty_pct=Decimal(str(formula["sla_error_penalty_pct"])),
        total_cap_pct=Decimal(str(formula["sla_total_cap_pct"])),
    )
    return Assessment(
        uptime_pct=uptime,
        p99_ms=p99,
        error_rate_pct=error,
        uptime_met=uptime >= uptime_target,
        p99_met=None if p99 is None or p99_target is None else p99 <= int(p99_target),
        error_met=None if error is None or error_target is None else error <= error_target,
        credit_pct=credit,
        credit_cents=percent_of(monthly_cents, credit),
        targets=dict(target),
    )


@dataclass(frozen=True)
class TierAchievement:
    """One tier over the window: periods closed, % meeting uptime / latency, averages, credits due."""

    tier: str
    periods: int
    uptime_met_pct: float | None
    p99_met_pct: float | None
    mean_uptime_pct: float | None
    mean_p99_ms: float | None
    violations: int
    credit_cents: int
    uptime_target_pct: float | None
    p99_target_ms: int | None


def achievement_by_tier(
    session: Session, since: datetime, targets: Mapping[str, Any]
) -> list[TierAchievement]:
    """Per paid tier: SLA periods closed since ``since`` and how they did against the targets."""
    sums: dict[str, list[float]] = {}
    for row in session.scalars(select(RollupSlaTier).where(RollupSlaTier.closed_at >= since)):
        acc = sums.setdefault(row.tier, [0.0] * 8)
        for i, v in enumerate(
            (
                row.periods,
                row.uptime_met,
                row.p99_measured,
                row.p99_met,
                row.uptime_sum,
                row.p99_sum,
                row.violations,
                row.credit_cents,
            )
        ):
            acc[i] += float(v)
    out = []
    tiers = [t for t in PAID_TIERS if t in targets or t in sums] + sorted(set(sums) - set(PAID_TIERS))
    for tier in tiers:
        n, up_ok, p_n, p_ok, up_sum, p_sum, viol, cents = sums.get(tier, [0.0] * 8)
        target = targets.get(tier) if isinstance(targets.get(tier), Mapping) else {}
        up_target = to_decimal(target.get("uptime_pct")) if target else None
        out.append(
            TierAchievement(
                tier=tier,
                periods=int(n),
                uptime_met_pct=100.0 * up_ok / n if n else None,
                p99_met_pct=100.0 * p_ok / p_n if p_n else None,
                mean_uptime_pct=up_sum / n if n else None,
                mean_p99_ms=p_sum / p_n if p_n else None,
                violations=int(viol),
                credit_cents=int(cents),
                uptime_target_pct=float(up_target) if up_target is not None else None,
                p99_target_ms=int(target["p99_ms"]) if target and target.get("p99_ms") is not None else None,
            )
        )
    return out


def violations(session: Session, since: datetime, limit: int = 50) -> list[RollupSlaPeriod]:
    """Customer periods that missed a target, closed since ``since``, newest first."""
    return list(
        session.scalars(
            select(RollupSlaPeriod)
            .where(RollupSlaPeriod.violated.is_(True), RollupSlaPeriod.closed_at >= since)
            .order_by(RollupSlaPeriod.closed_at.desc(), RollupSlaPeriod.customer_id)
            .limit(limit)
        )
    )
