"""Payment processor adapter: the protocol the effect handlers use, and a deterministic sandbox.

Every call carries the upstream idempotency key (Stripe's model): the processor remembers the
result under that key, so a job that is retried after a crash, a kill or a timeout gets the stored
result back and can never charge or refund twice. The sandbox behaves like a processor's test mode:
the outcome is chosen by the card token, and the processor's ledger is a database table
(``sandbox_charges``) so its memory of keys survives process restarts. It never uses the network.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from webapp.db import Database
from webapp.models.background import SandboxCharge

_CURRENCY = re.compile(r"[A-Z]{3}")


class TransientProcessorError(Exception):
    """The processor did not answer (timeout, network): nothing is known, retry with the same key."""


class IdempotencyKeyReused(Exception):
    """The key was already used for a different request (a caller bug, never retried)."""


@dataclass(frozen=True)
class ChargeResult:
    """The processor's answer to a charge."""

    status: str  # "succeeded" or "declined"
    reference: str
    idempotency_key: str
    amount_cents: int
    currency: str
    decline_code: str | None = None
    decline_message: str | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """True when the money was taken."""
        return self.status == "succeeded"


@dataclass(frozen=True)
class RefundResult:
    """The processor's answer to a refund."""

    status: str  # "succeeded" or "failed"
    reference: str
    idempotency_key: str
    amount_cents: int
    currency: str
    failure_code: str | None = None
    failure_message: str | None = None
    replayed: bool = False

    @property
    def ok(self) -> bool:
        """True when the money was sent back."""
        return self.status == "succeeded"


@dataclass(frozen=True)
class SettlementLine:
    """One line of the processor's settlement report: a charge or refund as the processor settled it."""

    reference: str
    kind: str  # "charge" or "refund"
    amount_cents: int
    currency: str
    status: str  # "succeeded", "declined" or "failed"
    customer_ref: str
    settled_at: datetime


@dataclass(frozen=True)
class SettlementPage:
    """A page of the settlement report, and the cursor to ask for the next one with."""

    lines: tuple[SettlementLine, ...]
    cursor: str | None
    has_more: bool


class PaymentProcessor(Protocol):
    """What the effect handlers and the reconciliation import need from a payment processor."""

    name: str

    def charge(
        self, idempotency_key: str, customer_ref: str, amount_cents: int, currency: str, token: str
    ) -> ChargeResult:
        """Charge ``amount_cents`` on ``token``; the same key always returns the first result."""
        ...

    def refund(
        self,
        idempotency_key: str,
        customer_ref: str,
        amount_cents: int,
        currency: str,
        payment_ref: str | None = None,
    ) -> RefundResult:
        """Refund ``amount_cents`` (of ``payment_ref`` when known); the same key returns the first result."""
        ...

    def settlement_report(self, cursor: str | None, *, until: datetime, limit: int = 500) -> SettlementPage:
        """Lines settled after ``cursor`` (from the start when None) and before ``until``, oldest first.

        ``cursor`` is the opaque value of a previous page; a page of ``limit`` lines says ``has_more``.
        """
        ...


SUCCEEDING_TOKENS = frozenset({"tok_visa", "tok_mastercard", "tok_amex", "tok_slow", "tok_refund_fail"})
"""Test-mode tokens that charge successfully (tok_slow answers slowly; tok_refund_fail refunds fail)."""

DECLINING_TOKENS: dict[str, tuple[str, str]] = {
    "tok_decline_insufficient_funds": ("insufficient_funds", "Your card has insufficient funds."),
    "tok_decline_card_declined": ("card_declined", "Your card was declined."),
    "tok_decline_expired_card": ("expired_card", "Your card has expired."),
    "tok_decline_incorrect_cvc": ("incorrect_cvc", "Your card's security code is incorrect."),
    "tok_decline_fraudulent": ("fraudulent", "Your card was declined."),
}
"""Test-mode tokens that are declined, with the decline code and message the processor returns."""

TIMEOUT_TOKEN = "tok_timeout"
"""A token whose calls always time out (a transient error: the job is retried, then fails)."""


def _reference(prefix: str, key: str) -> str:
    # Derived from the key, so a replay and the original answer carry the same processor id.
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _validate(amount_cents: int, currency: str) -> None:
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise ValueError(f"amount_cents must be a positive integer, got {amount_cents!r}")
    if not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency must be an ISO 4217 code, got {currency!r}")


