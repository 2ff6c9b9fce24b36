"""A failing guard disables a staff action in ``manual_actions`` (found while writing Multi-Tenant).

The probe used to carry no ``reason``, so the engine's reason check fired before any guard and every
button looked enabled; the probe now supplies a placeholder reason and guards decide.
"""

from __future__ import annotations

from datetime import UTC, datetime

from governors import Facts, Instance, default_settings, manual_actions

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)


def test_a_failing_guard_disables_the_staff_action() -> None:
    tenant = Instance("multi_tenant", "mt-1", "healthy", 1, customer_id="c1", data={"breaker_open": False})
    actions = {
        a.event: a
        for a in manual_actions("multi_tenant", tenant, Facts(now=NOW, settings=default_settings()), "admin")
    }
    assert actions["breaker_off"].allowed is False
    assert actions["breaker_off"].reason == "the tenant's circuit breaker is not on"


def test_a_row_serving_two_events_titles_each_button_by_its_event() -> None:
    """B23 serves dunning_hold and dunning_release: each button says which it is."""
    invoice = Instance("billing", "inv-1", "retry_1", 1, customer_id="c1", data={"total_cents": 2999})
    titles = {
        a.event: a.title
        for a in manual_actions("billing", invoice, Facts(now=NOW, settings=default_settings()), "finance")
    }
    assert titles["dunning_hold"] == "Hold dunning"
    assert titles["dunning_release"] == "Release dunning"
