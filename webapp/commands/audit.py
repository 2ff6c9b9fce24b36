"""``marketplace audit``: verify the hash chains, export them, verify an export offline, anchor heads.

Exit codes (INTERFACES.md): ``verify`` 0 intact, 1 broken (the tenant and the first broken
sequence number are printed), 2 usage. Every read of the log is itself audited: ``verify`` appends
``audit.verified`` after it has checked a chain, ``export`` appends ``audit.exported`` after the
export, ``anchor`` appends ``audit.anchored``. A result about a broken chain is never appended to
that chain (it would bury the break under new entries); it goes to the platform's chain instead.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import io
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session

from webapp import audit
from webapp.config import Config
from webapp.db import Database

PLATFORM_TENANT = "platform"
"""Where results about broken chains are recorded (the operator's own chain)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def anchor_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The anchor HMAC key (AUDIT_ANCHOR_KEY, else derived from SECRET_KEY), or None when neither is set."""
    env = os.environ if environ is None else environ
    if not (env.get("AUDIT_ANCHOR_KEY") or env.get("SECRET_KEY")):
        return None
    return Config.from_env(env, testing=True).audit_anchor_key


def _config() -> Config:
    # The audit commands work without SECRET_KEY (the anchor key is resolved separately).
    return Config.from_env(testing=True)


@contextmanager
def _snapshot(db: Database) -> Iterator[Session]:
    """A read-only session that sees one instant of the database (REPEATABLE READ on PostgreSQL)."""
    with db.sessions() as session:
        if not db.is_sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            yield session
        finally:
            session.rollback()


def _record(
    db: Database, tenant_id: str, action: str, payload: dict[str, Any], now: datetime | None = None
) -> None:
    """Append one audit-of-the-audit entry in its own transaction."""
    with db.session() as session:
        audit.append(
            session,
            tenant_id,
            actor=_actor(),
            role="sys",
            action=action,
            occurred_at=now or _now(),
            payload=payload,
        )


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


# --------------------------------------------------------------------------- verify


def verify_database(
    db: Database,
    *,
    tenant: str | None,
    anchor_dir: Path,
    key: bytes | None,
    echo: Any = click.echo,
    jobs: int = 1,
) -> dict[str, audit.VerifyResult]:
    """Verify every chain (or one) and its anchors, then audit the run; returns results by tenant."""
    results: dict[str, audit.VerifyResult] = {}
    with _snapshot(db) as session:
        tenants = sorted(set(audit.tenants_with_chains(session)) | set(audit.anchored_tenants(anchor_dir)))
        if tenant is not None:
            if tenant not in tenants:
                raise click.UsageError(f"tenant {tenant!r} has no audit chain and no anchors")
            tenants = [tenant]
        for name in tenants:
            try:
                anchors = audit.read_anchors(anchor_dir, key, name) if key is not None else []
            except audit.AnchorForgery as exc:
                results[name] = audit.VerifyResult(False, 0, None, str(exc))
                continue
            if key is None and audit.anchor_path(anchor_dir, name).exists():
                raise click.UsageError(
                    "anchors exist but neither AUDIT_ANCHOR_KEY nor SECRET_KEY is set to check them"
                )
            results[name] = audit.verify_tenant(session, name, anchors, jobs=jobs)
    # Recorded after the snapshot is closed: the new entries extend intact chains only.
    now = _now()
    broken = {t: r for t, r in results.items() if not r.ok}
    for name, result in results.items():
        echo(_describe(name, result))
        if result.ok:
            _record(db, name, "audit.verified", result.as_json(), now)
    if broken:
        summary = {"tenants": {t: r.as_json() for t, r in sorted(broken.items())}, "ok": False}
        if PLATFORM_TENANT in broken:
            echo(f"not recording the failure in the {PLATFORM_TENANT!r} chain: it is broken itself", err=True)
        else:
            _record(db, PLATFORM_TENANT, "audit.verified", summary, now)
    return results


def _describe(tenant: str, result: audit.VerifyResult) -> str:
    anchors = f", {result.anchors_checked} anchor(s) matched" if result.anchors_checked else ""
    if result.ok:
        partial = f" from seq {result.first_seq}" if result.first_seq != 1 else ""
        return f"{tenant}: intact, {result.checked} entries{partial} (head seq {result.head_seq}){anchors}"
    where = f"at seq {result.first_broken_seq}" if result.first_broken_seq is not None else "(anchors)"
    return f"{tenant}: BROKEN {where}: {result.problem}"


def verify_file(path: Path, anchor: Path | None, key: bytes | None, echo: Any = click.echo) -> int:
    """Offline verification of an exported JSON Lines file (and an anchor file); returns the exit code."""
    anchors: list[dict[str, Any]] = []
    if anchor is not None:
        if key is None:
            raise click.UsageError("--anchor needs AUDIT_ANCHOR_KEY or SECRET_KEY to check the anchors' HMAC")
        files = sorted(anchor.glob("*.jsonl")) if anchor.is_dir() else [anchor]
        try:
            for f in files:
                anchors.extend(
                    audit.parse_anchor_lines(f.read_text(encoding="utf-8").splitlines(), key, str(f))
                )
        except audit.AnchorForgery as exc:
            echo(f"anchors: BROKEN: {exc}")
            return 1
    with open(path, encoding="utf-8") as handle:
        try:
            results = audit.verify_export_lines(handle, anchors)
        except ValueError as exc:
            echo(f"{path}: BROKEN: {exc}")
            return 1
    if not results:
        echo(f"{path}: no audit entries")
    for tenant, result in results.items():
        echo(_describe(tenant, result))
        if result.ok and result.first_seq != 1:
            echo(
                f"  (partial export: the link from seq {result.first_seq} to the entry before is not checked)"
            )
    return 0 if all(r.ok for r in results.values()) else 1


# --------------------------------------------------------------------------- export


def export_audit(
    db: Database, out: io.TextIOBase | Any, *, tenant: str | None, fmt: str, since: datetime | None
) -> dict[str, tuple[int, int, int]]:
    """Write the entries to ``out`` and audit the export; returns {tenant: (entries, first seq, last seq)}.

    ``since`` selects, per chain, every entry from the first one recorded at or after it: a
    contiguous tail, so a partial export still verifies offline.
    """
    digest = hashlib.sha256()
    counts: dict[str, tuple[int, int, int]] = {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(audit.EXPORT_FIELDS)
        out.write(buffer.getvalue())
    with _snapshot(db) as session:
        tenants = audit.tenants_with_chains(session)
        if tenant is not None:
            if tenant not in tenants:
                raise click.UsageError(f"tenant {tenant!r} has no audit chain")
            tenants = [tenant]
        for name in tenants:
            head = audit.head_of(session, name)
            start = 1 if since is None else audit.first_seq_since(session, name, since)
            if start is None:
                continue
            n, first, last = 0, 0, 0
            # Read up to the head of the snapshot: entries appended meanwhile belong to the next export.
            upto = head[0] if head is not None else 2**62
            for row in audit.stream_rows(session, name, from_seq=start, to_seq=upto):
                if writer is not None:
                    # CSV has no null: a missing customer or instance id is an empty cell.
                    buffer.seek(0)
                    buffer.truncate()
                    writer.writerow(["" if v is None else v for v in row])
                    line = buffer.getvalue()
                else:
                    line = audit.export_line(row) + "\n"
                out.write(line)
                digest.update(line.encode())
                n += 1
                first = first or int(row[1])
                last = int(row[1])
            if n:
                counts[name] = (n, first, last)
    now = _now()
    for name, (n, first, last) in counts.items():
        _record(
            db,
            name,
            "audit.exported",
            {
                "format": fmt,
                "since": since.isoformat() if since else None,
                "entries": n,
                "first_seq": first,
                "last_seq": last,
                "export_sha256": digest.hexdigest(),
            },
            now,
        )
    return counts


# --------------------------------------------------------------------------- anchor


def anchor_all(db: Database, directory: Path, key: bytes, echo: Any = click.echo) -> dict[str, int | None]:
    """Anchor every tenant's head, after checking the entries since its last anchor; returns {tenant: seq}.

    A chain that no longer extends its last anchor is not anchored again (that would bless the
    tampering): its value is None and the command exits 1.
    """
    anchored: dict[str, int | None] = {}
    now = _now()
    with _snapshot(db) as session:
        for name in audit.tenants_with_chains(session):
            head = audit.head_of(session, name)
            if head is None:
                continue
            previous = audit.read_anchors(directory, key, name)
            last = max(previous, key=lambda a: int(a["seq"])) if previous else None
            start = (int(last["seq"]) + 1, str(last["hash"])) if last else (1, audit.GENESIS)
            if (
                last is not None
                and audit.anchor_hashes(session, name, [int(last["seq"])]).get(int(last["seq"]))
                != last["hash"]
            ):
                echo(f"{name}: NOT anchored: the entry at anchored seq {last['seq']} has changed", err=True)
                anchored[name] = None
                continue
            with closing(audit.stream_rows(session, name, from_seq=start[0], to_seq=head[0])) as rows:
                result = audit.verify_rows(rows, start)
            if not result.ok or (result.head_seq, result.head_hash) != head:
                seq = result.first_broken_seq if not result.ok else result.head_seq + 1
                echo(f"{name}: NOT anchored: chain broken at seq {seq}", err=True)
                anchored[name] = None
                continue
            audit.write_anchor(directory, key, name, head[0], head[1], now)
            anchored[name] = head[0]
            echo(f"{name}: anchored seq {head[0]} {head[1][:16]}…")
    for name, seq in anchored.items():
        if seq is not None:
            _record(db, name, "audit.anchored", {"seq": seq, "directory": str(directory)}, now)
    return anchored


# --------------------------------------------------------------------------- CLI


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date or time: {value!r}", param_hint="--since") from None
    # A bare date or time without an offset is read as UTC (the only zone the console uses).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def register(main: click.Group) -> None:
    """Add the ``audit`` group."""

    @main.group("audit")
    def audit_group() -> None:
        """The tamper-evident audit log."""

    @audit_group.command("verify")
    @click.option("--tenant", default=None, help="Only this tenant's chain.")
    @click.option(
        "--file",
        "file_",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Verify an exported JSON Lines file offline (no database).",
    )
    @click.option(
        "--anchor",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="With --file: an anchor file (or directory) to check the export against.",
    )
    @click.option(
        "--jobs",
        type=click.IntRange(1, 64),
        default=audit.default_verify_jobs,
        show_default="one per CPU, at most 8",
        help="Processes verifying a long chain side by side (PostgreSQL; chains of 200,000 or more entries).",
    )
    def verify_command(tenant: str | None, file_: Path | None, anchor: Path | None, jobs: int) -> None:
        """Verify the hash chains and the stored anchors (exit 1 names the first broken seq)."""
        key = anchor_key()
        if file_ is not None:
            if tenant is not None:
                raise click.UsageError("--tenant cannot be combined with --file")
            sys.exit(verify_file(file_, anchor, key))
        if anchor is not None:
            raise click.UsageError("--anchor is for offline checks; use it with --file")
        config = _config()
        db = Database(config.database_url)
        try:
            results = verify_database(
                db, tenant=tenant, anchor_dir=config.audit_anchor_dir, key=key, jobs=jobs
            )
        finally:
            db.dispose()
        if not results:
            click.echo("no audit chains")
        sys.exit(0 if all(r.ok for r in results.values()) else 1)

    @audit_group.command("export")
    @click.option("--tenant", default=None, help="Only this tenant's chain.")
    @click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
    @click.option("--since", default=None, help="From the first entry at or after this ISO 8601 instant.")
    def export_command(tenant: str | None, fmt: str, since: str | None) -> None:
        """Write the audit entries with their hashes to standard output (the export is audited)."""
        moment = _parse_since(since)
        config = _config()
        db = Database(config.database_url)
        try:
            stream = sys.stdout
            export_audit(db, stream, tenant=tenant, fmt=fmt, since=moment)
            stream.flush()
        finally:
            db.dispose()

    @audit_group.command("anchor")
    def anchor_command() -> None:
        """Record every chain head, HMAC-keyed, in AUDIT_ANCHOR_DIR (outside the database)."""
        key = anchor_key()
        if key is None:
            raise click.UsageError("set AUDIT_ANCHOR_KEY (or SECRET_KEY) to key the anchors")
        config = _config()
        db = Database(config.database_url)
        try:
            done = anchor_all(db, config.audit_anchor_dir, key)
        except audit.AnchorForgery as exc:
            _fail(f"anchors: {exc}", 1)
            return
        finally:
            db.dispose()
        sys.exit(0 if all(seq is not None for seq in done.values()) else 1)
