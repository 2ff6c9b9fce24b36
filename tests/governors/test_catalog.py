"""Product Catalog governor (GOVERNORS.md §3): every row, rejection, timer, four-eyes rule and cascade."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest

from governors import Decision, Instance, Rejection, apply, decide, plan
from governors.definitions.catalog import GOVERNOR
from governors.facts import Context
from governors.rules.base import GUARDS
from governors.rules.catalog import revision_hash, sku_field_errors
from governors.spec import FourEyes
from tests.governors.tables import NOW, SETTINGS, Case, Instances, Table, make_facts, where

REASON = "requested by the product owner"
FOUR_EYES = FourEyes(approvers=("admin", "manager"))

DRAFT: dict[str, Any] = {
    "sku_id": "sku-core",
    "name": "Core",
    "description": "The core plan",
    "price_cents": 10_000,
    "tier": "professional",
    "features": ["api", "reports"],
    "limits": {"api_calls": 100_000},
    "version": 3,
}
LIVE: dict[str, Any] = {**DRAFT, "version": 5, "first_published_at": NOW - timedelta(days=90)}
FEATURED: dict[str, Any] = {
    **LIVE,
    "campaign_id": "spring",
    "featured_price_cents": 8_000,
    "campaign_ends_at": NOW + timedelta(days=30),
}
PENDING_PRICE: dict[str, Any] = {
    **LIVE,
    "return_state": "published",
    "locked_version": 5,
    "pending_change": {"kind": "pricing", "price_cents": 10_800, "effective_at": NOW + timedelta(days=40)},
}
PENDING_FEATURE: dict[str, Any] = {
    **LIVE,
    "return_state": "featured",
    "pending_change": {
        "kind": "features",
        "feature": "export",
        "description": "CSV",
        "dependencies": ["api"],
    },
}
PROPAGATING: dict[str, Any] = {
    **LIVE,
    "version": 6,
    "return_state": "published",
    "applied_change": {"kind": "pricing"},
}
DEPRECATED: dict[str, Any] = {
    **LIVE,
    "deprecated_at": NOW - timedelta(days=10),
    "replacement_sku": "sku-core-2",
}

NEW_SKU = {
    k: DRAFT[k] for k in ("sku_id", "name", "description", "price_cents", "tier", "features", "limits")
}


# A catalog instance for sku-core (global: no customer).
make = Instances("catalog", "cat-1", 4, timedelta(hours=1), subject_id="sku-core")


# A timer fires at the instance's seq; staff give REASON; the actor is always u1.
facts = partial(make_facts, reason=REASON, seq=4, actor="u1")


PRICE = {"new_price_cents": 10_500, "effective_at": NOW + timedelta(days=3), "tier": "professional"}
FEATURE = {"feature_name": "export", "description": "CSV export", "dependencies": ["api"], "breaking": False}
CAMPAIGN = {"campaign_id": "spring", "featured_price_cents": 8_000, "ends_at": NOW + timedelta(days=90)}
SLA_OK = {"sku_featured_sla_ok": True}

CASES: list[Any] = [
    # P01 create_draft
    pytest.param(Case("P01", None, "create_draft", "admin", "draft", NEW_SKU), id="P01-ok"),
    pytest.param(
        Case("P01", None, "create_draft", "admin", "guard_failed", {**NEW_SKU, "sku_id": "sku core!"}),
        id="P01-bad-sku-id",
    ),
    pytest.param(
        Case("P01", None, "create_draft", "admin", "guard_failed", {**NEW_SKU, "name": "n" * 201}),
        id="P01-name-too-long",
    ),
    pytest.param(
        Case("P01", None, "create_draft", "admin", "guard_failed", {**NEW_SKU, "price_cents": 0}),
        id="P01-price-zero",
    ),
    pytest.param(
        Case("P01", None, "create_draft", "admin", "guard_failed", {**NEW_SKU, "price_cents": 1_000_000_000}),
        id="P01-price-too-high",
    ),
    pytest.param(
        Case("P01", None, "create_draft", "admin", "guard_failed", {**NEW_SKU, "tier": "gold"}),
        id="P01-unknown-tier",
    ),
    pytest.param(
        Case("P01", None, "create_draft", "admin", "guard_failed", {**NEW_SKU, "sku_id": "sku-other"}),
        id="P01-sku-id-of-another-record",
    ),
    pytest.param(
        Case(
            "P01",
            None,
            "create_draft",
            "admin",
            "invalid_input",
            {k: v for k, v in NEW_SKU.items() if k != "name"},
        ),
        id="P01-missing-name",
    ),
    pytest.param(Case("P01", None, "create_draft", "support", "role_not_allowed", NEW_SKU), id="P01-support"),
    pytest.param(
        Case("-", "draft", "create_draft", "admin", "invalid_transition", NEW_SKU, DRAFT), id="P01-exists"
    ),
    pytest.param(
        Case("-", None, "edit_draft", "admin", "not_created", {"expected_version": 1}),
        id="edit-before-create",
    ),
    # P02 edit_draft
    pytest.param(
        Case("P02", "draft", "edit_draft", "admin", "draft", {"expected_version": 3, "name": "Core+"}, DRAFT),
        id="P02-ok",
    ),
    pytest.param(
        Case(
            "P02",
            "draft",
            "edit_draft",
            "admin",
            "concurrent_update_conflict",
            {"expected_version": 2, "name": "Core+"},
            DRAFT,
        ),
        id="P02-stale-version",
    ),
    pytest.param(
        Case(
            "P02",
            "draft",
            "edit_draft",
            "admin",
            "guard_failed",
            {"expected_version": 3, "price_cents": 1_000_000_000},
            DRAFT,
        ),
        id="P02-bad-price",
    ),
    pytest.param(
        Case(
            "P02",
            "draft",
            "edit_draft",
            "admin",
            "guard_failed",
            {"expected_version": 3, "sku_id": "sku-new"},
            DRAFT,
        ),
        id="P02-sku-id-immutable",
    ),
    pytest.param(
        Case("P02", "draft", "edit_draft", "admin", "invalid_input", {"name": "x"}, DRAFT),
        id="P02-no-version",
    ),
    pytest.param(
        Case("-", "published", "edit_draft", "admin", "invalid_transition", {"expected_version": 5}, LIVE),
        id="P02-not-a-draft",
    ),
    # P03 submit_for_review
    pytest.param(
        Case("P03", "draft", "submit_for_review", "admin", "validation", {"expected_version": 3}, DRAFT),
        id="P03-ok",
    ),
    pytest.param(
        Case(
            "P03",
            "draft",
            "submit_for_review",
            "admin",
            "guard_failed",
            {"expected_version": 3},
            {k: v for k, v in DRAFT.items() if k != "description"},
        ),
        id="P03-incomplete",
    ),
    pytest.param(
        Case(
            "P03",
            "draft",
            "submit_for_review",
            "admin",
            "concurrent_update_conflict",
            {"expected_version": 1},
            DRAFT,
        ),
        id="P03-stale-version",
    ),
    pytest.param(
        Case(
            "P03", "draft", "submit_for_review", "manager", "role_not_allowed", {"expected_version": 3}, DRAFT
        ),
        id="P03-manager",
    ),
    # P04 validation_succeeded
    pytest.param(
        Case("P04", "validation", "validation_succeeded", "sys", "update_approved", {}, PENDING_PRICE),
        id="P04-price",
    ),
    pytest.param(
        Case("P04", "validation", "validation_succeeded", "sys", "update_approved", {}, PENDING_FEATURE),
        id="P04-feature",
    ),
    pytest.param(
        Case(
            "P04",
            "validation",
            "validation_succeeded",
            "sys",
            "guard_failed",
            {},
            {
                **PENDING_FEATURE,
                "pending_change": {**PENDING_FEATURE["pending_change"], "dependencies": ["ghost"]},
            },
        ),
        id="P04-unknown-dep",
    ),
    pytest.param(
        Case(
            "P04",
            "validation",
            "validation_succeeded",
            "sys",
            "guard_failed",
            {},
            {**PENDING_PRICE, "featured_price_cents": 12_000},
        ),
        id="P04-below-featured-price",
    ),
    pytest.param(
        Case("P04", "validation", "validation_succeeded", "admin", "role_not_allowed", {}, PENDING_PRICE),
        id="P04-admin",
    ),
    # P05 validation_failed / P06 validation_timeout
    pytest.param(
        Case(
            "P05",
            "validation",
            "validation_failed",
            "sys",
            "published",
            {"errors": {"price_cents": "inconsistent"}},
            PENDING_PRICE,
        ),
        id="P05-back-to-published",
    ),
    pytest.param(
        Case(
            "P05", "validation", "validation_failed", "sys", "draft", {}, {**DRAFT, "return_state": "draft"}
        ),
        id="P05-back-to-draft",
    ),
    pytest.param(
        Case(
            "P05",
            "validation",
            "validation_failed",
            "sys",
            "invalid_input",
            {"errors": "boom"},
            PENDING_PRICE,
        ),
        id="P05-errors-not-a-mapping",
    ),
    pytest.param(
        Case("P06", "validation", "validation_timeout", "timer", "featured", {}, PENDING_FEATURE),
        id="P06-timeout",
    ),
    pytest.param(
        Case("P06", "validation", "validation_timeout", "sys", "role_not_allowed", {}, PENDING_FEATURE),
        id="P06-not-a-timer",
    ),
    # P07 propagation_succeeded / P08 propagation_failed / Px1 propagation_overdue
    pytest.param(
        Case("P07", "update_approved", "propagation_succeeded", "sys", "published", {}, PROPAGATING),
        id="P07-published",
    ),
    pytest.param(
        Case(
            "P07",
            "update_approved",
            "propagation_succeeded",
            "sys",
            "featured",
            {},
            {**PROPAGATING, "return_state": "featured"},
        ),
        id="P07-featured",
    ),
    pytest.param(
        Case("P08", "update_approved", "propagation_failed", "sys", "update_approved", {}, PROPAGATING),
        id="P08-retry",
    ),
    pytest.param(
        Case("Px1", "update_approved", "propagation_overdue", "timer", "update_approved", {}, PROPAGATING),
        id="Px1-overdue",
    ),
    pytest.param(
        Case("-", "published", "propagation_succeeded", "sys", "invalid_transition", {}, LIVE),
        id="P07-wrong-state",
    ),
    # P09 update_pricing
    pytest.param(Case("P09", "published", "update_pricing", "admin", "validation", PRICE, LIVE), id="P09-ok"),
    pytest.param(
        Case("P09", "featured", "update_pricing", "admin", "validation", PRICE, FEATURED),
        id="P09-from-featured",
    ),
    pytest.param(
        Case(
            "P09",
            "published",
            "update_pricing",
            "admin",
            "guard_failed",
            {**PRICE, "new_price_cents": 11_500},
            LIVE,
        ),
        id="P09-big-increase-short-notice",
    ),
    pytest.param(
        Case(
            "P09",
            "published",
            "update_pricing",
            "admin",
            "validation",
            {**PRICE, "new_price_cents": 11_500, "effective_at": NOW + timedelta(days=30)},
            LIVE,
        ),
        id="P09-big-increase-30d-notice",
    ),
    pytest.param(
        Case(
            "P09",
            "published",
            "update_pricing",
            "admin",
            "guard_failed",
            {**PRICE, "effective_at": NOW - timedelta(hours=1)},
            LIVE,
        ),
        id="P09-effective-in-past",
    ),
    pytest.param(
        Case(
            "P09", "published", "update_pricing", "admin", "guard_failed", {**PRICE, "tier": "starter"}, LIVE
        ),
        id="P09-tier-mismatch",
    ),
    pytest.param(
        Case(
            "P09",
            "published",
            "update_pricing",
            "admin",
            "guard_failed",
            {**PRICE, "new_price_cents": 1_000_000_000},
            LIVE,
        ),
        id="P09-price-out-of-range",
    ),
    pytest.param(
        Case(
            "P09",
            "published",
            "update_pricing",
            "admin",
            "invalid_input",
            {k: v for k, v in PRICE.items() if k != "tier"},
            LIVE,
        ),
        id="P09-missing-tier",
    ),
    pytest.param(
        Case("P09", "published", "update_pricing", "finance", "role_not_allowed", PRICE, LIVE),
        id="P09-finance",
    ),
    pytest.param(
        Case("-", "deprecated", "update_pricing", "admin", "invalid_transition", PRICE, DEPRECATED),
        id="P09-deprecated",
    ),
    # P10 update_features
    pytest.param(
        Case("P10", "published", "update_features", "admin", "validation", FEATURE, LIVE), id="P10-ok"
    ),
    pytest.param(
        Case(
            "P10",
            "featured",
            "update_features",
            "admin",
            "validation",
            {**FEATURE, "breaking": True, "effective_at": NOW + timedelta(days=31)},
            FEATURED,
        ),
        id="P10-breaking-with-notice",
    ),
    pytest.param(
        Case(
            "P10",
            "published",
            "update_features",
            "admin",
            "guard_failed",
            {**FEATURE, "breaking": True, "effective_at": NOW + timedelta(days=10)},
            LIVE,
        ),
        id="P10-breaking-short-notice",
    ),
    pytest.param(
        Case(
            "P10",
            "published",
            "update_features",
            "admin",
            "guard_failed",
            {**FEATURE, "dependencies": ["export"]},
            LIVE,
        ),
        id="P10-self-dependency",
    ),
    pytest.param(
        Case(
            "P10",
            "published",
            "update_features",
            "admin",
            "guard_failed",
            {**FEATURE, "dependencies": ["ghost"]},
            LIVE,
        ),
        id="P10-unknown-dependency",
    ),
    pytest.param(
        Case(
            "P10",
            "published",
            "update_features",
            "admin",
            "validation",
            {**FEATURE, "dependencies": ["sso"]},
            LIVE,
            {"catalog_feature_ids": ["sso"]},
        ),
        id="P10-dependency-in-registry",
    ),
    pytest.param(
        Case(
            "P10",
            "published",
            "update_features",
            "admin",
            "guard_failed",
            {**FEATURE, "feature_name": "f" * 101},
            LIVE,
        ),
        id="P10-name-too-long",
    ),
    pytest.param(
        Case(
            "P10",
            "published",
            "update_features",
            "admin",
            "invalid_input",
            {k: v for k, v in FEATURE.items() if k != "breaking"},
            LIVE,
        ),
        id="P10-breaking-missing",
    ),
    # P11 move_to_featured / P12 demote / P13 end_promotion / P14 kpi_check
    pytest.param(
        Case("P11", "published", "move_to_featured", "manager", "featured", CAMPAIGN, LIVE, SLA_OK),
        id="P11-ok",
    ),
    pytest.param(
        Case("P11", "published", "move_to_featured", "admin", "guard_failed", CAMPAIGN, LIVE),
        id="P11-sla-not-confirmed",
    ),
    pytest.param(
        Case(
            "P11",
            "published",
            "move_to_featured",
            "admin",
            "featured",
            {**CAMPAIGN, "sla_confirmed": True},
            LIVE,
        ),
        id="P11-sla-confirmed-by-the-admin",
    ),
    pytest.param(
        Case(
            "P11",
            "published",
            "move_to_featured",
            "admin",
            "guard_failed",
            {**CAMPAIGN, "sla_confirmed": True},
            LIVE,
            {"sku_featured_sla_ok": False},
        ),
        id="P11-monitoring-says-no-whatever-was-typed",
    ),
    pytest.param(
        Case(
            "P11",
            "published",
            "move_to_featured",
            "manager",
            "guard_failed",
            {**CAMPAIGN, "featured_price_cents": 10_000},
            LIVE,
            SLA_OK,
        ),
        id="P11-price-not-lower",
    ),
    pytest.param(
        Case(
            "P11",
            "published",
            "move_to_featured",
            "manager",
            "guard_failed",
            {**CAMPAIGN, "ends_at": NOW - timedelta(days=1)},
            LIVE,
            SLA_OK,
        ),
        id="P11-ends-in-past",
    ),
    pytest.param(
        Case("P11", "published", "move_to_featured", "support", "role_not_allowed", CAMPAIGN, LIVE, SLA_OK),
        id="P11-support",
    ),
    pytest.param(
        Case(
            "-", "featured", "move_to_featured", "manager", "invalid_transition", CAMPAIGN, FEATURED, SLA_OK
        ),
        id="P11-already-featured",
    ),
    pytest.param(
        Case("P12", "featured", "demote_from_featured", "admin", "published", {}, FEATURED), id="P12-ok"
    ),
    pytest.param(
        Case("P13", "featured", "end_promotion", "timer", "published", {}, FEATURED), id="P13-timer"
    ),
    pytest.param(
        Case("P13", "featured", "end_promotion", "manager", "role_not_allowed", {}, FEATURED), id="P13-manual"
    ),
    pytest.param(
        Case(
            "P14", "featured", "kpi_check", "timer", "published", {}, FEATURED, {"sku_kpi_drop_percent": 25.0}
        ),
        id="P14-unhealthy",
    ),
    pytest.param(
        Case(
            "P14b", "featured", "kpi_check", "timer", "featured", {}, FEATURED, {"sku_kpi_drop_percent": 20.0}
        ),
        id="P14b-healthy",
    ),
    # P15 compliance_check / P16 feature_request
    pytest.param(
        Case(
            "P15",
            "published",
            "compliance_check",
            "timer",
            "published",
            {},
            LIVE,
            {"sku_compliance_issues": ["missing tax category"]},
        ),
        id="P15-fails",
    ),
    pytest.param(
        Case("P16", "published", "feature_request", "support", "published", {"request": "SAML login"}, LIVE),
        id="P16-ok",
    ),
    pytest.param(
        Case("P16", "published", "feature_request", "support", "invalid_input", {}, LIVE), id="P16-no-request"
    ),
    pytest.param(
        Case(
            "P16",
            "published",
            "feature_request",
            "support",
            "invalid_input",
            {"request": "SAML login", "reason": "short"},
            LIVE,
        ),
        id="P16-short-reason",
    ),
    # P17 deprecate .. P21 sunset_timeout
    pytest.param(
        Case(
            "P17",
            "published",
            "deprecate",
            "admin",
            "deprecated",
            {"replacement_sku": "sku-core-2", "sunset_note": "moving to v2"},
            LIVE,
            {"replacement_sku_state": "published"},
        ),
        id="P17-ok",
    ),
    pytest.param(
        Case("P17", "featured", "deprecate", "admin", "deprecated", {"sunset_note": "end of life"}, FEATURED),
        id="P17-from-featured-no-replacement",
    ),
    pytest.param(
        Case(
            "P17",
            "published",
            "deprecate",
            "admin",
            "guard_failed",
            {"replacement_sku": "sku-core-2", "sunset_note": "moving to v2"},
            LIVE,
            {"replacement_sku_state": "deprecated"},
        ),
        id="P17-replacement-not-on-sale",
    ),
    pytest.param(
        Case(
            "P17",
            "published",
            "deprecate",
            "admin",
            "guard_failed",
            {"replacement_sku": "sku-core", "sunset_note": "moving to v2"},
            LIVE,
            {"replacement_sku_state": "published"},
        ),
        id="P17-replaces-itself",
    ),
    pytest.param(
        Case("P18", "deprecated", "continue_support", "support", "deprecated", {}, DEPRECATED), id="P18-ok"
    ),
    pytest.param(
        Case(
            "P19",
            "deprecated",
            "resurrect",
            "admin",
            "published",
            {},
            DEPRECATED,
            {"replacement_sku_state": "deprecated"},
        ),
        id="P19-ok",
    ),
    pytest.param(
        Case(
            "P19",
            "deprecated",
            "resurrect",
            "admin",
            "guard_failed",
            {},
            DEPRECATED,
            {"replacement_sku_state": "featured"},
        ),
        id="P19-replacement-active",
    ),
    pytest.param(
        Case(
            "P20",
            "deprecated",
            "force_archive",
            "admin",
            "archived",
            {"confirm_no_holders": True},
            DEPRECATED,
            {"sku_active_entitlements": 0},
        ),
        id="P20-ok",
    ),
    pytest.param(
        Case(
            "P20",
            "deprecated",
            "force_archive",
            "admin",
            "guard_failed",
            {"confirm_no_holders": True},
            DEPRECATED,
            {"sku_active_entitlements": 2},
        ),
        id="P20-holders-remain",
    ),
    pytest.param(
        Case(
            "P20",
            "deprecated",
            "force_archive",
            "admin",
            "guard_failed",
            {"confirm_no_holders": True},
            DEPRECATED,
        ),
        id="P20-count-unknown",
    ),
    pytest.param(
        Case(
            "P20",
            "deprecated",
            "force_archive",
            "admin",
            "guard_failed",
            {"confirm_no_holders": False},
            DEPRECATED,
            {"sku_active_entitlements": 0},
        ),
        id="P20-not-confirmed",
    ),
    pytest.param(
        Case(
            "P20",
            "deprecated",
            "force_archive",
            "admin",
            "invalid_input",
            {},
            DEPRECATED,
            {"sku_active_entitlements": 0},
        ),
        id="P20-confirmation-missing",
    ),
    pytest.param(
        Case(
            "P21",
            "deprecated",
            "sunset_timeout",
            "timer",
            "archived",
            {},
            DEPRECATED,
            {"sku_active_entitlements": 0},
        ),
        id="P21-archives",
    ),
    pytest.param(
        Case(
            "P21b",
            "deprecated",
            "sunset_timeout",
            "timer",
            "deprecated",
            {},
            DEPRECATED,
            {"sku_active_entitlements": 3},
        ),
        id="P21b-blocked",
    ),
    # Generic rejections
    pytest.param(
        Case("-", "archived", "resurrect", "admin", "terminal_state", {}, DEPRECATED), id="archived-is-final"
    ),
    pytest.param(Case("-", "published", "teleport", "admin", "unknown_event", {}, LIVE), id="unknown-event"),
]


TABLE = Table(
    GOVERNOR,
    CASES,
    lambda case: make(case.state, case.data),
    facts=facts,
    rejection_row="exact",
    spec_rows={f"P{n:02d}" for n in range(1, 22)},
)
test_catalog_table, test_every_row_is_in_the_table, test_every_row_id_is_from_the_spec_or_marked_added = (
    TABLE.tests()
)


def _decide(
    state: str | None,
    data: Mapping[str, Any],
    event: str,
    role: str,
    payload: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    **kw: Any,
) -> Decision:
    out = decide(GOVERNOR, make(state, data), event, facts(role, payload, extra=extra, **kw))
    assert isinstance(out, Decision), out
    return out


# ------------------------------------------------------------------ data changes


def test_create_stores_version_1() -> None:
    d = _decide(None, {}, "create_draft", "admin", NEW_SKU)
    assert d.changes["version"] == 1
    assert d.changes["price_cents"] == 10_000
    assert d.changes["features"] == ["api", "reports"]
    assert d.state_seq == 1


def test_schema_failure_names_every_field() -> None:
    out = decide(
        GOVERNOR,
        make(None),
        "create_draft",
        facts("admin", {**NEW_SKU, "sku_id": "bad id", "price_cents": 0, "tier": "gold"}),
    )
    assert isinstance(out, Rejection)
    assert "sku_id may contain only letters, digits and hyphens" in out.message
    assert "price_cents must be between 1 and 999,999,999 cents" in out.message
    assert "tier must be one of: starter, professional, enterprise, custom" in out.message


def test_edit_bumps_version_and_conflict_reports_both_versions() -> None:
    d = _decide("draft", DRAFT, "edit_draft", "admin", {"expected_version": 3, "price_cents": 12_000})
    assert d.self_transition
    assert d.changes == {"price_cents": 12_000, "version": 4}
    out = decide(
        GOVERNOR, make("draft", DRAFT), "edit_draft", facts("admin", {"expected_version": 2, "name": "x"})
    )
    assert isinstance(out, Rejection)
    assert out.code == "concurrent_update_conflict"
    assert out.message == "expected version 2 but the SKU is at version 3; reload and retry"


def test_submit_locks_version_and_returns_to_draft() -> None:
    d = _decide("draft", DRAFT, "submit_for_review", "admin", {"expected_version": 3})
    assert d.changes["return_state"] == "draft"
    assert d.changes["locked_version"] == 3
    assert [e.name for e in d.effects] == ["catalog_run_validation"]


def test_validation_success_applies_price_and_hashes_revision() -> None:
    d = _decide("validation", PENDING_PRICE, "validation_succeeded", "sys")
    assert d.changes["price_cents"] == 10_800
    assert d.changes["previous_price_cents"] == 10_000
    assert d.changes["version"] == 6
    assert "pending_change" in d.changes
    assert d.changes["pending_change"] is None
    assert d.changes["price_notice"] == "alert", "an 8 % increase is above 5 %: email + in-app alert"
    assert d.changes["revision_hash"] == revision_hash("sku-core", "Core", 10_800, ["api", "reports"], 6)
    assert d.changes["return_state"] == "published"
    assert d.effects[0].args == {"sku_id": "sku-core", "version": 6}


def test_first_publication_returns_to_published_not_draft() -> None:
    d = _decide("validation", {**DRAFT, "return_state": "draft"}, "validation_succeeded", "sys")
    assert d.changes["return_state"] == "published"
    assert d.changes["applied_change"] == {"kind": "initial"}
    live = apply(make("validation", {**DRAFT, "return_state": "draft"}), d)
    out = _decide("update_approved", live.data, "propagation_succeeded", "sys")
    assert out.to_state == "published"
    assert out.changes["first_published_at"] == NOW


def test_feature_change_adds_feature() -> None:
    d = _decide("validation", PENDING_FEATURE, "validation_succeeded", "sys")
    assert d.changes["features"] == ["api", "reports", "export"]
    assert d.changes["feature_specs"]["export"]["dependencies"] == ["api"]
    assert d.changes["return_state"] == "featured"


def test_validation_failure_discards_change_and_stores_errors() -> None:
    d = _decide("validation", PENDING_PRICE, "validation_failed", "sys", {"errors": {"price_cents": "bad"}})
    assert d.changes["pending_change"] is None
    assert d.changes["validation_errors"] == {"price_cents": "bad"}
    t = _decide("validation", PENDING_PRICE, "validation_timeout", "timer")
    assert t.changes["validation_errors"] == {"validation": "timeout"}


def test_propagation_retry_backs_off_exponentially() -> None:
    delays = []
    data: dict[str, Any] = dict(PROPAGATING)
    for _ in range(5):
        d = _decide("update_approved", data, "propagation_failed", "sys")
        data.update(d.changes)
        delays.append(d.changes["propagation_retry_at"] - NOW)
    assert delays == [timedelta(seconds=s) for s in (1, 2, 4, 8, 16)]
    data["propagation_attempts"] = 20
    capped = _decide("update_approved", data, "propagation_failed", "sys")
    assert capped.changes["propagation_retry_at"] - NOW == timedelta(minutes=5)


def test_price_change_stages_pending_change_and_remembers_return_state() -> None:
    d = _decide("featured", FEATURED, "update_pricing", "admin", PRICE)
    assert d.changes["pending_change"] == {
        "kind": "pricing",
        "price_cents": 10_500,
        "effective_at": NOW + timedelta(days=3),
    }
    assert d.changes["return_state"] == "featured"
    assert d.changes["locked_version"] == 5


def test_price_increase_message_names_the_notice_period() -> None:
    out = decide(
        GOVERNOR,
        make("published", LIVE),
        "update_pricing",
        facts("admin", {**PRICE, "new_price_cents": 11_001}),
    )
    assert isinstance(out, Rejection)
    assert out.message == "an increase of more than 10 % must take effect at least 30 days from now"


def test_decrease_needs_no_notice() -> None:
    d = _decide("published", LIVE, "update_pricing", "admin", {**PRICE, "new_price_cents": 5_000})
    assert d.to_state == "validation"


def test_compliance_result_and_deprecation_data() -> None:
    ok = _decide(
        "published",
        {**LIVE, "compliance_issues": ["old"]},
        "compliance_check",
        "timer",
        {},
        {"sku_compliance_issues": []},
    )
    assert ok.changes["compliance_issues"] is None
    assert not ok.attention
    dep = _decide("featured", FEATURED, "deprecate", "admin", {"sunset_note": "end of life"})
    assert dep.changes["deprecated_at"] == NOW
    assert dep.changes["campaign_id"] is None
    assert dep.changes["last_campaign_id"] == "spring"


# ------------------------------------------------------------------ timers


def _ops(d: Decision) -> list[tuple[str, str, datetime | None, timedelta | None]]:
    return [(op.op, op.timer.name, op.timer.due_at, op.timer.remaining) for op in d.timer_ops]


def test_entering_validation_arms_the_5_minute_timeout() -> None:
    d = _decide("draft", DRAFT, "submit_for_review", "admin", {"expected_version": 3})
    assert _ops(d) == [("arm", "validation_timeout", NOW + timedelta(minutes=5), None)]
    assert d.timer_ops[0].timer.state_seq == 5


def test_update_approved_arms_the_10_minute_attention_timer() -> None:
    d = _decide("validation", PENDING_PRICE, "validation_succeeded", "sys")
    assert ("arm", "propagation_overdue", NOW + timedelta(minutes=10), None) in _ops(d)


def test_published_arms_weekly_compliance_and_featured_arms_campaign_and_kpi() -> None:
    pub = _decide("update_approved", PROPAGATING, "propagation_succeeded", "sys")
    assert ("arm", "compliance_check", NOW + timedelta(days=7), None) in _ops(pub)
    feat = _decide("published", LIVE, "move_to_featured", "manager", CAMPAIGN, SLA_OK)
    assert ("arm", "end_promotion", NOW + timedelta(days=90), None) in _ops(feat)
    assert ("arm", "kpi_check", NOW + timedelta(days=30), None) in _ops(feat)


def test_recurring_checks_rearm() -> None:
    kpi = _decide("featured", FEATURED, "kpi_check", "timer", {}, {"sku_kpi_drop_percent": 3.0})
    assert _ops(kpi) == [("arm", "kpi_check", NOW + timedelta(days=30), None)]
    comp = _decide("published", LIVE, "compliance_check", "timer", {}, {"sku_compliance_issues": []})
    assert _ops(comp) == [("arm", "compliance_check", NOW + timedelta(days=7), None)]


def test_deprecated_arms_sunset_and_a_paused_recheck_that_p21b_starts() -> None:
    dep = _decide("published", LIVE, "deprecate", "admin", {"sunset_note": "end of life"})
    assert ("arm", "sunset", NOW + timedelta(days=183), None) in _ops(dep)
    assert ("arm", "archive_recheck", None, timedelta(days=7)) in _ops(dep), "paused until archive is blocked"
    inst = apply(make("published", LIVE), dep)
    later = NOW + timedelta(days=183)
    blocked = decide(
        GOVERNOR,
        inst,
        "sunset_timeout",
        facts("timer", extra={"sku_active_entitlements": 4}, now=later, seq=inst.state_seq),
    )
    assert isinstance(blocked, Decision)
    assert blocked.row_id == "P21b"
    assert blocked.attention
    assert blocked.attention_reason == "auto-archive is blocked: customers still hold this SKU"
    assert _ops(blocked) == [("arm", "archive_recheck", later + timedelta(days=7), None)]
    inst = apply(inst, blocked)
    week = later + timedelta(days=7)
    done = decide(
        GOVERNOR,
        inst,
        "sunset_timeout",
        facts("timer", extra={"sku_active_entitlements": 0}, now=week, seq=inst.state_seq),
    )
    assert isinstance(done, Decision)
    assert done.row_id == "P21"
    assert done.to_state == "archived"
    assert {op.op for op in done.timer_ops} == {"cancel"}


def test_leaving_featured_cancels_its_timers() -> None:
    inst = apply(
        make("published", LIVE), _decide("published", LIVE, "move_to_featured", "manager", CAMPAIGN, SLA_OK)
    )
    d = decide(GOVERNOR, inst, "demote_from_featured", facts("manager"))
    assert isinstance(d, Decision)
    assert sorted((op.op, op.timer.name) for op in d.timer_ops) == [
        ("arm", "compliance_check"),
        ("cancel", "end_promotion"),
        ("cancel", "kpi_check"),
    ]


def test_stale_timer_is_ignored() -> None:
    out = decide(
        GOVERNOR, make("validation", PENDING_PRICE, seq=9), "validation_timeout", facts("timer", seq=8)
    )
    assert isinstance(out, Rejection)
    assert out.code == "stale_timer"


# ------------------------------------------------------------------ attention


def test_attention_rules() -> None:
    overdue = _decide("update_approved", PROPAGATING, "propagation_overdue", "timer")
    assert overdue.attention
    assert overdue.changes == {"propagation_stalled": True}
    fresh = _decide("validation", PENDING_PRICE, "validation_succeeded", "sys")
    assert not fresh.attention
    failing = _decide("published", LIVE, "compliance_check", "timer", {}, {"sku_compliance_issues": ["x"]})
    assert failing.attention
    assert failing.attention_reason == "the weekly compliance check failed"
    guard = GUARDS["catalog_validation_overrun"].fn
    inst = make("validation", {"validation_started_at": NOW - timedelta(minutes=6)})
    ctx = Context(GOVERNOR, inst, "x", facts("sys"), SETTINGS, inst.data)
    assert guard(ctx)
    inst = make("validation", {"validation_started_at": NOW - timedelta(minutes=4)})
    assert not guard(Context(GOVERNOR, inst, "x", facts("sys"), SETTINGS, inst.data))


# ------------------------------------------------------------------ four-eyes


@pytest.mark.parametrize(
    ("state", "data", "event", "payload", "extra", "needs"),
    [
        (
            "draft",
            DRAFT,
            "submit_for_review",
            {"expected_version": 3},
            {},
            FourEyes(("admin", "manager"), "catalog_first_publication"),
        ),
        (
            "draft",
            {**DRAFT, "first_published_at": NOW},
            "submit_for_review",
            {"expected_version": 3},
            {},
            None,
        ),
        ("published", LIVE, "update_pricing", PRICE, {}, FOUR_EYES),
        ("published", LIVE, "update_features", FEATURE, {}, None),
        (
            "published",
            LIVE,
            "update_features",
            {**FEATURE, "breaking": True, "effective_at": NOW + timedelta(days=30)},
            {},
            FourEyes(("admin", "manager"), "catalog_breaking_change"),
        ),
        ("published", LIVE, "deprecate", {"sunset_note": "end of life"}, {}, FOUR_EYES),
        ("deprecated", DEPRECATED, "resurrect", {}, {}, FOUR_EYES),
        (
            "deprecated",
            DEPRECATED,
            "force_archive",
            {"confirm_no_holders": True},
            {"sku_active_entitlements": 0},
            FOUR_EYES,
        ),
        ("published", LIVE, "move_to_featured", CAMPAIGN, SLA_OK, None),
    ],
)
def test_four_eyes(
    state: str,
    data: Mapping[str, Any],
    event: str,
    payload: Mapping[str, Any],
    extra: Mapping[str, Any],
    needs: FourEyes | None,
) -> None:
    d = _decide(state, data, event, "admin", payload, extra)
    assert d.needs_approval == needs
    approved = _decide(state, data, event, "admin", payload, extra, approved_by="u2")
    assert approved.needs_approval is None


# ------------------------------------------------------------------ cascades


def test_deprecation_emits_x36_to_entitlements_and_subscriptions() -> None:
    d = _decide(
        "published",
        LIVE,
        "deprecate",
        "admin",
        {"replacement_sku": "sku-core-2", "sunset_note": "v2"},
        {"replacement_sku_state": "published"},
    )
    body = {"sku_id": "sku-core", "withdrawal": "deprecated", "replacement_sku": "sku-core-2"}
    assert [(c.id, c.target, c.event, dict(c.payload), c.where) for c in d.cascades] == [
        ("X36", "entitlement", "sku_withdrawn", body, "catalog_entitlement_holds_sku"),
        ("X36", "subscription", "sku_withdrawn", body, "catalog_subscription_holds_sku"),
    ]
    assert not any(c.must for c in d.cascades)


def test_archive_emits_x36_but_a_blocked_sunset_does_not() -> None:
    d = _decide(
        "deprecated",
        DEPRECATED,
        "force_archive",
        "admin",
        {"confirm_no_holders": True},
        {"sku_active_entitlements": 0},
    )
    assert {(c.target, c.payload["withdrawal"]) for c in d.cascades} == {
        ("entitlement", "archived"),
        ("subscription", "archived"),
    }
    auto = _decide("deprecated", DEPRECATED, "sunset_timeout", "timer", {}, {"sku_active_entitlements": 0})
    assert len(auto.cascades) == 2
    blocked = _decide("deprecated", DEPRECATED, "sunset_timeout", "timer", {}, {"sku_active_entitlements": 1})
    assert blocked.cascades == ()


def test_price_propagation_emits_x37_and_feature_propagation_does_not() -> None:
    data = {
        **PROPAGATING,
        "price_cents": 10_800,
        "previous_price_cents": 10_000,
        "price_effective_at": NOW + timedelta(days=40),
        "price_notice": "alert",
    }
    d = _decide("update_approved", data, "propagation_succeeded", "sys")
    assert [(c.id, c.target, c.event) for c in d.cascades] == [("X37", "subscription", "price_changed")]
    assert dict(d.cascades[0].payload) == {
        "sku_id": "sku-core",
        "price_cents": 10_800,
        "previous_price_cents": 10_000,
        "effective_at": NOW + timedelta(days=40),
        "notice": "alert",
    }
    feat = _decide(
        "update_approved",
        {**PROPAGATING, "applied_change": {"kind": "features"}},
        "propagation_succeeded",
        "sys",
    )
    assert feat.cascades == ()


@pytest.mark.parametrize(
    ("name", "target", "holds"),
    [
        (
            "catalog_entitlement_holds_sku",
            Instance("entitlement", "e1", "active", data={"sku_id": "sku-core"}),
            True,
        ),
        (
            "catalog_entitlement_holds_sku",
            Instance("entitlement", "e2", "active", data={"sku_id": "sku-x"}),
            False,
        ),
        (
            "catalog_entitlement_holds_sku",
            Instance("entitlement", "e3", "archived", data={"sku_id": "sku-core"}),
            False,
        ),
        (
            "catalog_subscription_holds_sku",
            Instance("subscription", "s1", "active", data={"skus": ["sku-core"]}),
            True,
        ),
        (
            "catalog_subscription_holds_sku",
            Instance("subscription", "s2", "active", data={"skus": ["sku-x"]}),
            False,
        ),
        (
            "catalog_subscription_holds_sku",
            Instance("subscription", "s3", "archived", data={"skus": ["sku-core"]}),
            False,
        ),
    ],
)
def test_cascade_targets_only_holders(name: str, target: Instance, holds: bool) -> None:
    assert where(name, target, event="sku_withdrawn", source=LIVE) is holds


def test_plan_sends_x36_only_to_the_skus_entitlements() -> None:
    sku = make("published", LIVE)
    mine = Instance(
        "entitlement", "e1", "active", 2, customer_id="c1", subject_id="sku-core", data={"sku_id": "sku-core"}
    )
    other = Instance(
        "entitlement", "e2", "active", 2, customer_id="c1", subject_id="sku-x", data={"sku_id": "sku-x"}
    )
    p = plan(
        {"cat-1": sku, "e1": mine, "e2": other},
        "cat-1",
        "deprecate",
        facts("admin", {"sunset_note": "end of life"}, approved_by="u2"),
    )
    assert isinstance(p.root, Decision)
    assert p.root.to_state == "deprecated"
    assert [(s.instance_id, s.event, s.cascade) for s in p.steps[1:]] == [("e1", "sku_withdrawn", "X36")]


# ------------------------------------------------------------------ the schema function and the hash


def test_sku_field_errors_full_and_partial() -> None:
    assert sku_field_errors(NEW_SKU, SETTINGS) == {}
    assert sku_field_errors({}, SETTINGS) == dict.fromkeys(
        ("sku_id", "name", "description", "price_cents", "tier"), "is required"
    )
    errors = sku_field_errors(
        {"name": "", "description": "d" * 5001, "features": ["a", "a"]}, SETTINGS, partial=True
    )
    assert errors == {
        "name": "is required",
        "description": "must be at most 5000 characters",
        "features": "lists a feature twice",
    }
    assert sku_field_errors({"price_cents": 999_999_999, "name": "n" * 200}, SETTINGS, partial=True) == {}
    assert sku_field_errors({"price_cents": True}, SETTINGS, partial=True) == {
        "price_cents": "must be a whole number of cents"
    }
    tighter = SETTINGS.override({"catalog.price_max_cents": 100})
    assert "price_cents" in sku_field_errors({"price_cents": 101}, tighter, partial=True)


def test_revision_hash_changes_with_each_input() -> None:
    base = revision_hash("sku-core", "Core", 100, ["api"], 1)
    assert len(base) == 64
    assert base == revision_hash("sku-core", "Core", 100, ["api"], 1)
    assert (
        len(
            {
                base,
                revision_hash("sku-core", "Core", 101, ["api"], 1),
                revision_hash("sku-core", "Core", 100, ["api"], 2),
                revision_hash("sku-core", "Core", 100, ["api", "x"], 1),
            }
        )
        == 4
    )


def test_currency_and_limits_shapes() -> None:
    assert sku_field_errors({"currency": "EUR", "limits": {"api_calls": 0}}, SETTINGS, partial=True) == {}
    errors = sku_field_errors({"currency": "usd", "limits": {"api_calls": -1}}, SETTINGS, partial=True)
    assert errors == {
        "currency": "must be an ISO-4217 code of 3 upper-case letters, e.g. USD",
        "limits": "limit api_calls must be a whole number ≥ 0",
    }
    assert sku_field_errors({"limits": {"api_calls": "lots"}}, SETTINGS, partial=True) == {
        "limits": "limit api_calls must be a whole number ≥ 0"
    }
    assert sku_field_errors({"limits": {"": 1}}, SETTINGS, partial=True) == {
        "limits": "each limit name must be 1–100 characters"
    }


def test_create_defaults_the_currency_and_edit_may_change_it() -> None:
    created = decide(GOVERNOR, make(None), "create_draft", facts("admin", NEW_SKU))
    assert isinstance(created, Decision)
    assert created.changes["currency"] == "USD"
    edited = decide(
        GOVERNOR,
        make("draft", {**DRAFT, "currency": "USD"}),
        "edit_draft",
        facts("admin", {"expected_version": 3, "currency": "EUR"}),
    )
    assert isinstance(edited, Decision)
    assert edited.changes["currency"] == "EUR"
    bad = decide(GOVERNOR, make(None), "create_draft", facts("admin", {**NEW_SKU, "currency": "euro"}))
    assert isinstance(bad, Rejection) and "currency" in bad.message


def test_deprecation_judges_the_replacement_named_in_the_payload() -> None:
    """The service's SKU state map names the payload's replacement (not the one stored in data)."""
    body = {"replacement_sku": "sku-new", "sunset_note": "moving to the new plan"}
    live = make("published", {**LIVE, "replacement_sku": "sku-old"})
    ok = decide(
        GOVERNOR, live, "deprecate", facts("admin", body, extra={"sku_states": {"sku-new": "published"}})
    )
    assert isinstance(ok, Decision) and ok.needs_approval is not None
    draft = decide(
        GOVERNOR, live, "deprecate", facts("admin", body, extra={"sku_states": {"sku-new": "draft"}})
    )
    assert isinstance(draft, Rejection)
    assert draft.message.endswith("replacement sku-new is draft; it must be published or featured")
