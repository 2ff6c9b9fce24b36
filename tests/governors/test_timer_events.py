"""Timer events of mixed rows are not staff actions (found while writing the Subscription governor).

S14 ("resume, or pause_expired (timer)") and S07 ("decline, or decision_timeout (timer)") are one row
each with two events, as GOVERNORS.md numbers them. ``manual_actions`` lists every event of a row that
a staff role may trigger, so support is offered a "pause_expired" and a "decision_timeout" button next
to "resume" and "decline". The event a state's own timer fires is not offered (nor accepted) from staff.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from governors import Facts, Instance, default_settings, manual_actions

NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "staff_event", "timer_event"),
    [("paused", "resume", "pause_expired"), ("trial_ended", "decline", "decision_timeout")],
)
def test_timer_events_are_not_offered_as_staff_actions(
    state: str, staff_event: str, timer_event: str
) -> None:
    inst = Instance("subscription", "sub1", state=state, state_seq=1, customer_id="c1", data={})
    events = {
        a.event
        for a in manual_actions("subscription", inst, Facts(now=NOW, settings=default_settings()), "support")
    }
    assert staff_event in events
    assert timer_event not in events


def test_staff_cannot_send_the_timer_event_of_a_mixed_row() -> None:
    from governors import Rejection, decide

    inst = Instance("subscription", "sub1", state="paused", state_seq=1, customer_id="c1", data={})
    out = decide(
        "subscription",
        inst,
        "pause_expired",
        Facts(now=NOW, role="support", payload={"reason": "customer asked to resume"}),
    )
    assert isinstance(out, Rejection) and out.code == "role_not_allowed"
