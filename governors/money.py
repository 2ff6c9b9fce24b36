"""Money as integer cents; Decimal only inside calculations (GOVERNORS.md §0.5, §4, §6.3).

Rounding is to the nearest cent with ties away from zero (D-22). Every function is pure and takes
its prices, discounts and targets as arguments (they are settings, never constants here).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation


def to_decimal(value: object) -> Decimal | None:
    """A finite Decimal from a number or numeric text (bools, None and garbage give None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def round_cents(amount: Decimal) -> int:
    """Round a Decimal number of cents to an int, ties away from zero (ROUND_HALF_UP is symmetric)."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def period_charge(monthly_cents: int, discount_pct: int | Decimal, days: int) -> int:
    """Charge for ``days`` of a plan: monthly × (1 − discount) × days / 30 (§4, from C)."""
    factor = (Decimal(100) - Decimal(discount_pct)) / Decimal(100)
    return round_cents(Decimal(monthly_cents) * factor * Decimal(days) / Decimal(30))


def prorate(
    old_monthly_cents: int, new_monthly_cents: int, discount_pct: int | Decimal, remaining_days: int
) -> int:
    """Proration for a tier change (S11): (new − old) × remaining_days / 30 on cycle-discounted prices.

    Positive for an upgrade (a charge), negative for a downgrade (a credit note on the next invoice).
    """
    factor = (Decimal(100) - Decimal(discount_pct)) / Decimal(100)
    delta = (Decimal(new_monthly_cents) - Decimal(old_monthly_cents)) * factor
    return round_cents(delta * Decimal(remaining_days) / Decimal(30))


def sla_credit_percent(
    *,
    uptime_pct: Decimal,
    uptime_target_pct: Decimal,
    p99_ms: int | None,
    p99_target_ms: int | None,
    error_rate_pct: Decimal | None,
    error_rate_target_pct: Decimal | None,
    uptime_cap_pct: Decimal = Decimal(10),
    uptime_factor: Decimal = Decimal(10),
    p99_penalty_pct: Decimal = Decimal(5),
    error_penalty_pct: Decimal = Decimal(5),
    total_cap_pct: Decimal = Decimal(25),
) -> Decimal:
    """SLA credit % (§6.3, D-30): min(cap, factor × uptime shortfall in pp) + p99 and error penalties, capped.

    A target of None means the tier has no such SLO (no penalty).
    """
    shortfall = max(Decimal(0), uptime_target_pct - uptime_pct)
    credit = min(uptime_cap_pct, uptime_factor * shortfall)
    if p99_ms is not None and p99_target_ms is not None and p99_ms > p99_target_ms:
        credit += p99_penalty_pct
    if (
        error_rate_pct is not None
        and error_rate_target_pct is not None
        and error_rate_pct > error_rate_target_pct
    ):
        credit += error_penalty_pct
    return min(total_cap_pct, credit)


def percent_of(amount_cents: int, pct: Decimal) -> int:
    """``pct`` percent of an amount in cents, rounded half away from zero."""
    return round_cents(Decimal(amount_cents) * pct / Decimal(100))
