"""The domain core stays pure: importing it loads no web, database or queue library."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("flask", "sqlalchemy", "redis", "rq", "psycopg", "werkzeug")


def test_importing_governors_imports_no_framework() -> None:
    code = (
        "import sys, governors, governors.describe, governors.simulate, governors.money\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"governors imported {out.stdout.strip()}"


def test_engine_reads_no_clock() -> None:
    """`now` is an input: the engine and rules never call datetime.now/utcnow or time.time."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "governors"
    offenders = [
        f"{p.relative_to(root)}"
        for p in root.rglob("*.py")
        if any(s in p.read_text() for s in ("datetime.now(", "utcnow(", "time.time(", "date.today("))
    ]
    assert offenders == []
