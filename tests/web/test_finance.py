"""Finance's billing retry board and bulk retry (CONSOLE.md §3.2; Flask client on PostgreSQL, CSRF on).

Invoices reach the dunning ladder the way production gets them there: a customer buys a plan
(subscription → billing cascade), the invoice is generated and delivered, and the processor
declines the charge (``payment_declined``, B05) — all through ``fire_event`` (``services.demo``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from webapp.db import Database
from webapp.models import GovernorInstance, TransitionRecord
from webapp.models.bulk import BulkRun
from webapp.runtime import Runtime
from webapp.services import bulk
from webapp.services.billing_queries import money_text, parse_money
from webapp.services.demo import SYSTEM, Driver, buy_and_invoice
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

from .conftest import MadeUser, sign_in

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_HIDDEN = re.compile(r'name="(csrf_token|idempotency_key|expected_version)" type="hidden" value="([^"]*)"')
_TOKEN = re.compile(r'name="token" value="([0-9a-f]{32})"')


def _failed_invoice(db: Database, customer_id: str, decline: str = "card_declined") -> GovernorInstance:
    """A customer whose first invoice payment was declined: billing in payment_failed."""
    with db.session() as s:
        ensure_tenant(s, "t-1", NOW)
        ensure_catalog(s, NOW)
    with db.session() as s:
        signup_customer(
            s, "t-1", customer_id, name="Ada Lovelace", email=f"{customer_id}@x.test", tier="starter", now=NOW
        )
    with db.session() as s:
        activate_customer(s, "t-1", customer_id, now=NOW + timedelta(minutes=1))
    driver = Driver(db, None)
    assert buy_and_invoice(driver, "t-1", customer_id, NOW + timedelta(minutes=2))
    result = driver.fire(
        "t-1",
        customer_id,
        "billing",
        "payment_declined",
        SYSTEM,
        NOW + timedelta(hours=1),
        {"decline_code": decline, "decline_message": f"processor said {decline}"},
    )
    assert result is not None and result.status == 200, result and result.body
    return _billing(db, customer_id)


def _billing(db: Database, customer_id: str) -> GovernorInstance:
    with db.session() as s:
        row = s.scalars(
            select(GovernorInstance).where(
                GovernorInstance.customer_id == customer_id, GovernorInstance.governor == "billing"
            )
        ).one()
        s.expunge(row)
        return row


def _transitions(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(TransitionRecord)) or 0)


@pytest.fixture
def finance(make_user: Callable[..., MadeUser], client: FlaskClient) -> MadeUser:
    user = make_user("fin@x.test", ["finance"])
    assert sign_in(client, user.email).status_code == 302
    return user


def test_money_parsing_is_integer_cents() -> None:
    assert parse_money("12.34") == 1234
    assert parse_money("1,000") == 100000
    assert parse_money("0.5") == 50
    assert parse_money("abc") is None
    assert parse_money("1.234") is None
    assert money_text(1234) == "12.34"


def test_board_lists_invoices_by_stage_with_amount_reason_and_customer(
    web_db: Database, client: FlaskClient, finance: MadeUser
) -> None:
    inv = _failed_invoice(web_db, "c-100")
    total = int(inv.data["total_cents"])
    page = client.get("/finance/retries")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'id="invoice-{inv.id}" data-state="payment_failed"' in html
    assert f'data-cents="{total}">{total // 100:,}.{total % 100:02d} {inv.data["currency"]}' in html
    assert "card_declined" in html and "processor said card_declined" in html
    assert 'href="/customers/c-100"' in html
    assert 'data-count="1">1</span>' in html  # payment_failed count
    assert "(retry due)" in html  # the running timer is the next attempt
    assert 'href="/approvals"' in html
    # The stage filter keeps it out of another stage.
    other = client.get("/finance/retries?stage=retry_1").get_data(as_text=True)
    assert f"invoice-{inv.id}" not in other
    assert "No invoice in the dunning ladder matches" in other


def test_filters_by_reason_customer_and_amount(
    web_db: Database, client: FlaskClient, finance: MadeUser
) -> None:
    a = _failed_invoice(web_db, "c-201", "card_declined")
    b = _failed_invoice(web_db, "c-202", "insufficient_funds")
    total = int(a.data["total_cents"])
    html = client.get("/finance/retries?reason=insufficient_funds").get_data(as_text=True)
    assert f"invoice-{b.id}" in html and f"invoice-{a.id}" not in html
    html = client.get("/finance/retries?customer=c-201").get_data(as_text=True)
    assert f"invoice-{a.id}" in html and f"invoice-{b.id}" not in html
    above = money_text(total + 1)
    html = client.get(f"/finance/retries?min={above}").get_data(as_text=True)
    assert f"invoice-{a.id}" not in html and f"invoice-{b.id}" not in html
    html = client.get(f"/finance/retries?min={money_text(total)}&max={money_text(total)}").get_data(
        as_text=True
    )
    assert f"invoice-{a.id}" in html and f"invoice-{b.id}" in html


def test_keyset_pagination(
    web_db: Database, client: FlaskClient, finance: MadeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webapp.services import billing_queries

    monkeypatch.setattr(billing_queries, "PAGE_SIZE", 1)
    ids = sorted([_failed_invoice(web_db, "c-301").id, _failed_invoice(web_db, "c-302").id])
    first = client.get("/finance/retries").get_data(as_text=True)
    assert f"invoice-{ids[0]}" in first and f"invoice-{ids[1]}" not in first
    assert f"cursor={ids[0]}" in first
    second = client.get(f"/finance/retries?cursor={ids[0]}").get_data(as_text=True)
    assert f"invoice-{ids[1]}" in second and f"invoice-{ids[0]}" not in second
    assert 'id="next-page"' not in second


def test_finance_retries_now_through_the_action_form(
    web_db: Database, client: FlaskClient, finance: MadeUser
) -> None:
    inv = _failed_invoice(web_db, "c-400")
    html = client.get("/finance/retries").get_data(as_text=True)
    assert f'/instances/{inv.id}/actions/retry_now"' in html
    assert f'/instances/{inv.id}/actions/escalate_to_admin"' in html
    assert f'/instances/{inv.id}/actions/dunning_hold"' in html
    form = client.get(f"/instances/{inv.id}/actions/retry_now").get_data(as_text=True)
    fields = dict(_HIDDEN.findall(form))
    response = client.post(
        f"/instances/{inv.id}/actions/retry_now",
        data={**fields, "reason_code": "other", "comment": "customer updated the card, retry at once"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert _billing(web_db, "c-400").state == "retry_1"
    board = client.get("/finance/retries?stage=retry_1").get_data(as_text=True)
    assert f'id="invoice-{inv.id}" data-state="retry_1"' in board


def test_support_cannot_see_the_board_and_compliance_sees_retry_disabled(
    web_db: Database, client: FlaskClient, make_user: Callable[..., MadeUser]
) -> None:
    inv = _failed_invoice(web_db, "c-500")
    make_user("sup@x.test", ["support"])
    comp = make_user("comp@x.test", ["compliance"], totp=True)
    assert sign_in(client, "sup@x.test").status_code == 302
    assert client.get("/finance/retries").status_code == 403
    other = client.application.test_client()
    assert sign_in(other, comp.email, totp=comp.totp_secret).status_code == 302
    html = other.get("/finance/retries").get_data(as_text=True)
    assert 'disabled aria-disabled="true" title="needs finance' in html
    assert 'data-event="retry_now"' in html
    token = _csrf(other)
    forged = other.post(
        f"/instances/{inv.id}/actions/retry_now",
        data={
            "csrf_token": token,
            "reason_code": "other",
            "comment": "forged retry from a crafted form",
            "idempotency_key": "k" * 32,
        },
    )
    assert forged.status_code == 403
    assert _billing(web_db, "c-500").state == "payment_failed"


def _csrf(client: FlaskClient) -> str:
    from .conftest import csrf_token

    return csrf_token(client, "/auth/account")


def test_bulk_preview_lists_per_invoice_outcomes(
    web_db: Database, client: FlaskClient, finance: MadeUser
) -> None:
    a = _failed_invoice(web_db, "c-601")
    b = _failed_invoice(web_db, "c-602")
    # b leaves payment_failed (retried already): it is not a bulk candidate any more.
    with web_db.session() as s:
        from webapp.services.transitions import Actor, EventRequest, fire_event

        res = fire_event(
            s,
            EventRequest(
                "t-1", "retry_now", instance_id=b.id, payload={"reason": "manual retry before bulk"}
            ),
            Actor(finance.id, "finance"),
            datetime.now(UTC),
        )
        assert res.status == 200, res.body
    token = _csrf(client)
    page = client.post("/finance/retries/bulk/preview", data={"csrf_token": token})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert f'id="preview-{a.id}" data-applies="yes"' in html
    assert "would move payment_failed → retry_1" in html
    assert f"preview-{b.id}" not in html
    assert 'name="instance_id" value="' + a.id + '"' in html
    assert _TOKEN.search(html)


def test_bulk_retry_runs_once_and_a_second_run_changes_nothing(
    web_db: Database, web_runtime: Runtime, client: FlaskClient, finance: MadeUser
) -> None:
    a = _failed_invoice(web_db, "c-701")
    b = _failed_invoice(web_db, "c-702")
    html = client.post("/finance/retries/bulk/preview", data={"csrf_token": _csrf(client)}).get_data(
        as_text=True
    )
    match = _TOKEN.search(html)
    assert match
    token = match.group(1)
    short = client.post(
        "/finance/retries/bulk",
        data={"csrf_token": _csrf(client), "token": token, "instance_id": [a.id, b.id], "reason": "short"},
    )
    assert short.status_code == 422
    assert "at least" in short.get_data(as_text=True)
    before = _transitions(web_db)
    done = client.post(
        "/finance/retries/bulk",
        data={
            "csrf_token": _csrf(client),
            "token": token,
            "instance_id": [a.id, b.id],
            "reason": "processor outage over, retry the failed batch",
        },
    )
    assert done.status_code == 303
    run_id = f"bulk-{token}"
    assert done.location.endswith(f"/finance/bulk/{run_id}")
    assert _billing(web_db, "c-701").state == "retry_1"
    assert _billing(web_db, "c-702").state == "retry_1"
    after_first = _transitions(web_db)
    assert after_first >= before + 2
    with web_db.session() as s:
        run = s.get(BulkRun, run_id)
        assert run is not None
        assert (run.status, run.done, run.total, run.runs) == ("finished", 2, 2, 1)
        assert {v["outcome"] for v in run.results.values()} == {"applied"}
    # The job again (a redelivery): every item replays, nothing new is written.
    results = bulk.run_bulk(web_runtime, run_id)
    assert {k: v["outcome"] for k, v in results.items()} == {a.id: "already applied", b.id: "already applied"}
    assert _transitions(web_db) == after_first
    # Submitting the same confirmation again shows the same run, no second job.
    again = client.post(
        "/finance/retries/bulk",
        data={
            "csrf_token": _csrf(client),
            "token": token,
            "instance_id": [a.id],
            "reason": "double click on it",
        },
    )
    assert again.status_code == 303
    assert _transitions(web_db) == after_first
    # The report fragment: finished, no polling, per-item outcome.
    fragment = client.get(f"/finance/bulk/{run_id}/progress", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert 'data-status="finished"' in body and "every 2s" not in body
    assert f'id="result-{a.id}" data-outcome="already applied"' in body
    assert 'data-outcome="already applied">already applied: 2</span>' in body
    assert client.get(f"/finance/bulk/{run_id}").status_code == 200


def test_progress_fragment_polls_while_queued(
    web_db: Database, client: FlaskClient, finance: MadeUser
) -> None:
    a = _failed_invoice(web_db, "c-801")
    with web_db.session() as s:
        bulk.create_run(
            s,
            user_id=finance.id,
            role="finance",
            reason="queued run waiting for a worker",
            instance_ids=[a.id],
            now=datetime.now(UTC),
            run_id="bulk-queued-1",
        )
    body = client.get("/finance/bulk/bulk-queued-1/progress").get_data(as_text=True)
    assert 'data-status="queued"' in body
    assert 'hx-trigger="every 2s"' in body
    assert 'hx-get="/finance/bulk/bulk-queued-1/progress"' in body
    assert '<span id="bulk-done">0</span> of 1 invoices' in body
    assert client.get("/finance/bulk/nope/progress").status_code == 404


def test_bulk_run_goes_through_the_queue_as_one_job(
    web_db: Database, web_runtime: Runtime, finance: MadeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fakeredis
    from rq import Queue

    from webapp import jobs

    a = _failed_invoice(web_db, "c-901")
    fake = fakeredis.FakeStrictRedis()
    monkeypatch.setitem(web_runtime.extras, "queue", Queue("bulk-test", connection=fake, is_async=False))
    monkeypatch.setattr(jobs, "_runtime", web_runtime)
    monkeypatch.setattr(jobs, "_runtime_pid", __import__("os").getpid())
    with web_db.session() as s:
        bulk.create_run(
            s,
            user_id=finance.id,
            role="finance",
            reason="retry through the worker queue",
            instance_ids=[a.id],
            now=datetime.now(UTC),
            run_id="bulk-rq-1",
        )
    assert bulk.start(web_runtime, "bulk-rq-1") == "queued"
    assert fake.exists("rq:job:bulk-run-bulk-rq-1")
    with web_db.session() as s:
        run = s.get(BulkRun, "bulk-rq-1")
        assert run is not None
        assert (run.status, run.done, run.results[a.id]["outcome"]) == ("finished", 1, "applied")
    assert _billing(web_db, "c-901").state != "payment_failed"


def test_bulk_retry_is_refused_to_a_role_that_may_not_retry(
    web_db: Database, client: FlaskClient, make_user: Callable[..., MadeUser]
) -> None:
    a = _failed_invoice(web_db, "c-950")
    auditor = make_user("aud@x.test", ["auditor"], totp=True)
    assert sign_in(client, auditor.email, totp=auditor.totp_secret).status_code == 302
    assert client.get("/finance/retries").status_code == 200
    token = _csrf(client)
    preview = client.post("/finance/retries/bulk/preview", data={"csrf_token": token})
    assert preview.status_code == 403
    assert "needs finance" in preview.get_data(as_text=True)
    forged = client.post(
        "/finance/retries/bulk",
        data={
            "csrf_token": token,
            "token": "a" * 32,
            "instance_id": [a.id],
            "reason": "auditor trying a forged bulk retry",
        },
    )
    assert forged.status_code == 403
    assert _billing(web_db, "c-950").state == "payment_failed"
    with web_db.session() as s:
        assert s.get(BulkRun, "bulk-" + "a" * 32) is None
