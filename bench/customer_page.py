"""Customer page latency under concurrent staff load (issue 4 benchmarks).

Two JSON lines:

* ``customer_page``: P50 of GET /customers/<id> (the eight governors with diagrams, the last 50 history
  rows) under ``--clients`` concurrent signed-in clients against ``marketplace serve`` (gunicorn), divided
  by the P50 of a trivial signed-in page (GET /auth/account) on the same server, target <= 3; also the
  page's P99 (goal < 200 ms).
* ``customer_page_history``: the page's P99 with ``--big`` history rows in ``transitions`` divided by its
  P99 with ``--small`` rows, target <= 1.3 (same server, same clients).

The database is fresh (created, migrated and dropped here). Customers are created through the service
(``webapp.services.setup``); the bulk history is a fixture COPYed straight into ``transitions``: a fixed
share for the measured customer (copies of its real transitions, so its timeline pages through them) and
the rest for many other customers.

Run: ``.venv/bin/python -m bench.customer_page`` (about 5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import select

from bench.audit import _libpq, create_database, drop_database
from webapp.db import Database
from webapp.models import TransitionRecord
from webapp.services import users
from webapp.services.setup import activate_customer, ensure_catalog, ensure_tenant, signup_customer

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench-tenant"
MEASURED = "cust-bench-0"
PASSWORD = "bench-password-" + "x" * 8
START = datetime(2026, 1, 1, tzinfo=UTC)
GOVERNORS = (
    "customer_account",
    "trial",
    "compliance",
    "entitlement",
    "subscription",
    "billing",
    "catalog",
    "dunning",
)
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"')


# --------------------------------------------------------------------------- fixture


def seed(db: Database, customers: int, clients: int) -> list[str]:
    """The tenant, catalog, ``customers`` active customers and one support user per client; their emails."""
    with db.session() as s:
        ensure_tenant(s, TENANT, START - timedelta(days=1), "Bench tenant")
        ensure_catalog(s, START - timedelta(days=1))
    for n in range(customers):
        cid = f"cust-bench-{n}"
        at = START + timedelta(hours=n)
        with db.session() as s:
            signup_customer(
                s,
                TENANT,
                cid,
                name=f"Bench Customer {n}",
                email=f"bench{n}@example.com",
                tier=("starter", "professional", "enterprise")[n % 3],
                now=at,
            )
        with db.session() as s:
            activate_customer(s, TENANT, cid, now=at + timedelta(minutes=30))
    _more_events(db)
    emails = []
    with db.session() as s:
        for n in range(clients):
            email = f"support{n}@bench.example.com"
            # Signed in on the real clock: a password set at START would have expired (90 days).
            users.create_user(s, email, ["support"], PASSWORD, granted_by="bench", now=datetime.now(UTC))
            emails.append(email)
    return emails


def _more_events(db: Database) -> None:
    """Buy and invoice for the measured customer when the demo driver is available (more history)."""
    try:
        from webapp.services.demo import Driver, buy_and_invoice, pay_invoice
    except ImportError:
        return
    driver = Driver(db, None)
    at = START + timedelta(days=2)
    try:
        if buy_and_invoice(driver, TENANT, MEASURED, at):
            pay_invoice(driver, TENANT, MEASURED, at + timedelta(days=1))
    except Exception as exc:  # extra history is optional
        print(f"note: extra events skipped ({type(exc).__name__}: {exc})", file=sys.stderr)


def history_rows(url: str) -> int:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute("SELECT count(*) FROM transitions").fetchone()
        return int(row[0]) if row else 0


def copy_measured(db: Database, url: str, rows: int) -> None:
    """``rows`` history rows for the measured customer: copies of its real transitions, dated earlier."""
    with db.sessions() as s:
        real = s.scalars(
            select(TransitionRecord)
            .where(TransitionRecord.customer_id == MEASURED)
            .order_by(TransitionRecord.id)
        ).all()
        s.expunge_all()
    assert real, "the measured customer has no history"
    have = len(real)
    _copy(url, (_clone(real[i % have], i) for i in range(max(0, rows - have))))


def _clone(r: TransitionRecord, i: int) -> tuple[object, ...]:
    return (
        r.tenant_id,
        r.customer_id,
        r.instance_id,
        r.governor,
        r.row_id,
        r.event,
        r.from_state,
        r.to_state,
        r.state_seq,
        r.actor,
        r.role,
        r.reason,
        Jsonb(r.payload),
        Jsonb(r.changes),
        Jsonb(r.timers),
        f"bench-m-{i}",
        START - timedelta(days=400) + timedelta(minutes=i),
    )


def copy_others(url: str, start: int, stop: int, customers_per: int = 200) -> None:
    """Rows ``start..stop`` of other customers' history (``customers_per`` rows per customer)."""
    payload, changes, timers = Jsonb({"note": "bench"}), Jsonb({"state": "x"}), Jsonb({})

    def rows() -> object:
        for i in range(start, stop):
            c = i // customers_per
            g = GOVERNORS[i % 8]
            yield (
                TENANT,
                f"other-{c}",
                f"inst-other-{c}-{g}",
                g,
                "R01",
                "bench_event",
                "a",
                "b",
                i % customers_per,
                "system",
                "sys",
                None,
                payload,
                changes,
                timers,
                f"bench-o-{i}",
                START - timedelta(days=300) + timedelta(seconds=i),
            )

    _copy(url, rows())


