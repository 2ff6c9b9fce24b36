"""Dashboard latency with 100,000 customers: rollups, not scans (issue 5 benchmark).

One JSON line: the P99 of every dashboard page and fragment (``/dashboards/``, ``/dashboards/finance/``
and each panel, fetched as htmx does with ``HX-Request``) under ``--clients`` concurrent signed-in
managers against ``marketplace serve`` (gunicorn), next to the P99 of the customer page
(``/customers/<id>``) measured on the same server in alternating rounds; target: every dashboard's P99
within 2× the customer page's.

The database is fresh (created, migrated and dropped here). The measured customer is created through
the service (``bench.customer_page.seed``); the other ``--customers`` customers are bulk-loaded with
COPY (the service creates about 6 customers/s): a customer row, six governor instances in realistic
states (subscription, entitlement, invoice, account, quota, compliance) and their history rows (trial,
conversion or churn, a payment received or declined, some closed SLA periods), spread over the last 12
weeks. ``refresh_rollups`` then runs once (timed; reported as ``refresh_rows_per_s``), as the periodic
job would have done along the way.

Reuses ``bench.customer_page``'s machinery (seed, server start and stop, signed-in keep-alive clients,
the measuring loop, which sends ``HX-Request`` for the panels).

Run: ``.venv/bin/python -m bench.dashboards`` (about 6 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from bench.audit import _libpq, create_database, drop_database
from bench.customer_page import (
    MEASURED,
    PASSWORD,
    TENANT,
    Client,
    free_port,
    measure,
    pct,
    seed,
    start_server,
    stop_server,
)
from webapp.db import Database
from webapp.services import users
from webapp.services.rollups import refresh_rollups

OPS = (
    "/dashboards/",
    "/dashboards/panels/latency",
    "/dashboards/panels/errors",
    "/dashboards/panels/queue",
    "/dashboards/panels/response",
    "/dashboards/panels/states",
    "/dashboards/panels/stuck",
    "/dashboards/panels/sla",
    "/dashboards/panels/subscriptions",
    "/dashboards/panels/approvals",
)
FINANCE = (
    "/dashboards/finance/",
    "/dashboards/finance/payments",
    "/dashboards/finance/recovery",
    "/dashboards/finance/failures",
)
SUBSCRIPTION_STATES = (
    ("active", 0.70),
    ("trial", 0.08),
    ("trial_ended", 0.03),
    ("cancelled", 0.09),
    ("paused", 0.03),
    ("awaiting_renewal", 0.05),
    ("renewal_grace", 0.02),
)
INVOICE_STATES = (
    ("archived", 0.80),
    ("payment_received", 0.06),
    ("payment_pending", 0.06),
    ("payment_failed", 0.03),
    ("retry_1", 0.02),
    ("retry_2", 0.01),
    ("retry_3", 0.01),
    ("collection_agency", 0.01),
)
DECLINES = ("insufficient_funds", "card_declined", "expired_card", "processing_error")
TIERS = ("starter", "professional", "enterprise")


def _pick(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    r = rng.random()
    for state, share in table:
        r -= share
        if r <= 0:
            return state
    return table[-1][0]


def _copy(conn: psycopg.Connection, table: str, columns: str, rows: Iterator[tuple[object, ...]]) -> int:
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def bulk_load(url: str, customers: int, now: datetime, seed_value: int = 5) -> dict[str, int]:
    """COPY ``customers`` customers with instances and history into the bench database."""
    rng = random.Random(seed_value)
    start = now - timedelta(weeks=12)
    instances: list[tuple[object, ...]] = []
    history: list[tuple[object, ...]] = []
    people: list[tuple[object, ...]] = []
    seq = 0

    def event(
        inst: str,
        cid: str,
        gov: str,
        name: str,
        frm: str | None,
        to: str,
        state_seq: int,
        at: datetime,
        payload: dict[str, object],
    ) -> None:
        nonlocal seq
        seq += 1
        history.append(
            (TENANT, cid, inst, gov, "R", name, frm, to, state_seq, "system", "sys", None,
             Jsonb(payload), Jsonb({}), Jsonb({}), f"bulk-{seq}", at)
        )  # fmt: skip

    def instance(
        iid: str,
        cid: str,
        gov: str,
        state: str,
        entered: datetime,
        data: dict[str, object],
        timeout: datetime | None = None,
    ) -> None:
        instances.append(
            (iid, TENANT, cid, gov, None, state, 3, 3, entered, timeout, False, "",
             Jsonb(data), Jsonb({}), entered, entered)
        )  # fmt: skip

    for n in range(customers):
        cid = f"bulk-{n}"
        tier = TIERS[n % 3]
        born = start + timedelta(seconds=rng.randrange(int((now - start).total_seconds() * 0.7)))
        people.append((cid, TENANT, f"Bulk Customer {n}", f"bulk{n}@example.com", tier, born))
        # Subscription: trial, then converted / ended / churned.
        sub_state = _pick(rng, SUBSCRIPTION_STATES)
        sub = f"subs-bulk-{n}"
        event(sub, cid, "subscription", "start_trial", None, "trial", 1, born, {})
        at = born + timedelta(hours=rng.randrange(1, 24 * 14))
        if sub_state == "trial":
            at = born
        elif sub_state == "trial_ended":
            event(sub, cid, "subscription", "trial_expired", "trial", "trial_ended", 2, at, {})
        else:
            event(sub, cid, "subscription", "purchase", "trial", "active", 2, at, {"tier": tier})
            if sub_state != "active":
                at = min(now - timedelta(minutes=5), at + timedelta(hours=rng.randrange(1, 24 * 30)))
                event(sub, cid, "subscription", f"to_{sub_state}", "active", sub_state, 3, at, {})
        instance(sub, cid, "subscription", sub_state, at, {"tier": tier, "monthly_price_cents": 2999})
        # Entitlement: mostly active; 0.5 % waiting for approval (some past 12 h / 24 h).
        ent = f"enti-bulk-{n}"
        if rng.random() < 0.005:
            instance(
                ent, cid, "entitlement", "pending_approval", now - timedelta(hours=rng.randrange(1, 40)), {}
            )
        else:
            instance(ent, cid, "entitlement", "active", born, {})
        # Invoice: one per customer; its payment outcome in the history.
        inv = f"bill-bulk-{n}"
        inv_state = _pick(rng, INVOICE_STATES)
        paid_at = min(
            now - timedelta(minutes=5),
            born + timedelta(days=rng.randrange(1, 30), minutes=rng.randrange(1440)),
        )
        event(inv, cid, "billing", "invoice_delivered", "invoice_issued", "payment_pending", 2, born, {})
        timeout = None
        if inv_state in ("archived", "payment_received"):
            event(
                inv,
                cid,
                "billing",
                "payment_received",
                "payment_pending",
                "payment_received",
                3,
                paid_at,
                {"amount_cents": 2999},
            )
        elif inv_state != "payment_pending":
            event(
                inv, cid, "billing", "payment_declined", "payment_pending", "payment_failed", 3, paid_at,
                {"decline_code": rng.choice(DECLINES)},
            )  # fmt: skip
            timeout = paid_at + timedelta(days=2)
        instance(inv, cid, "billing", inv_state, paid_at, {"total_cents": 2999}, timeout)
        instance(f"acct-bulk-{n}", cid, "customer_account", "active", born, {})
        instance(f"quot-bulk-{n}", cid, "quota_sla", "within_limits", born, {"tier": tier})
        instance(f"comp-bulk-{n}", cid, "compliance_audit", "compliant", born, {})
        if rng.random() < 0.1:  # a closed SLA period, some below target
            uptime = rng.choice(("99.999", "99.95", "99.9", "99.5", "99.0"))
            event(
                f"quot-bulk-{n}", cid, "quota_sla", "sla_period_closed", "within_limits", "within_limits", 1,
                now - timedelta(days=rng.randrange(1, 60)),
                {"period": "2026-10", "uptime_pct": uptime, "p99_ms": rng.choice((80, 300, 900, 2500))},
            )  # fmt: skip
    history.sort(
        key=lambda r: r[-1].isoformat() if isinstance(r[-1], datetime) else ""
    )  # ids in time order, as the service would have written them
    with psycopg.connect(_libpq(url)) as conn:
        counts = {
            "customers": _copy(
                conn, "customers", "id, tenant_id, name, email, tier, created_at", iter(people)
            ),
            "instances": _copy(
                conn,
                "governor_instances",
                "id, tenant_id, customer_id, governor, subject_id, state, state_seq, version, entered_at,"
                " timeout_at, attention, attention_reason, data, timers, created_at, updated_at",
                iter(instances),
            ),
            "history": _copy(
                conn,
                "transitions",
                "tenant_id, customer_id, instance_id, governor, row_id, event, from_state, to_state,"
                " state_seq, actor, role, reason, payload, changes, timers, event_id, occurred_at",
                iter(history),
            ),
        }
        conn.commit()
        for table in ("customers", "governor_instances", "transitions"):
            conn.execute(f"ANALYZE {table}")
        conn.commit()
    return counts


def managers(db: Database, clients: int) -> list[str]:
    """One manager per client (the finance fragments need dashboard.finance; managers hold both)."""
    emails = []
    with db.session() as s:
        for n in range(clients):
            email = f"manager{n}@bench.example.com"
            users.create_user(s, email, ["manager"], PASSWORD, granted_by="bench", now=datetime.now(UTC))
            emails.append(email)
    return emails


HTMX = {"HX-Request": "true"}
"""Panels are fetched as htmx fetches them (the fragment, not the whole page)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="bulk-loaded customers")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (serve default)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement per URL per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all URLs (customer page between)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    loads = [os.getloadavg()[0]]
    url = create_database()
    db = Database(url)
    server: subprocess.Popen[bytes] | None = None
    try:
        seed(db, 1, 0)  # the tenant, the catalog and the measured customer, through the service
        emails = managers(db, args.clients)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        counts = bulk_load(url, args.customers, now)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with db.session() as s:
            report = refresh_rollups(s, now + timedelta(minutes=2))
        refresh_s = time.perf_counter() - t0
        with db.session() as s:  # a second run: nothing new, what a steady-state minute costs
            t1 = time.perf_counter()
            refresh_rollups(s, now + timedelta(minutes=3))
            steady_s = time.perf_counter() - t1
        port = free_port()
        server = start_server(url, port, args.workers)
        clients = [Client(port, e) for e in emails]
        customer_page = f"/customers/{MEASURED}"
        base: list[float] = []
        pages: dict[str, list[float]] = {u: [] for u in (*OPS, *FINANCE)}
        for _ in range(args.rounds):  # alternate, so drifting machine load hits both alike
            base += measure(clients, customer_page, args.seconds, warmup=2)
            for path in pages:
                as_htmx = None if path.endswith("/") else HTMX
                pages[path] += measure(clients, path, args.seconds, warmup=2, headers=as_htmx)
        loads.append(os.getloadavg()[0])
        base99 = pct(base, 0.99)
        p99 = {u: round(pct(v, 0.99), 1) for u, v in pages.items()}
        worst = max(p99.values()) / base99
        print(
            json.dumps(
                {
                    "bench": "dashboards",
                    "pages": p99,
                    "customer_page_p99_ms": round(base99, 1),
                    "worst_ratio": round(worst, 2),
                    "target": 2.0,
                    "worst_page": max(p99, key=lambda u: p99[u]),
                    "p50_ms": {u: round(pct(v, 0.5), 1) for u, v in pages.items()},
                    "customer_page_p50_ms": round(pct(base, 0.5), 1),
                    "requests": sum(len(v) for v in pages.values()),
                    "customer_page_requests": len(base),
                    "customers": counts["customers"] + 1,
                    "instances": counts["instances"],
                    "history_rows": counts["history"],
                    "bulk_load_s": round(load_s, 1),
                    "refresh_rows": report.transitions,
                    "refresh_s": round(refresh_s, 1),
                    "refresh_rows_per_s": round(report.transitions / refresh_s) if refresh_s else None,
                    "refresh_idle_s": round(steady_s, 2),
                    "clients": args.clients,
                    "workers": args.workers,
                    "loadavg": [round(x, 1) for x in loads],
                }
            ),
            flush=True,
        )
    finally:
        stop_server(server)
        db.dispose()
        if not args.keep:
            drop_database(url)


if __name__ == "__main__":
    main()
