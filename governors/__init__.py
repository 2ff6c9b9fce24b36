"""The pure domain core: eight governors as data, decided by one deterministic engine.

Nothing here imports Flask, SQLAlchemy, Redis or RQ, reads a clock or performs I/O (except
``load_settings``, which reads the TOML file it is given). The service layer in ``webapp`` builds
``Facts`` and ``Instance`` snapshots, asks the engine, and executes the returned decisions.
"""

from __future__ import annotations

from governors.engine import allowed_events, apply, decide, manual_actions, may_cascade, plan, timer_facts
from governors.facts import Context, Facts, Instance, TimerState
from governors.outcomes import AllowedEvent, CascadeEmit, Decision, Plan, PlanStep, Rejection, TimerOp
from governors.registry import GOVERNORS, InvalidGovernor, get_governor, transition_table, validate
from governors.settings import Settings, default_settings, load_settings

__all__ = [
    "GOVERNORS",
    "AllowedEvent",
    "CascadeEmit",
    "Context",
    "Decision",
    "Facts",
    "Instance",
    "InvalidGovernor",
    "Plan",
    "PlanStep",
    "Rejection",
    "Settings",
    "TimerOp",
    "TimerState",
    "allowed_events",
    "apply",
    "decide",
    "default_settings",
    "get_governor",
    "load_settings",
    "manual_actions",
    "may_cascade",
    "plan",
    "timer_facts",
    "transition_table",
    "validate",
]
