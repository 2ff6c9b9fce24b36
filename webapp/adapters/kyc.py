"""KYC/AML provider adapter: the protocol the effect handlers use, and a deterministic sandbox.

A verification request carries an idempotency key; the provider's request id is derived from it, so a
retried job asks the same question and gets the same answer and id. The sandbox decides by the
subject's reference (the customer id): ``kyc_fail`` in it fails the check, ``kyc_review`` asks for a
manual review, ``kyc_timeout`` never answers (a transient error); anything else passes. No network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol


class TransientKycError(Exception):
    """The provider did not answer: retry with the same key."""


@dataclass(frozen=True)
class KycResult:
    """The provider's verdict on one verification request."""

    status: str  # "passed", "failed" or "manual_review"
    request_id: str
    reason: str | None = None
    fraud_indicators: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when the subject is verified."""
        return self.status == "passed"


class KycProvider(Protocol):
    """What the effect handlers need from a KYC/AML provider."""

    def verify(self, idempotency_key: str, reference: str, purpose: str) -> KycResult:
        """Verify the subject ``reference`` (``purpose``: onboarding or reverification)."""
        ...


class SandboxKyc:
    """A deterministic test-mode KYC provider: the verdict follows markers in the reference."""

    def verify(self, idempotency_key: str, reference: str, purpose: str) -> KycResult:
        """The verdict for ``reference``; the request id depends only on the idempotency key."""
        request_id = "kyc_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:20]
        if "kyc_timeout" in reference:
            raise TransientKycError(f"KYC provider timed out for {idempotency_key}")
        if "kyc_fail" in reference:
            return KycResult("failed", request_id, reason="document_mismatch")
        if "kyc_review" in reference:
            return KycResult("manual_review", request_id, reason="document_unreadable")
        return KycResult("passed", request_id)
