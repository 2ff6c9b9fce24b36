"""``marketplace demo``: the seeding (users for every role, customers over many states, once) and the
command end to end as a subprocess; ``marketplace serve`` refuses to start without SECRET_KEY."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from webapp.db import Database
from webapp.migrate import upgrade
from webapp.models import Approval, Customer, OutboxMessage, StaffUser, TransitionRecord
from webapp.policy import ROLES
from webapp.services.demo import DEMO_EMAIL_DOMAIN, credentials_path, seed_demo, state_spread

MARKETPLACE = str(Path(sys.executable).with_name("marketplace"))


def _db(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    upgrade(url)
    return Database(url)


def test_seed_makes_users_for_every_role_and_customers_across_many_states_once(tmp_path: Path) -> None:
    db = _db(tmp_path)
    now = datetime.now(UTC)
    report = seed_demo(db, now, customers=28, instance_dir=tmp_path)
    assert report.seeded and report.customers == 28 and report.events > 100 and report.timers_fired > 0
    assert sorted(u.role for u in report.users) == sorted(ROLES)
    with db.session() as s:
        users = s.scalars(select(StaffUser).where(StaffUser.email.like(f"%@{DEMO_EMAIL_DOMAIN}"))).all()
        assert sorted(r for u in users for r in u.roles) == sorted(ROLES)
        assert all(u.password_hash.startswith("$argon2") for u in users), "passwords are stored hashed"
        by_role = {next(iter(u.roles)): u for u in users}
        assert (
            by_role["admin"].totp_secret
            and by_role["compliance"].totp_secret
            and by_role["manager"].totp_secret
        )
        assert by_role["support"].totp_secret is None
        assert s.scalar(select(func.count()).select_from(Customer)) == 28
        pending = s.scalar(select(func.count()).select_from(Approval).where(Approval.status == "pending"))
        assert pending is not None and pending >= 1
        history = int(s.scalar(select(func.count()).select_from(TransitionRecord)) or 0)
        # The scenarios decided their outcomes: nothing of the simulated past is left for the worker
        # (it would re-charge old invoices and feed back stale KYC verdicts that the governors refuse).
        undelivered = s.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
        )
        assert undelivered == 0
        assert (s.scalar(select(func.count()).select_from(OutboxMessage)) or 0) > 0
    spread = state_spread(db)
    pairs = {(g, st) for g, states in spread.items() for st in states}
    assert len(pairs) >= 25, spread
    assert {"active", "locked", "deactivated", "onboarding"} <= set(spread["customer_account"])
    assert "payment_received" in spread["billing"]
    failing = {"payment_failed", "retry_1", "retry_2", "retry_3", "collection_agency"}
    assert failing & set(spread["billing"]), spread["billing"]
    assert len(spread["subscription"]) >= 5 and len(spread["entitlement"]) >= 5
    creds = credentials_path(tmp_path)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    stored = json.loads(creds.read_text())
    assert {r: stored[r]["password"] for r in ROLES} == {u.role: u.password for u in report.users}

    again = seed_demo(db, now, customers=28, instance_dir=tmp_path)
    assert not again.seeded and [u.password for u in again.users] == [u.password for u in report.users]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 28
        assert s.scalar(select(func.count()).select_from(TransitionRecord)) == history


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def _run_demo(instance: Path, log: Path) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY", "REDIS_URL")}
    env["MARKETPLACE_INSTANCE_DIR"] = str(instance)
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [MARKETPLACE, "demo", "--port", str(port), "--customers", "6"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            assert _wait_for(f"http://127.0.0.1:{port}/healthz", proc) == 200
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=5
            ) as response:
                assert json.loads(response.read())["openapi"].startswith("3.")
            deadline = time.monotonic() + 10
            while "Press Ctrl+C" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return log.read_text(), port


def test_demo_command_serves_the_console_prints_the_users_and_seeds_once(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    output, port = _run_demo(instance, tmp_path / "first.log")
    assert f"http://127.0.0.1:{port}/" in output
    printed = dict(re.findall(r"^\s+(\w+)\s+\S+@demo\.example\s+password (\S+)$", output, re.M))
    assert sorted(printed) == sorted(ROLES)
    assert output.count("TOTP secret") == 4
    assert (instance / "marketplace.db").exists()
    assert "seeded 6 customers" in output

    second, _port = _run_demo(instance, tmp_path / "second.log")
    assert "demo data already present" in second
    assert dict(re.findall(r"^\s+(\w+)\s+\S+@demo\.example\s+password (\S+)$", second, re.M)) == printed
    db = Database(f"sqlite:///{instance / 'marketplace.db'}")
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 6
    db.dispose()


def test_serve_refuses_to_start_without_secret_key() -> None:
    from webapp.cli import main

    result = CliRunner().invoke(main, ["serve", "--port", "0"], env={"SECRET_KEY": ""})
    assert result.exit_code == 2
    assert "SECRET_KEY is not set" in result.output


def test_serve_runs_gunicorn_with_the_app_factory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    upgrade(url)
    port = _free_port()
    env = {**os.environ, "SECRET_KEY": "test-secret-key-0123456789", "DATABASE_URL": url}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [MARKETPLACE, "serve", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/healthz", proc, timeout=60) == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_demo_card_payments_reconcile_and_bank_transfers_wait_for_finance(tmp_path: Path) -> None:
    """Demo invoices are paid through the sandbox processor (so reconciliation matches them); the
    bank-transfer customers' invoices are left for finance with the processor's reason."""
    from datetime import timedelta

    from webapp.config import Config
    from webapp.models import GovernorInstance
    from webapp.runtime import Runtime
    from webapp.services.reconciliation import reconcile_for

    db = _db(tmp_path)
    now = datetime.now(UTC)
    seed_demo(db, now, customers=28, instance_dir=tmp_path)
    rt = Runtime.from_config(Config.from_env({"DATABASE_URL": db.url}, testing=True))
    try:
        done = reconcile_for(rt, now + timedelta(days=2))
    finally:
        rt.close()
    assert done["import"]["imported"] > 0, done
    with db.session() as s:
        paid = [
            i
            for i in s.scalars(select(GovernorInstance).where(GovernorInstance.governor == "billing"))
            if i.data.get("payment_ids")
        ]
    reconciled = [i for i in paid if i.data.get("reconciled_at")]
    by_bank = [i for i in paid if any(p.startswith("bank_") for p in i.data["payment_ids"])]
    assert reconciled and by_bank and all(not i.data.get("reconciled_at") for i in by_bank)
    assert all(i.state == "archived" for i in reconciled)
