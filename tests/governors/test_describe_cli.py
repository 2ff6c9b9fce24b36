"""`marketplace governors --json/--markdown` and the spec's headline counts."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from webapp.cli import main

SPEC_ROWS = {
    "entitlement": 28,
    "billing": 23,
    "catalog": 21,
    "subscription": 27,
    "customer_account": 27,
    "quota_sla": 17,
    "compliance_audit": 17,
    "multi_tenant": 15,
}
SPEC_STATES = {
    "entitlement": 8,
    "billing": 11,
    "catalog": 7,
    "subscription": 9,
    "customer_account": 7,
    "quota_sla": 7,
    "compliance_audit": 7,
    "multi_tenant": 7,
}


def test_json_lists_every_governor_with_spec_counts() -> None:
    result = CliRunner().invoke(main, ["governors", "--json"])
    assert result.exit_code == 0, result.output
    governors = {g["name"]: g for g in json.loads(result.output)["governors"]}
    assert {n: len(g["states"]) for n, g in governors.items()} == SPEC_STATES
    numbered = {
        n: len([t for t in g["transitions"] if re.fullmatch(r"[A-Z]\d\d", t["id"])])
        for n, g in governors.items()
    }
    assert numbered == SPEC_ROWS and sum(numbered.values()) == 175
    cascades = {c["id"] for g in governors.values() for c in g["cascades"] if re.fullmatch(r"X\d\d", c["id"])}
    # X09 and X28 are unused in GOVERNORS.md §10; X38 is a query (the catalog's archive guard reads the
    # fact sku_active_entitlements), not an event, so it has no Cascade row.
    assert cascades == {f"X{i:02d}" for i in range(1, 43)} - {"X09", "X28", "X38"}
    states = governors["billing"]["states"]
    # A linked chargeback case (B09c) starts in payment_disputed.
    assert [s["name"] for s in states if s["initial"]] == ["awaiting_invoice", "payment_disputed"]
    row = next(t for t in governors["billing"]["transitions"] if t["id"] == "B22")
    assert row["four_eyes"]["approvers"] == ["finance", "manager"]
    assert any(t["state"] == "payment_failed" and t["after"] == "2d" for t in governors["billing"]["timers"])


def test_markdown_has_a_table_per_governor() -> None:
    result = CliRunner().invoke(main, ["governors", "--markdown"])
    assert result.exit_code == 0
    assert result.output.count("| # | From | Event | To |") == 8
    assert "## Billing (`billing`)" in result.output


def test_settings_file_overrides_what_is_printed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.toml"
    path.write_text('[billing]\nretry_1_after = "1h"\n')
    monkeypatch.setenv("MARKETPLACE_SETTINGS", str(path))
    result = CliRunner().invoke(main, ["governors", "--json"])
    billing = next(g for g in json.loads(result.output)["governors"] if g["name"] == "billing")
    assert any(t["state"] == "payment_failed" and t["after"] == "1h" for t in billing["timers"])
    path.write_text('[billing]\nretry_one_after = "1h"\n')
    bad = CliRunner().invoke(main, ["governors", "--json"])
    assert bad.exit_code == 2 and "retry_one_after" in bad.output


def test_usage_error_without_a_format() -> None:
    assert CliRunner().invoke(main, ["governors"]).exit_code == 2