class SandboxProcessor:
    """A deterministic test-mode processor whose ledger is the ``sandbox_charges`` table."""

    name = "sandbox"

    def __init__(self, db: Database, *, slow_seconds: float = 3.0) -> None:
        self.db = db
        self.slow_seconds = slow_seconds

    def charge(
        self, idempotency_key: str, customer_ref: str, amount_cents: int, currency: str, token: str
    ) -> ChargeResult:
        """Charge by token: succeeding tokens succeed, declining ones decline, tok_timeout times out."""
        _validate(amount_cents, currency)
        stored = self._stored(idempotency_key, "charge", customer_ref, amount_cents)
        if stored is not None:
            return _charge_result(stored, replayed=True)
        if token == TIMEOUT_TOKEN:
            raise TransientProcessorError(f"processor timed out charging {idempotency_key}")
        if token in SUCCEEDING_TOKENS:
            status, code, message = "succeeded", None, None
        elif token in DECLINING_TOKENS:
            status, (code, message) = "declined", DECLINING_TOKENS[token]
        else:
            status, code, message = "declined", "invalid_payment_method", f"No such payment method: {token}"
        row, replayed = self._record(
            SandboxCharge(
                idempotency_key=idempotency_key,
                kind="charge",
                reference=_reference("ch", idempotency_key),
                customer_ref=customer_ref,
                amount_cents=amount_cents,
                currency=currency,
                token=token,
                status=status,
                decline_code=code,
                decline_message=message,
                created_at=datetime.now(UTC),
            )
        )
        if token == "tok_slow" and not replayed:
            # The processor has taken the money; its answer is slow to arrive. A worker killed now has
            # charged upstream without recording it: the retry must get this result, not a new charge.
            time.sleep(self.slow_seconds)
        return _charge_result(row, replayed=replayed)

    def refund(
        self,
        idempotency_key: str,
        customer_ref: str,
        amount_cents: int,
        currency: str,
        payment_ref: str | None = None,
    ) -> RefundResult:
        """Refund: fails when the original charge used ``tok_refund_fail``; times out for ``tok_timeout``."""
        _validate(amount_cents, currency)
        stored = self._stored(idempotency_key, "refund", customer_ref, amount_cents)
        if stored is not None:
            return _refund_result(stored, replayed=True)
        original = self._by_reference(payment_ref) if payment_ref else None
        token = original.token if original is not None else None
        if token == TIMEOUT_TOKEN:
            raise TransientProcessorError(f"processor timed out refunding {idempotency_key}")
        if token == "tok_refund_fail":
            status, code, message = "failed", "refund_failed", "The card issuer refused the refund."
        else:
            status, code, message = "succeeded", None, None
        row, replayed = self._record(
            SandboxCharge(
                idempotency_key=idempotency_key,
                kind="refund",
                reference=_reference("re", idempotency_key),
                customer_ref=customer_ref,
                amount_cents=amount_cents,
                currency=currency,
                token=token,
                status=status,
                decline_code=code,
                decline_message=message,
                created_at=datetime.now(UTC),
            )
        )
        return _refund_result(row, replayed=replayed)

    def settlement_report(self, cursor: str | None, *, until: datetime, limit: int = 500) -> SettlementPage:
        """The ledger rows created after ``cursor`` and before ``until``, ordered by (time, id).

        A sandbox charge settles when it is recorded (``settled_at`` = its ``created_at``). The cursor is
        ``"<settled_at ISO>|<id>"`` of the page's last line. Callers keep ``until`` a little in the past
        (``SETTLEMENT_LAG``): a row committed late with an earlier time than a line already reported would
        otherwise never be reported.
        """
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        query = select(SandboxCharge).where(SandboxCharge.created_at < until)
        if cursor:
            after_at, after_id = _parse_cursor(cursor)
            # The first condition is implied by the second; it is there so the index is range-scanned.
            query = query.where(
                SandboxCharge.created_at >= after_at,
                or_(SandboxCharge.created_at > after_at, SandboxCharge.id > after_id),
            )
        query = query.order_by(SandboxCharge.created_at, SandboxCharge.id).limit(limit + 1)
        with self.db.session() as session:
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        lines = tuple(
            SettlementLine(
                reference=r.reference,
                kind=r.kind,
                amount_cents=r.amount_cents,
                currency=r.currency,
                status=r.status,
                customer_ref=r.customer_ref,
                settled_at=r.created_at,
            )
            for r in rows
        )
        last = f"{rows[-1].created_at.isoformat()}|{rows[-1].id}" if rows else cursor
        return SettlementPage(lines=lines, cursor=last, has_more=more)

    # ------------------------------------------------------------------ the processor's own ledger

    def _stored(self, key: str, kind: str, customer_ref: str, amount_cents: int) -> SandboxCharge | None:
        with self.db.session() as session:
            row = session.scalars(select(SandboxCharge).where(SandboxCharge.idempotency_key == key)).first()
        same = row is None or (row.kind, row.customer_ref, row.amount_cents) == (
            kind,
            customer_ref,
            amount_cents,
        )
        if not same:
            assert row is not None
            raise IdempotencyKeyReused(f"idempotency key {key} was used for a different {row.kind}")
        return row

    def _by_reference(self, reference: str) -> SandboxCharge | None:
        with self.db.session() as session:
            return session.scalars(select(SandboxCharge).where(SandboxCharge.reference == reference)).first()

    def _record(self, row: SandboxCharge) -> tuple[SandboxCharge, bool]:
        """Insert the row in the processor's own transaction; a concurrent twin with the key wins.

        Returns the stored row and whether it was already there (a replay).
        """
        try:
            with self.db.session() as session:
                session.add(row)
            return row, False
        except IntegrityError:
            stored = self._stored(row.idempotency_key, row.kind, row.customer_ref, row.amount_cents)
            assert stored is not None
            return stored, True


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    at, _, row_id = cursor.rpartition("|")
    try:
        moment = datetime.fromisoformat(at)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)), int(row_id)
    except ValueError:
        raise ValueError(f"not a settlement report cursor: {cursor!r}") from None


def _charge_result(row: SandboxCharge, *, replayed: bool) -> ChargeResult:
    return ChargeResult(
        status=row.status,
        reference=row.reference,
        idempotency_key=row.idempotency_key,
        amount_cents=row.amount_cents,
        currency=row.currency,
        decline_code=row.decline_code,
        decline_message=row.decline_message,
        replayed=replayed,
    )


def _refund_result(row: SandboxCharge, *, replayed: bool) -> RefundResult:
    return RefundResult(
        status=row.status,
        reference=row.reference,
        idempotency_key=row.idempotency_key,
        amount_cents=row.amount_cents,
        currency=row.currency,
        failure_code=row.decline_code,
        failure_message=row.decline_message,
        replayed=replayed,
    )
