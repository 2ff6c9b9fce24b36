"""Adapters to the outside world (payment processor, KYC provider, fraud scorer), chosen once per process.

Only sandbox implementations exist: deterministic, database-backed where idempotency must survive a
restart, and never touching the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from webapp.adapters.fraud import FraudScorer, SandboxFraudScorer
from webapp.adapters.kyc import KycProvider, SandboxKyc
from webapp.adapters.payments import PaymentProcessor, SandboxProcessor
from webapp.runtime import Runtime


@dataclass(frozen=True)
class Adapters:
    """The adapters the effect handlers call."""

    payments: PaymentProcessor
    kyc: KycProvider
    fraud: FraudScorer = field(default_factory=SandboxFraudScorer)


def adapters_for(runtime: Runtime) -> Adapters:
    """The runtime's adapters (built on first use; tests may put their own in ``runtime.extras``)."""
    found = runtime.extras.get("adapters")
    if isinstance(found, Adapters):
        return found
    # SANDBOX_SLOW_SECONDS: how long the sandbox takes to answer for the token tok_slow.
    slow = float(os.environ.get("SANDBOX_SLOW_SECONDS", "3"))
    built = Adapters(payments=SandboxProcessor(runtime.db, slow_seconds=slow), kyc=SandboxKyc())
    runtime.extras["adapters"] = built
    return built


__all__ = ["Adapters", "FraudScorer", "KycProvider", "PaymentProcessor", "adapters_for"]
