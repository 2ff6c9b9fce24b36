"""The audit trail against PostgreSQL: append-only storage, tampering caught at the right seq, anchors, CLI.

The application cannot change an audit row (a trigger refuses UPDATE, DELETE and TRUNCATE). The
tampering tests act as a database superuser would: they switch the trigger off for one
transaction, rewrite rows, switch it back on, and then expect verification to name the first
sequence number that no longer holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError

from tests.services.conftest import NOW
from webapp import audit
from webapp.cli import main
from webapp.db import Database
from webapp.models import AuditEntry, AuditHead

TENANT = "t-1"
KEY = b"test-anchor-key"


def _append(db: Database, count: int, tenant: str = TENANT, start: int = 0) -> None:
    """Append ``count`` entries with varied content (non-ASCII actor, microseconds, nulls)."""
    with db.session() as s:
        for i in range(start, start + count):
            audit.append(
                s,
                tenant,
                actor="Zoë Ångström" if i % 7 == 3 else f"u-{i % 5}",
                role="support" if i % 2 else "sys",
                action="transition",
                occurred_at=NOW + timedelta(seconds=i, microseconds=(i * 37) % 1000 if i % 3 else 0),
                customer_id=f"c-{i % 4}" if i % 5 else None,
                instance_id=f"inst-{i % 3}" if i % 6 else None,
                payload={
                    "n": i,
                    "note": "ünïcode ✓" if i % 4 == 0 else "plain",
                    "nested": {"b": 1, "a": [i]},
                },
            )


@contextmanager
def _superuser(db: Database) -> Iterator[Connection]:
    """A transaction with the append-only trigger off, as an attacker with superuser rights has."""
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
        yield conn
        conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER USER"))


def _verify(db: Database, anchors: list[dict[str, Any]] | None = None) -> audit.VerifyResult:
    """Verify by one process, and check that three processes (on ranges 1-10, 11-20, 21-... of a
    30-entry chain) come to the same result, whatever the tampering."""
    with db.session() as s:
        serial = audit.verify_tenant(s, TENANT, anchors or [])
    with db.session() as s:
        limit = audit.PARALLEL_MIN_ENTRIES
        audit.PARALLEL_MIN_ENTRIES = 1
        try:
            parallel = audit.verify_tenant(s, TENANT, anchors or [], jobs=3)
        finally:
            audit.PARALLEL_MIN_ENTRIES = limit
    assert parallel == serial
    return serial


def _row(conn: Connection, seq: int) -> dict[str, Any]:
    found = conn.execute(
        text("SELECT * FROM audit_entries WHERE tenant_id = :t AND seq = :s"), {"t": TENANT, "s": seq}
    )
    return dict(found.mappings().one())


def _anchor_now(db: Database, directory: Path) -> dict[str, Any]:
    with db.session() as s:
        head = audit.head_of(s, TENANT)
    assert head is not None
    return audit.write_anchor(directory, KEY, TENANT, head[0], head[1], NOW)


# --------------------------------------------------------------------------- storage


def test_the_application_cannot_update_delete_or_truncate_audit_rows(db: Database) -> None:
    _append(db, 3)
    statements = [
        "UPDATE audit_entries SET payload = '{}' WHERE seq = 2",
        "DELETE FROM audit_entries WHERE seq = 3",
        "TRUNCATE audit_entries",
    ]
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
    with db.session() as s:
        assert [e.seq for e in s.scalars(select(AuditEntry).order_by(AuditEntry.seq))] == [1, 2, 3]
    assert _verify(db).ok


def test_a_clean_chain_verifies_and_hashes_are_the_canonical_json(db: Database) -> None:
    _append(db, 40)
    result = _verify(db)
    assert (result.ok, result.checked, result.head_seq, result.first_broken_seq) == (True, 40, 40, None)
    with db.session() as s:
        entries = s.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        rendered = list(audit.stream_rows(s, TENANT))
    assert entries[0].prev_hash == audit.GENESIS
    for entry, row in zip(entries, rendered, strict=True):
        # The independent definition: SHA-256 of json.dumps(sort_keys=True) of every field.
        body = {
            "action": entry.action,
            "actor": entry.actor,
            "customer_id": entry.customer_id,
            "instance_id": entry.instance_id,
            "occurred_at": entry.occurred_at.isoformat(),
            "payload": json.loads(entry.payload),
            "prev_hash": entry.prev_hash,
            "role": entry.role,
            "seq": entry.seq,
            "tenant_id": entry.tenant_id,
        }
        text_ = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text_.encode()).hexdigest() == entry.hash
        # The server renders the timestamp exactly as Python does (with and without microseconds).
        assert row[2] == entry.occurred_at.isoformat()
    assert any("." in r[2] for r in rendered) and any("." not in r[2] for r in rendered)


def test_appends_in_one_transaction_lock_the_head_once_and_chain(db: Database) -> None:
    with db.session() as s:
        for i in range(5):
            audit.append(s, TENANT, actor="a", role="sys", action="x", occurred_at=NOW, payload={"i": i})
        s.flush()
        assert s.get(AuditHead, TENANT).seq == 5  # type: ignore[union-attr]
    with db.session() as s:
        audit.append(s, TENANT, actor="a", role="sys", action="x", occurred_at=NOW)
    result = _verify(db)
    assert result.ok and result.head_seq == 6


# --------------------------------------------------------------------------- tampering


def test_a_changed_byte_in_a_payload_is_caught_at_its_seq(db: Database) -> None:
    _append(db, 30)
    with _superuser(db) as conn:
        payload = _row(conn, 17)["payload"]
        changed = payload.replace('"n":16', '"n":19')
        assert len(changed) == len(payload) and changed != payload
        conn.execute(text("UPDATE audit_entries SET payload = :p WHERE seq = 17"), {"p": changed})
    result = _verify(db)
    assert (result.ok, result.first_broken_seq) == (False, 17)
    assert result.problem == "entry hash does not match its content"
    assert result.checked == 16


def test_a_deleted_middle_row_is_caught_at_its_seq(db: Database) -> None:
    _append(db, 30)
    with _superuser(db) as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE tenant_id = :t AND seq = 12"), {"t": TENANT})
    result = _verify(db)
    assert (result.ok, result.first_broken_seq, result.problem) == (False, 12, "missing entry")


@pytest.mark.parametrize("seq", [1, 10, 11, 20, 21, 30])
@pytest.mark.parametrize("tamper", ["byte", "delete", "prev_hash"])
def test_parallel_verification_names_the_same_first_broken_seq_at_range_edges(
    db: Database, seq: int, tamper: str
) -> None:
    _append(db, 30)
    with _superuser(db) as conn:
        where = {"t": TENANT, "s": seq}
        if tamper == "byte":
            conn.execute(
                text("UPDATE audit_entries SET role = role || 'x' WHERE tenant_id = :t AND seq = :s"), where
            )
        elif tamper == "delete":
            conn.execute(text("DELETE FROM audit_entries WHERE tenant_id = :t AND seq = :s"), where)
        else:
            conn.execute(
                text(
                    "UPDATE audit_entries SET prev_hash = repeat('f', 64) WHERE tenant_id = :t AND seq = :s"
                ),
                where,
            )
    result = _verify(db)  # compares three processes with one
    assert not result.ok and result.first_broken_seq == seq and result.checked == seq - 1


def test_two_swapped_rows_are_caught_at_the_first_of_them(db: Database) -> None:
    _append(db, 30)
    with _superuser(db) as conn:
        # Swap the two entries' places in the chain: each keeps its own hash but takes the other's seq.
        conn.execute(
            text("UPDATE audit_entries SET seq = -1 WHERE tenant_id = :t AND seq = 8"), {"t": TENANT}
        )
        conn.execute(text("UPDATE audit_entries SET seq = 8 WHERE tenant_id = :t AND seq = 9"), {"t": TENANT})
        conn.execute(
            text("UPDATE audit_entries SET seq = 9 WHERE tenant_id = :t AND seq = -1"), {"t": TENANT}
        )
    result = _verify(db)
    assert (result.ok, result.first_broken_seq) == (False, 8)
    assert result.problem == "previous hash does not match"


def test_swapped_contents_with_their_seqs_kept_are_caught_too(db: Database) -> None:
    _append(db, 30)
    columns = [
        "occurred_at",
        "actor",
        "role",
        "action",
        "customer_id",
        "instance_id",
        "payload",
        "prev_hash",
        "hash",
    ]
    with _superuser(db) as conn:
        a, b = _row(conn, 20), _row(conn, 21)
        for seq, src in ((20, b), (21, a)):
            sets = ", ".join(f"{c} = :{c}" for c in columns)
            conn.execute(
                text(f"UPDATE audit_entries SET {sets} WHERE tenant_id = :t AND seq = :s"),
                {**{c: src[c] for c in columns}, "t": TENANT, "s": seq},
            )
    result = _verify(db)
    assert (result.ok, result.first_broken_seq) == (False, 20)


def test_a_truncated_tail_is_caught_by_the_head_and_then_by_the_anchor(db: Database, tmp_path: Path) -> None:
    _append(db, 30)
    anchor = _anchor_now(db, tmp_path)
    assert anchor["seq"] == 30
    with _superuser(db) as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE tenant_id = :t AND seq > 25"), {"t": TENANT})
    result = _verify(db)
    assert (result.ok, result.first_broken_seq) == (False, 26)
    assert result.problem == "chain does not reach its recorded head"
    # The attacker also rewinds the head row: the chain is self-consistent, only the anchor knows.
    with _superuser(db) as conn:
        last = _row(conn, 25)
        conn.execute(
            text("UPDATE audit_heads SET seq = 25, hash = :h WHERE tenant_id = :t"),
            {"h": last["hash"], "t": TENANT},
        )
    assert _verify(db).ok
    anchors = audit.read_anchors(tmp_path, KEY, TENANT)
    result = _verify(db, anchors)
    assert (result.ok, result.first_broken_seq) == (False, 26)
    assert result.problem == "chain ends before an anchored entry (truncated tail)"


def _rehash_from(conn: Connection, start: int, last: int) -> None:
    """Rewrite entry ``start`` and recompute every later hash and the head, as a careful attacker would."""
    prev = _row(conn, start - 1)["hash"] if start > 1 else audit.GENESIS
    for seq in range(start, last + 1):
        r = _row(conn, seq)
        payload = r["payload"].replace('"plain"', '"forged"') if seq == start else r["payload"]
        digest = audit.entry_hash(
            tenant_id=TENANT,
            seq=seq,
            occurred_at=r["occurred_at"],
            actor=r["actor"],
            role=r["role"],
            action=r["action"],
            customer_id=r["customer_id"],
            instance_id=r["instance_id"],
            payload_json=payload,
            prev_hash=prev,
        )
        conn.execute(
            text(
                "UPDATE audit_entries SET payload = :p, prev_hash = :ph, hash = :h"
                " WHERE tenant_id = :t AND seq = :s"
            ),
            {"p": payload, "ph": prev, "h": digest, "t": TENANT, "s": seq},
        )
        prev = digest
    conn.execute(text("UPDATE audit_heads SET hash = :h WHERE tenant_id = :t"), {"h": prev, "t": TENANT})


def test_a_fully_rehashed_chain_is_caught_only_by_the_anchor_at_the_anchored_seq(
    db: Database, tmp_path: Path
) -> None:
    _append(db, 20)
    _anchor_now(db, tmp_path)
    _append(db, 10, start=20)
    with _superuser(db) as conn:
        assert '"plain"' in _row(conn, 10)["payload"]
        _rehash_from(conn, 10, 30)
    assert _verify(db).ok, "a consistent re-hash fools the chain and its head"
    result = _verify(db, audit.read_anchors(tmp_path, KEY, TENANT))
    assert (result.ok, result.first_broken_seq) == (False, 20)
    assert result.problem == "entry differs from its anchor (chain rewritten and re-hashed)"


def test_a_forged_anchor_is_refused(db: Database, tmp_path: Path) -> None:
    _append(db, 5)
    record = _anchor_now(db, tmp_path)
    path = audit.anchor_path(tmp_path, TENANT)
    forged = {**record, "seq": 3}
    path.write_text(json.dumps(forged) + "\n", encoding="utf-8")
    with pytest.raises(audit.AnchorForgery, match="HMAC"):
        audit.read_anchors(tmp_path, KEY, TENANT)
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert audit.read_anchors(tmp_path, KEY, TENANT) == [record]
    with pytest.raises(audit.AnchorForgery, match="wrong key"):
        audit.read_anchors(tmp_path, b"another key", TENANT)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(pg_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": pg_url,
        "SECRET_KEY": "cli-test-secret",
        "AUDIT_ANCHOR_DIR": str(tmp_path / "anchors"),
        "AUDIT_ANCHOR_KEY": "",
    }


def _cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner(env=env).invoke(main, ["audit", *args], catch_exceptions=False)


def _actions(db: Database, tenant: str = TENANT) -> list[str]:
    with db.session() as s:
        return list(
            s.scalars(
                select(AuditEntry.action).where(AuditEntry.tenant_id == tenant).order_by(AuditEntry.seq)
            )
        )


def test_cli_verify_exit_codes_and_the_verification_is_audited(
    db: Database, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _append(db, 10)
    first = _cli(cli_env, "verify")
    assert first.exit_code == 0, first.output
    assert "t-1: intact, 10 entries (head seq 10)" in first.output
    assert _actions(db)[-1] == "audit.verified"
    again = _cli(cli_env, "verify", "--tenant", TENANT)
    assert again.exit_code == 0 and "intact, 11 entries" in again.output, "the audit.verified entry verifies"
    assert _cli(cli_env, "verify", "--tenant", "no-such-tenant").exit_code == 2
    assert _cli(cli_env, "verify", "--anchor", cli_env["AUDIT_ANCHOR_DIR"] + "/../").exit_code == 2
    with _superuser(db) as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE tenant_id = :t AND seq = 4"), {"t": TENANT})
    broken = _cli(cli_env, "verify")
    assert broken.exit_code == 1
    assert "t-1: BROKEN at seq 4: missing entry" in broken.output
    # The failure is recorded in the platform's chain, not appended on top of the broken one.
    assert _actions(db)[-1] == "audit.verified" and len(_actions(db)) == 11
    platform = _actions(db, "platform")
    assert platform == ["audit.verified"]
    with db.session() as s:
        payload = json.loads(
            s.scalars(select(AuditEntry.payload).where(AuditEntry.tenant_id == "platform")).one()
        )
    assert payload["tenants"]["t-1"]["first_broken_seq"] == 4
    monkeypatch.setattr(audit, "PARALLEL_MIN_ENTRIES", 1)  # three processes, as for a long chain
    by_three = _cli(cli_env, "verify", "--jobs", "3")
    assert by_three.exit_code == 1 and "t-1: BROKEN at seq 4: missing entry" in by_three.output


def test_cli_anchor_then_verify_catches_a_rewound_tail(db: Database, cli_env: dict[str, str]) -> None:
    _append(db, 12)
    anchored = _cli(cli_env, "anchor")
    assert anchored.exit_code == 0, anchored.output
    assert "t-1: anchored seq 12" in anchored.output
    assert _actions(db)[-1] == "audit.anchored"
    assert _cli(cli_env, "verify").exit_code == 0
    with _superuser(db) as conn:
        conn.execute(text("DELETE FROM audit_entries WHERE tenant_id = :t AND seq > 9"), {"t": TENANT})
        conn.execute(
            text("UPDATE audit_heads SET seq = 9, hash = :h WHERE tenant_id = :t"),
            {"h": _row(conn, 9)["hash"], "t": TENANT},
        )
    result = _cli(cli_env, "verify")
    assert result.exit_code == 1
    assert "t-1: BROKEN at seq 10: chain ends before an anchored entry" in result.output
    refused = _cli(cli_env, "anchor")
    assert refused.exit_code == 1 and "t-1: NOT anchored" in refused.output


def test_cli_verify_refuses_a_forged_anchor_file(db: Database, cli_env: dict[str, str]) -> None:
    _append(db, 6)
    assert _cli(cli_env, "anchor").exit_code == 0
    path = audit.anchor_path(Path(cli_env["AUDIT_ANCHOR_DIR"]), TENANT)
    original = path.read_text(encoding="utf-8")
    record = json.loads(original)
    record["hash"] = "f" * 64
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    result = _cli(cli_env, "verify")
    assert result.exit_code == 1
    assert "t-1: BROKEN (anchors)" in result.output and "HMAC does not verify" in result.output
    path.write_text(original, encoding="utf-8")
    assert _cli(cli_env, "verify", "--tenant", TENANT).exit_code == 0
    wrong_key = _cli({**cli_env, "AUDIT_ANCHOR_KEY": "not-the-key"}, "verify", "--tenant", TENANT)
    assert wrong_key.exit_code == 1 and "wrong key" in wrong_key.output


def test_a_thousand_entry_export_verifies_offline_and_one_changed_byte_fails(
    db: Database, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _append(db, 1000)
    exported = _cli(cli_env, "export", "--tenant", TENANT)
    assert exported.exit_code == 0
    lines = exported.stdout.splitlines()
    assert len(lines) == 1000
    assert _actions(db)[-1] == "audit.exported", "the export itself is audited"
    path = tmp_path / "audit.jsonl"
    path.write_text(exported.stdout, encoding="utf-8")
    offline = {
        "SECRET_KEY": "",
        "AUDIT_ANCHOR_KEY": "",
        "DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    ok = _cli(offline, "verify", "--file", str(path))
    assert ok.exit_code == 0, ok.output
    assert "t-1: intact, 1000 entries (head seq 1000)" in ok.output
    record = json.loads(lines[499])
    assert record["seq"] == 500 and '"n":499' in record["payload"]
    record["payload"] = record["payload"].replace('"n":499', '"n":498')
    lines[499] = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    broken = _cli(offline, "verify", "--file", str(path))
    assert broken.exit_code == 1
    assert "t-1: BROKEN at seq 500: entry hash does not match its content" in broken.output


def test_offline_verify_checks_the_anchor_file_and_its_hmac(
    db: Database, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _append(db, 20)
    assert _cli(cli_env, "anchor").exit_code == 0  # anchors seq 20, then appends audit.anchored (21)
    path = tmp_path / "audit.jsonl"
    path.write_text(_cli(cli_env, "export", "--tenant", TENANT).stdout, encoding="utf-8")
    anchor_file = audit.anchor_path(Path(cli_env["AUDIT_ANCHOR_DIR"]), TENANT)
    offline = {"SECRET_KEY": "cli-test-secret", "AUDIT_ANCHOR_KEY": "", "DATABASE_URL": ""}
    ok = _cli(offline, "verify", "--file", str(path), "--anchor", str(anchor_file))
    assert ok.exit_code == 0, ok.output
    assert "1 anchor(s) matched" in ok.output
    no_key = _cli(
        {"SECRET_KEY": "", "AUDIT_ANCHOR_KEY": ""},
        "verify",
        "--file",
        str(path),
        "--anchor",
        str(anchor_file),
    )
    assert no_key.exit_code == 2
    # An export cut short before the anchored entry.
    lines = path.read_text(encoding="utf-8").splitlines()
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines[:15]) + "\n", encoding="utf-8")
    cut = _cli(offline, "verify", "--file", str(short), "--anchor", str(anchor_file))
    assert cut.exit_code == 1 and "t-1: BROKEN at seq 16" in cut.output
    # A forged anchor file.
    record = json.loads(anchor_file.read_text(encoding="utf-8"))
    anchor_file.write_text(json.dumps({**record, "seq": 19}) + "\n", encoding="utf-8")
    forged = _cli(offline, "verify", "--file", str(path), "--anchor", str(anchor_file))
    assert forged.exit_code == 1 and "HMAC does not verify" in forged.output


def test_csv_export_carries_the_same_fields_as_json_lines(db: Database, cli_env: dict[str, str]) -> None:
    import csv
    import io

    _append(db, 25)
    jsonl = [json.loads(line) for line in _cli(cli_env, "export", "--tenant", TENANT).stdout.splitlines()]
    table = list(
        csv.DictReader(io.StringIO(_cli(cli_env, "export", "--tenant", TENANT, "--format", "csv").stdout))
    )
    assert len(table) == 26, "25 entries and the first export's audit.exported entry"
    assert list(table[0]) == list(audit.EXPORT_FIELDS)
    for record, row in zip(jsonl, table, strict=False):
        assert {k: "" if v is None else str(v) for k, v in record.items()} == row
    assert _actions(db)[-2:] == ["audit.exported", "audit.exported"]


def test_since_export_is_a_verifiable_tail(db: Database, cli_env: dict[str, str], tmp_path: Path) -> None:
    _append(db, 40)
    since = (NOW + timedelta(seconds=30)).isoformat()
    out = _cli(cli_env, "export", "--tenant", TENANT, "--since", since).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in out] == list(range(31, 41))
    path = tmp_path / "tail.jsonl"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    result = _cli({"SECRET_KEY": ""}, "verify", "--file", str(path))
    assert result.exit_code == 0, result.output
    assert "intact, 10 entries from seq 31 (head seq 40)" in result.output
    assert _cli(cli_env, "export", "--since", "yesterday").exit_code == 2


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.datetimes(),  # not JSON: default=str prints it, as before
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=10), _JSON_VALUES, max_size=8))
def test_canonical_payload_is_what_json_dumps_gives(payload: dict[str, Any]) -> None:
    """The hashed payload text must never change: the encoder made once equals json.dumps' own."""
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    assert audit.canonical_payload(payload) == expected
