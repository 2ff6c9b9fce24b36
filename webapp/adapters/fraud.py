"""Fraud-scoring provider adapter: the protocol the effect handlers use, and a deterministic sandbox.

The Customer Account governor checks every active customer's fraud score on an adaptive clock (§5.3:
every 7 d at 0–30, 3 d at 31–70, daily while suspended or under enhanced monitoring). A clock cannot
know a score, so the check timer asks this provider (from a job, outside any database transaction)
and the answer comes back as the event ``fraud_check(score)`` (rows A07–A09, Ax10).

The sandbox decides by the subject's reference (the customer id), like a processor's test mode:
``fraud_critical`` in it scores 95 (review), ``fraud_high`` 80 (suspend), ``fraud_medium`` 50,
``fraud_timeout`` never answers (a transient error, retried by RQ); anything else gets a low score
(0–30) derived from the reference, so the same customer always scores the same. No network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Protocol


class TransientFraudError(Exception):
    """The provider did not answer: retry with the same key."""


@dataclass(frozen=True)
class FraudScore:
    """The provider's score (0–100) for one request, with the indicators it saw."""

    score: int
    request_id: str
    indicators: tuple[str, ...] = field(default=())


class FraudScorer(Protocol):
    """What the effect handlers need from a fraud-scoring provider."""

    def score(self, idempotency_key: str, reference: str) -> FraudScore:
        """Score the subject ``reference`` now."""
        ...


MARKERS: Final = (
    ("fraud_critical", 95, ("velocity", "device_mismatch", "stolen_card_signal")),
    ("fraud_high", 80, ("velocity", "device_mismatch")),
    ("fraud_medium", 50, ("new_device",)),
)
"""Sandbox markers in the reference, most severe first, with the score and indicators they give."""


class SandboxFraudScorer:
    """A deterministic test-mode fraud scorer: the score follows markers in the reference."""

    def score(self, idempotency_key: str, reference: str) -> FraudScore:
        """The score for ``reference``; the request id depends only on the idempotency key."""
        request_id = "frd_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
        if "fraud_timeout" in reference:
            raise TransientFraudError(f"fraud scorer timed out for {idempotency_key}")
        for marker, value, indicators in MARKERS:
            if marker in reference:
                return FraudScore(value, request_id, indicators)
        low = int.from_bytes(hashlib.sha256(reference.encode()).digest()[:2], "big") % 31
        return FraudScore(low, request_id)