def _copy(url: str, rows: object) -> None:
    cols = (
        "tenant_id, customer_id, instance_id, governor, row_id, event, from_state, to_state, state_seq,"
        " actor, role, reason, payload, changes, timers, event_id, occurred_at"
    )
    with psycopg.connect(_libpq(url)) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY transitions ({cols}) FROM STDIN") as copy:
            for row in rows:  # type: ignore[attr-defined]
                copy.write_row(row)
        conn.commit()
        conn.execute("ANALYZE transitions")
        conn.commit()


# --------------------------------------------------------------------------- server and clients


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SECRET_KEY=secrets.token_hex(32), DATABASE_URL=url)
    env.pop("REDIS_URL", None)
    exe = ROOT / ".venv" / "bin" / "marketplace"
    cmd = [str(exe) if exe.exists() else "marketplace", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"marketplace serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/auth/sign-in")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("marketplace serve did not answer within 60 s")


def stop_server(server: subprocess.Popen[bytes] | None) -> None:
    """Stop a server started by ``start_server`` (killed if it does not exit within 20 s)."""
    if server is None:
        return
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


class Client:
    """One keep-alive connection with a signed-in session (the cookie is Secure, so it is sent by hand)."""

    def __init__(self, port: int, email: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}
        status, body = self.request("GET", "/auth/sign-in")
        match = CSRF.search(body)
        assert status == 200 and match, f"sign-in page: {status}"
        form = {"csrf_token": match.group(1) or match.group(2), "email": email, "password": PASSWORD}
        status, body = self.request(
            "POST",
            "/auth/sign-in",
            urllib.parse.urlencode(form).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status in (302, 303), f"sign-in failed: {status} {body[:300]}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        head = dict(headers or {})
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body, head)
        response = self.conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        for raw in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = raw.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, text

    def get(self, path: str, headers: dict[str, str] | None = None) -> float:
        """GET ``path``; the seconds it took (a non-200 answer fails the bench)."""
        t0 = time.perf_counter()
        status, body = self.request("GET", path, None, headers)
        seconds = time.perf_counter() - t0
        assert status == 200, f"GET {path}: {status} {body[:300]}"
        return seconds


def measure(
    clients: Sequence[Client],
    path: str,
    seconds: float,
    warmup: int = 3,
    headers: dict[str, str] | None = None,
) -> list[float]:
    """Every client GETs ``path`` (with ``headers``) in a loop for ``seconds``; the latencies in ms."""
    for c in clients:
        for _ in range(warmup):
            c.get(path, headers)
    out: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def loop(c: Client) -> None:
        mine = []
        try:
            while time.monotonic() < stop:
                mine.append(c.get(path, headers) * 1000)
        except BaseException as exc:  # re-raised below
            errors.append(exc)
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (serve default)")
    parser.add_argument("--customers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of each measurement")
    parser.add_argument("--measured-rows", type=int, default=2000, help="its history rows")
    parser.add_argument("--small", type=int, default=10_000, help="history rows in the first measurement")
    parser.add_argument("--big", type=int, default=1_000_000, help="history rows in the second measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating page/baseline rounds")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
    loads = [os.getloadavg()[0]]
    url = create_database()
    db = Database(url)
    server: subprocess.Popen[bytes] | None = None
    try:
        emails = seed(db, args.customers, args.clients)
        copy_measured(db, url, args.measured_rows)
        others = 0
        have = history_rows(url)
        copy_others(url, others, others + max(0, args.small - have))
        others += max(0, args.small - have)
        small_rows = history_rows(url)
        port = free_port()
        server = start_server(url, port, args.workers)
        clients = [Client(port, e) for e in emails]
        page = f"/customers/{MEASURED}"
        solo = measure(clients[:1], page, min(5.0, args.seconds))
        base: list[float] = []
        ours: list[float] = []
        for _ in range(args.rounds):  # alternate, so drifting machine load hits both alike
            base += measure(clients, "/auth/account", args.seconds / args.rounds)
            ours += measure(clients, page, args.seconds / args.rounds)
        loads.append(os.getloadavg()[0])
        p50, b50, p99 = statistics.median(ours), statistics.median(base), pct(ours, 0.99)
        print(
            json.dumps(
                {
                    "bench": "customer_page",
                    "ours_p50_ms": round(p50, 1),
                    "baseline_p50_ms": round(b50, 1),
                    "ratio": round(p50 / b50, 2),
                    "target": 3,
                    "p99_ms": round(p99, 1),
                    "p99_goal_ms": 200,
                    "p50_1client_ms": round(statistics.median(solo), 1),
                    "requests": len(ours),
                    "baseline_requests": len(base),
                    "clients": args.clients,
                    "workers": args.workers,
                    "history_rows": small_rows,
                    "loadavg": round(loads[-1], 1),
                }
            ),
            flush=True,
        )
        t0 = time.perf_counter()
        copy_others(url, others, others + max(0, args.big - small_rows))
        load_seconds = time.perf_counter() - t0
        big_rows = history_rows(url)
        again = measure(clients, page, args.seconds)
        loads.append(os.getloadavg()[0])
        small99, big99 = p99, pct(again, 0.99)
        print(
            json.dumps(
                {
                    "bench": "customer_page_history",
                    "p99_10k_ms": round(small99, 1),
                    "p99_1m_ms": round(big99, 1),
                    "ratio": round(big99 / small99, 2),
                    "target": 1.3,
                    "p50_10k_ms": round(p50, 1),
                    "p50_1m_ms": round(statistics.median(again), 1),
                    "rows_small": small_rows,
                    "rows_big": big_rows,
                    "measured_customer_rows": args.measured_rows,
                    "load_seconds": round(load_seconds, 1),
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
