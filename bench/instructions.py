"""Python instructions per event through the service, counted by callgrind: a figure that does not move
with the machine's load, for comparing two versions of the hot path on a noisy machine.

``bench.service`` measures what matters (throughput, 4 threads, the same-run baseline), but on a
shared 2-core machine its rounds move by ±10 % from one run to the next, more than most single
changes to the service are worth. This counts the instructions the Python process executes (the
client side only: PostgreSQL's work is not in it) for ``--events`` lock/unlock events in one thread,
after a warm-up, under ``valgrind --tool=callgrind`` with collection switched on around the loop
only; the baseline is the same count for as many raw psycopg INSERT + commit of the audit row
(``bench.service``'s baseline). The same code gives the same count within about 0.3 %
(``PYTHONHASHSEED`` is fixed). Prints one JSON line::

    {"bench": "instructions", "ours": <instructions per event>, "baseline": <per insert>,
     "ratio": baseline/ours, "events": ...}

Run: ``.venv/bin/python -m bench.instructions [--events N]`` (needs valgrind; about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from bench.audit import create_database, drop_database
from bench.service import LOCK, SUPPORT, UNLOCK, _now, setup
from webapp import audit
from webapp.db import Database
from webapp.runtime import ready_process
from webapp.services.transitions import EventRequest, fire_event


def _collect(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], capture_output=True)


def child(mode: str, events: int) -> None:
    """Run under callgrind: set up, warm up, then count ``events`` events (or baseline inserts)."""
    import psycopg

    url = create_database()
    db = Database(url, pool_size=2)
    try:
        accounts = setup(db, 3)
        ready_process()
        if mode == "baseline":
            payload = audit.canonical_payload({"transition_id": 123456, "reason_sha256": "9" * 64})
            sql = (
                "INSERT INTO audit_entries (tenant_id, seq, occurred_at, actor, role, action, customer_id,"
                " instance_id, payload, prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            )
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                for n in range(100 + events):
                    if n == 100:
                        _collect(True)
                    row = ("raw-t0", n + 1, _now(), "b", "support", "transition", "c", "i", payload, "a" * 64)
                    conn.execute(sql, (*row, "b" * 64))
                    conn.commit()
                _collect(False)
            return
        ids = [i for t in sorted(accounts) for i in accounts[t]]
        tenant_of = {i: t for t in accounts for i in accounts[t]}
        locked: set[str] = set()
        for n in range(100 + events):
            if n == 100:
                _collect(True)
            iid = ids[n % len(ids)]
            unlocking = iid in locked
            with db.session() as s:
                req = EventRequest(
                    tenant_of[iid], "unlock" if unlocking else "lock", iid, UNLOCK if unlocking else LOCK
                )
                result = fire_event(
                    s, req, SUPPORT, _now(), approved_by="bench-manager" if unlocking else None, commit=True
                )
            if result.status != 200:
                raise RuntimeError(f"{iid}: {result.body}")
            (locked.discard if unlocking else locked.add)(iid)
        _collect(False)
    finally:
        db.dispose()
        drop_database(url)


def count(mode: str, events: int) -> int:
    """Instructions collected by a child run under callgrind."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}/callgrind.out",
                sys.executable,
                "-m",
                "bench.instructions",
                "--child",
                mode,
                "--events",
                str(events),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(done.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--child", choices=("service", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.events)
        return
    ours = count("service", args.events) / args.events
    baseline = count("baseline", args.events) / args.events
    print(
        json.dumps(
            {
                "bench": "instructions",
                "ours": round(ours),
                "baseline": round(baseline),
                "ratio": round(baseline / ours, 4),
                "events": args.events,
            }
        )
    )


if __name__ == "__main__":
    main()
