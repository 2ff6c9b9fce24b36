"""Guards, updaters and effects of the Product Catalog governor (GOVERNORS.md §3).

The schema rules of §3 live in one pure function, ``sku_field_errors``, which returns an error per
field so the console can show them next to the form fields; the guards reuse it. Every bound,
notice period and threshold is read from the ``catalog.*`` settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from governors.facts import Context, GuardFailed, aware_datetime
from governors.rules.base import declare_effects, guard, updater

declare_effects(
    catalog_run_validation="Run the schema (SHACL), reference and pricing checks on the locked SKU version",
    catalog_propagate="Push the revision to cache, CDN, flags and marketplace, keyed (sku_id, version)",
    catalog_announce="Emit product_published / pricing_updated / feature_flags_enabled for the live revision",
    catalog_holder_notices="Send holders the §3.3 notices of the applied change (price rise, breaking)",
    catalog_badge="Turn the featured badge and featured price on or off",
    catalog_stop_sales="Stop new purchases of the SKU and redirect buyers to the replacement, if any",
    catalog_resume_sales="Re-enable purchases of the SKU and republish it",
    catalog_freeze="Make the SKU record read-only, preserving its history",
)

SKU_ID_PATTERN = re.compile(r"[A-Za-z0-9-]+")
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")
REQUIRED_FIELDS = ("sku_id", "name", "description", "price_cents", "tier")
ON_SALE = frozenset({"published", "featured"})
_EDITABLE = ("name", "description", "price_cents", "currency", "tier", "features", "limits")


# --------------------------------------------------------------------------- pure helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_error(value: Any, maximum: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "is required"
    if len(value) > maximum:
        return f"must be at most {maximum} characters"
    return None


def price_error(value: Any, settings: Mapping[str, Any]) -> str | None:
    """The schema error of a price in cents, or None when it is valid."""
    low, high = int(settings["catalog.price_min_cents"]), int(settings["catalog.price_max_cents"])
    if not _is_int(value):
        return "must be a whole number of cents"
    if not low <= value <= high:
        return f"must be between {low:,} and {high:,} cents"
    return None


def sku_field_errors(
    fields: Mapping[str, Any], settings: Mapping[str, Any], *, partial: bool = False
) -> dict[str, str]:
    """Check SKU fields against the §3 schema rules; return {field: message} (empty when valid).

    With ``partial`` only the fields present are checked (an edit); otherwise the required fields
    sku_id, name, description, price_cents and tier must all be there.
    """
    errors: dict[str, str] = {}
    if not partial:
        for name in REQUIRED_FIELDS:
            if fields.get(name) in (None, ""):
                errors[name] = "is required"
    checks: dict[str, Callable[[Any], str | None]] = {
        "sku_id": _sku_id_error,
        "name": lambda v: _text_error(v, int(settings["catalog.name_max_length"])),
        "description": lambda v: _text_error(v, int(settings["catalog.description_max_length"])),
        "price_cents": lambda v: price_error(v, settings),
        "currency": _currency_error,
        "tier": lambda v: _tier_error(v, settings),
        "features": lambda v: _features_error(v, settings),
        "limits": lambda v: _limits_error(v, settings),
    }
    for name, check in checks.items():
        if name in errors or name not in fields or fields[name] is None:
            continue
        message = check(fields[name])
        if message:
            errors[name] = message
    return errors


def _sku_id_error(value: Any) -> str | None:
    if isinstance(value, str) and SKU_ID_PATTERN.fullmatch(value):
        return None
    return "may contain only letters, digits and hyphens"


def _currency_error(value: Any) -> str | None:
    # §0.5: an ISO-4217 code of three upper-case letters.
    if isinstance(value, str) and CURRENCY_PATTERN.fullmatch(value):
        return None
    return "must be an ISO-4217 code of 3 upper-case letters, e.g. USD"


def _limits_error(value: Any, settings: Mapping[str, Any]) -> str | None:
    if not isinstance(value, Mapping):
        return "must be an object of limit name to value"
    maximum = int(settings["catalog.feature_name_max_length"])
    for name, limit in value.items():
        if not isinstance(name, str) or not name.strip() or len(name) > maximum:
            return f"each limit name must be 1–{maximum} characters"
        if not _is_int(limit) or limit < 0:
            return f"limit {name} must be a whole number ≥ 0"
    return None


def _tier_error(value: Any, settings: Mapping[str, Any]) -> str | None:
    tiers = tuple(settings["catalog.tiers"])
    return None if value in tiers else "must be one of: " + ", ".join(tiers)


def _features_error(value: Any, settings: Mapping[str, Any]) -> str | None:
    if not isinstance(value, list | tuple):
        return "must be a list of feature names"
    maximum = int(settings["catalog.feature_name_max_length"])
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > maximum:
            return f"each feature name must be 1–{maximum} characters"
    if len(set(value)) != len(value):
        return "lists a feature twice"
    return None


def _raise_field_errors(errors: Mapping[str, str]) -> bool:
    if errors:
        raise GuardFailed("; ".join(f"{name} {message}" for name, message in errors.items()))
    return True


def revision_hash(sku_id: str, name: str, price_cents: int, features: Sequence[str], version: int) -> str:
    """SHA-256 of (sku_id, name, price_cents, features, version) in canonical JSON (§3.4)."""
    canonical = json.dumps(
        [sku_id, name, price_cents, list(features), version], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _merged(data: Mapping[str, Any]) -> dict[str, Any]:
    """The SKU fields once the staged ``pending_change`` is applied (P04), version not yet bumped."""
    out: dict[str, Any] = {
        k: data.get(k) for k in (*REQUIRED_FIELDS, "currency", "features", "limits", "feature_specs")
    }
    out["features"] = list(data.get("features") or [])
    change = data.get("pending_change") or {}
    if change.get("kind") == "pricing":
        out["price_cents"] = change["price_cents"]
        out["previous_price_cents"] = data.get("price_cents")
        out["price_effective_at"] = change.get("effective_at")
    elif change.get("kind") == "features":
        feature = change["feature"]
        if feature not in out["features"]:
            out["features"].append(feature)
        specs = dict(data.get("feature_specs") or {})
        specs[feature] = {
            "description": change.get("description"),
            "dependencies": list(change.get("dependencies") or []),
            "breaking": bool(change.get("breaking")),
            "effective_at": change.get("effective_at"),
        }
        out["feature_specs"] = specs
    return out


def _increase_percent(old: int, new: int) -> float:
    return (new - old) * 100.0 / old if old > 0 else 0.0


def _price_notice(ctx: Context, old: int | None, new: int) -> str:
    """none | alert (> 5 %: email + in-app) | notice_30d (> 10 %: ≥ 30 d notice), per §3.3."""
    if old is None:
        return "none"
    increase = _increase_percent(old, new)
    if increase > float(ctx.setting("catalog.price_increase_notice_percent")):
        return "notice_30d"
    if increase > float(ctx.setting("catalog.price_increase_alert_percent")):
        return "alert"
    return "none"


def _existing_feature_ids(ctx: Context) -> set[str]:
    """Feature ids that exist: the SKU's own plus the registry the service supplies."""
    known: Collection[str] = ctx.fact("catalog_feature_ids") or ()
    return set(ctx.data.get("features") or ()) | set(known)


# --------------------------------------------------------------------------- schema and OCC guards


@guard("catalog_schema_valid", "the SKU fields break the schema rules")
def catalog_schema_valid(ctx: Context) -> bool:
    """P01: the payload satisfies every schema rule and names this instance's SKU."""
    errors = sku_field_errors(ctx.payload, ctx.settings)
    subject = ctx.instance.subject_id
    if "sku_id" not in errors and subject and ctx.payload.get("sku_id") != subject:
        errors["sku_id"] = f"must be {subject}, the SKU this record is for"
    return _raise_field_errors(errors)


@guard(
    "catalog_version_matches",
    "the SKU was changed by someone else; reload it and try again",
    code="concurrent_update_conflict",
)
def catalog_version_matches(ctx: Context) -> bool:
    """OCC (§3.4): payload expected_version equals the stored version."""
    expected = ctx.arg("expected_version")
    actual = ctx.data.get("version")
    if expected != actual:
        raise GuardFailed(f"expected version {expected} but the SKU is at version {actual}; reload and retry")
    return True


@guard("catalog_edit_valid", "the edited fields break the schema rules")
def catalog_edit_valid(ctx: Context) -> bool:
    """P02: the fields being changed satisfy the schema rules; sku_id is immutable."""
    changed = {k: ctx.payload[k] for k in _EDITABLE if ctx.payload.get(k) is not None}
    errors = sku_field_errors(changed, ctx.settings, partial=True)
    if ctx.payload.get("sku_id") not in (None, ctx.data.get("sku_id")):
        errors["sku_id"] = "cannot be changed; create a new SKU instead"
    return _raise_field_errors(errors)


@guard("catalog_required_fields", "fill in every required field before submitting")
def catalog_required_fields(ctx: Context) -> bool:
    """P03: the draft has every required field and satisfies the schema rules."""
    return _raise_field_errors(sku_field_errors(ctx.data, ctx.settings))


@guard("catalog_first_publication", "the SKU has been published before")
def catalog_first_publication(ctx: Context) -> bool:
    """P03 four-eyes applies only to the first publication of a SKU."""
    return ctx.data.get("first_published_at") is None


@guard("catalog_change_valid", "the validated change is not consistent")
def catalog_change_valid(ctx: Context) -> bool:
    """P04: schema ok, every feature id exists, pricing consistent.

    Facts: ``catalog_feature_ids`` (ids in the feature registry; needed when the SKU has features
    that are not yet its own, i.e. a new feature's dependencies).
    """
    merged = _merged(ctx.data)
    errors = sku_field_errors(merged, ctx.settings)
    specs: Mapping[str, Any] = merged.get("feature_specs") or {}
    known = _existing_feature_ids(ctx) | set(merged["features"])
    missing = sorted({d for spec in specs.values() for d in spec.get("dependencies", ()) if d not in known})
    if missing:
        errors["features"] = "depend on unknown features: " + ", ".join(missing)
    featured = ctx.data.get("featured_price_cents")
    if _is_int(featured) and _is_int(merged["price_cents"]) and featured >= merged["price_cents"]:
        errors["price_cents"] = f"must stay above the featured price of {featured} cents"
    return _raise_field_errors(errors)


# --------------------------------------------------------------------------- P09 pricing guards


@guard("catalog_price_valid", "the new price is outside the allowed range")
def catalog_price_valid(ctx: Context) -> bool:
    """P09: the new price satisfies the price schema rule."""
    message = price_error(ctx.arg("new_price_cents"), ctx.settings)
    if message:
        raise GuardFailed(f"new price {message}")
    return True


@guard("catalog_effective_in_future", "the effective date must be in the future")
def catalog_effective_in_future(ctx: Context) -> bool:
    """P09: the price's effective date lies after now."""
    moment = aware_datetime(ctx.arg("effective_at"))
    return moment is not None and moment > ctx.now


@guard("catalog_tier_matches", "the tier does not match the SKU's tier")
def catalog_tier_matches(ctx: Context) -> bool:
    """P09: the tier named in the command is the SKU's tier."""
    tier = ctx.arg("tier")
    if tier != ctx.data.get("tier"):
        raise GuardFailed(f"tier {tier} does not match the SKU's tier {ctx.data.get('tier')}")
    return True


@guard("catalog_increase_notice_ok", "a large price increase needs a longer notice period")
def catalog_increase_notice_ok(ctx: Context) -> bool:
    """P09: an increase above the notice threshold (10 %) takes effect ≥ 30 d from now."""
    old, new = ctx.data.get("price_cents"), ctx.arg("new_price_cents")
    if not isinstance(old, int) or not isinstance(new, int):
        return True
    limit = float(ctx.setting("catalog.price_increase_notice_percent"))
    if _increase_percent(old, new) <= limit:
        return True
    period = ctx.duration("catalog.price_increase_notice_period")
    moment = aware_datetime(ctx.arg("effective_at"))
    if moment is None or moment < ctx.now + period:
        raise GuardFailed(
            f"an increase of more than {limit:g} % must take effect at least {period.days} days from now"
        )
    return True


# --------------------------------------------------------------------------- P10 feature guards


@guard("catalog_feature_name_valid", "the feature name is invalid")
def catalog_feature_name_valid(ctx: Context) -> bool:
    """P10: the feature name is 1–100 characters."""
    name = ctx.arg("feature_name")
    maximum = int(ctx.setting("catalog.feature_name_max_length"))
    if not isinstance(name, str) or not name.strip() or len(name) > maximum:
        raise GuardFailed(f"feature name must be 1–{maximum} characters")
    return True


@guard("catalog_no_self_dependency", "a feature cannot depend on itself")
def catalog_no_self_dependency(ctx: Context) -> bool:
    """P10: the feature is not among its own dependencies."""
    return ctx.arg("feature_name") not in (ctx.payload.get("dependencies") or ())


@guard("catalog_dependencies_exist", "a dependency names an unknown feature")
def catalog_dependencies_exist(ctx: Context) -> bool:
    """P10: every dependency is a feature of the SKU or of the registry.

    Facts: ``catalog_feature_ids`` (ids in the feature registry).
    """
    known = _existing_feature_ids(ctx)
    missing = [d for d in ctx.payload.get("dependencies") or () if d not in known]
    if missing:
        raise GuardFailed("unknown dependencies: " + ", ".join(map(str, missing)))
    return True


@guard("catalog_breaking_change", "the feature change is not breaking")
def catalog_breaking_change(ctx: Context) -> bool:
    """P10: the change is marked breaking (four-eyes and a 30 d notice apply)."""
    return ctx.payload.get("breaking") is True


@guard("catalog_breaking_notice_ok", "a breaking change needs a 30-day customer notice")
def catalog_breaking_notice_ok(ctx: Context) -> bool:
    """P10: a breaking change takes effect ≥ the notice period from now."""
    if ctx.payload.get("breaking") is not True:
        return True
    period = ctx.duration("catalog.breaking_change_notice_period")
    moment = aware_datetime(ctx.payload.get("effective_at"))
    if moment is None or moment < ctx.now + period:
        raise GuardFailed(f"a breaking change needs an effective date at least {period.days} days from now")
    return True


# --------------------------------------------------------------------------- featured


@guard("catalog_featured_sla_ok", "the SKU does not meet the featured SLA targets")
def catalog_featured_sla_ok(ctx: Context) -> bool:
    """P11: the featured SLA targets are confirmed: by monitoring, or else by the person featuring it.

    Facts: ``sku_featured_sla_ok`` (bool from monitoring). False refuses whatever was typed; when
    it is absent (the console has no SLA feed per SKU) the payload's ``sla_confirmed`` must be true.
    """
    measured = ctx.fact("sku_featured_sla_ok")
    if measured is False:
        raise GuardFailed("monitoring reports that the SKU misses the featured SLA targets")
    return measured is True or ctx.payload.get("sla_confirmed") is True


@guard("catalog_featured_price_valid", "the featured price must be below the regular price")
def catalog_featured_price_valid(ctx: Context) -> bool:
    """P11: the featured price is a valid price below the regular price."""
    featured = ctx.arg("featured_price_cents")
    message = price_error(featured, ctx.settings)
    if message:
        raise GuardFailed(f"featured price {message}")
    regular = ctx.data.get("price_cents")
    return not _is_int(regular) or featured < regular


@guard("catalog_campaign_end_in_future", "the campaign end date must be in the future")
def catalog_campaign_end_in_future(ctx: Context) -> bool:
    """P11: the campaign ends after now."""
    moment = aware_datetime(ctx.arg("ends_at"))
    return moment is not None and moment > ctx.now


@guard("catalog_kpis_unhealthy", "the featured KPIs are healthy")
def catalog_kpis_unhealthy(ctx: Context) -> bool:
    """P14: the featured KPIs fell by more than the demotion threshold (20 %).

    Facts: ``sku_kpi_drop_percent`` (decline of the featured KPIs since featuring, in percent).
    """
    drop = ctx.fact("sku_kpi_drop_percent")
    if not isinstance(drop, int | float):
        return False
    return float(drop) > float(ctx.setting("catalog.kpi_demote_drop_percent"))


# --------------------------------------------------------------------------- deprecation and archive


@guard("catalog_replacement_on_sale", "the replacement SKU is not on sale")
def catalog_replacement_on_sale(ctx: Context) -> bool:
    """P17: a replacement SKU, if given, differs from this SKU and is published or featured.

    Facts: ``sku_states`` (SKU id → catalog state) or ``replacement_sku_state`` (catalog state of
    the SKU named in payload replacement_sku). The payload names the replacement, so the map wins:
    a ``replacement_sku_state`` looked up from the SKU's stored data may be about another SKU.
    """
    replacement = ctx.payload.get("replacement_sku")
    if not replacement:
        return True
    if replacement == ctx.data.get("sku_id"):
        raise GuardFailed("a SKU cannot replace itself")
    states: Mapping[str, Any] = ctx.fact("sku_states") or {}
    state = states[replacement] if replacement in states else ctx.fact("replacement_sku_state")
    if state not in ON_SALE:
        raise GuardFailed(
            f"replacement {replacement} is {state or 'unknown'}; it must be published or featured"
        )
    return True


@guard("catalog_no_newer_replacement_active", "a newer replacement SKU is on sale")
def catalog_no_newer_replacement_active(ctx: Context) -> bool:
    """P19: the replacement recorded at deprecation is not published or featured.

    Facts: ``replacement_sku_state`` (catalog state of the SKU in data replacement_sku).
    """
    replacement = ctx.data.get("replacement_sku")
    if replacement and ctx.fact("replacement_sku_state") in ON_SALE:
        raise GuardFailed(f"replacement {replacement} is on sale; withdraw it before resurrecting this SKU")
    return True


@guard("catalog_no_active_entitlements", "customers still hold this SKU")
def catalog_no_active_entitlements(ctx: Context) -> bool:
    """P20/P21 (X38): no non-archived entitlement holds the SKU.

    Facts: ``sku_active_entitlements`` (count of non-archived entitlements on the SKU; required).
    """
    count = ctx.fact("sku_active_entitlements")
    if not _is_int(count):
        raise GuardFailed("the number of entitlements on this SKU is unknown; cannot archive")
    if count > 0:
        raise GuardFailed(
            f"{count} non-archived entitlement(s) still hold this SKU; migrate or refund them first"
        )
    return True


@guard("catalog_holders_confirmed", "confirm that no holders remain")
def catalog_holders_confirmed(ctx: Context) -> bool:
    """P20: the admin confirmed that 0 holders remain."""
    return ctx.arg("confirm_no_holders") is True


# --------------------------------------------------------------------------- attention, timers, cascades


@guard("catalog_validation_overrun", "validation is within its time budget")
def catalog_validation_overrun(ctx: Context) -> bool:
    """Attention in validation: the checks have run longer than the validation timeout."""
    started = aware_datetime(ctx.data.get("validation_started_at"))
    return started is not None and ctx.now - started > ctx.duration("catalog.validation_timeout")


@guard("catalog_propagation_overdue", "propagation is within its time budget")
def catalog_propagation_overdue(ctx: Context) -> bool:
    """Attention in update_approved: propagation stalled, or has taken ≥ 10 min."""
    if ctx.data.get("propagation_stalled"):
        return True
    started = aware_datetime(ctx.data.get("propagation_started_at"))
    return started is not None and ctx.now - started >= ctx.duration("catalog.propagation_attention_after")


@guard("catalog_compliance_failed", "the last compliance check passed")
def catalog_compliance_failed(ctx: Context) -> bool:
    """Attention in published: the last weekly compliance check found issues."""
    return bool(ctx.data.get("compliance_issues"))


@guard("catalog_archive_blocked", "auto-archive is not blocked")
def catalog_archive_blocked(ctx: Context) -> bool:
    """Attention in deprecated, and the weekly re-check timer: auto-archive found holders (P21b)."""
    return ctx.data.get("archive_blocked") is True


@guard("catalog_pricing_change_applied", "the propagated change is not a price change")
def catalog_pricing_change_applied(ctx: Context) -> bool:
    """X37 when: the revision that went live changed the price."""
    change = ctx.data.get("applied_change") or {}
    return change.get("kind") == "pricing"


def _source_sku(ctx: Context) -> Any:
    source: Mapping[str, Any] = ctx.fact("source_data") or {}
    return source.get("sku_id")


@guard("catalog_entitlement_holds_sku", "the entitlement is for another SKU")
def catalog_entitlement_holds_sku(ctx: Context) -> bool:
    """X36 where (on an entitlement): it is for the source SKU and not archived."""
    sku = _source_sku(ctx)
    held = ctx.data.get("sku_id") or ctx.instance.subject_id
    return sku is not None and held == sku and ctx.state not in ctx.governor.terminal_states


@guard("catalog_subscription_holds_sku", "the subscription does not include this SKU")
def catalog_subscription_holds_sku(ctx: Context) -> bool:
    """X36/X37 where (on a subscription): it includes the source SKU and is not archived."""
    sku = _source_sku(ctx)
    skus = ctx.data.get("skus") or ()
    holds = sku is not None and (sku in skus or ctx.data.get("sku_id") == sku)
    return holds and ctx.state != "archived" and ctx.state not in ctx.governor.terminal_states


# --------------------------------------------------------------------------- updaters


@updater("catalog_init_draft")
def catalog_init_draft(ctx: Context) -> dict[str, Any]:
    """P01: store the draft fields; version = 1."""
    return {
        "sku_id": ctx.arg("sku_id"),
        "name": ctx.arg("name"),
        "description": ctx.arg("description"),
        "price_cents": ctx.arg("price_cents"),
        "currency": ctx.payload.get("currency") or ctx.setting("catalog.default_currency"),
        "tier": ctx.arg("tier"),
        "features": list(ctx.payload.get("features") or []),
        "limits": dict(ctx.payload.get("limits") or {}),
        "version": 1,
        "created_at": ctx.now,
    }


@updater("catalog_apply_edit")
def catalog_apply_edit(ctx: Context) -> dict[str, Any]:
    """P02: apply the edited fields; version + 1."""
    changes: dict[str, Any] = {k: ctx.payload[k] for k in _EDITABLE if ctx.payload.get(k) is not None}
    if "features" in changes:
        changes["features"] = list(changes["features"])
    if "limits" in changes:
        changes["limits"] = dict(changes["limits"])
    changes["version"] = int(ctx.data.get("version") or 0) + 1
    return changes


@updater("catalog_lock_for_review")
def catalog_lock_for_review(ctx: Context) -> dict[str, Any]:
    """P03/P09/P10: lock the version, remember where to return, start the validation clock."""
    return {
        "return_state": ctx.state,
        "locked_version": ctx.data.get("version"),
        "validation_started_at": ctx.now,
        "validation_errors": None,
    }


@updater("catalog_apply_pending")
def catalog_apply_pending(ctx: Context) -> dict[str, Any]:
    """P04: apply pending_change, version + 1, start propagation; a first publication returns to published."""
    merged = _merged(ctx.data)
    change = dict(ctx.data.get("pending_change") or {"kind": "initial"})
    out: dict[str, Any] = {
        "price_cents": merged["price_cents"],
        "features": merged["features"],
        "version": int(ctx.data.get("version") or 0) + 1,
        "pending_change": None,
        "applied_change": change,
        "locked_version": None,
        "validation_started_at": None,
        "propagation_started_at": ctx.now,
        "propagation_attempts": 0,
        "propagation_retry_at": None,
        "propagation_stalled": None,
        # D-13/D-14: draft is only the place to go back to on failure; success goes live.
        "return_state": "featured" if ctx.data.get("return_state") == "featured" else "published",
    }
    if change["kind"] == "pricing":
        out["previous_price_cents"] = merged["previous_price_cents"]
        out["price_effective_at"] = merged["price_effective_at"]
        out["price_notice"] = _price_notice(ctx, merged["previous_price_cents"], merged["price_cents"])
    if change["kind"] == "features":
        out["feature_specs"] = merged["feature_specs"]
    return out


@updater("catalog_revision_hash")
def catalog_revision_hash(ctx: Context) -> dict[str, Any]:
    """P04: revision_hash of the new revision (sku_id, name, price_cents, features, version)."""
    merged = _merged(ctx.data)
    version = int(ctx.data.get("version") or 0) + 1
    return {
        "revision_hash": revision_hash(
            str(merged["sku_id"]),
            str(merged["name"]),
            int(merged["price_cents"]),
            merged["features"],
            version,
        )
    }


@updater("catalog_discard_pending")
def catalog_discard_pending(ctx: Context) -> dict[str, Any]:
    """P05/P06: discard the staged change, store the error details, unlock."""
    if ctx.event == "validation_timeout":
        errors: Any = {"validation": "timeout"}
    else:
        errors = dict(ctx.payload.get("errors") or {"validation": "failed"})
    return {
        "pending_change": None,
        "locked_version": None,
        "validation_started_at": None,
        "validation_errors": errors,
    }


@updater("catalog_mark_live")
def catalog_mark_live(ctx: Context) -> dict[str, Any]:
    """P07: the revision is live; remember the first publication."""
    out: dict[str, Any] = {
        "live_version": ctx.data.get("version"),
        "propagation_started_at": None,
        "propagation_retry_at": None,
        "propagation_stalled": None,
    }
    if ctx.data.get("first_published_at") is None:
        out["first_published_at"] = ctx.now
    return out


@updater("catalog_schedule_propagation_retry")
def catalog_schedule_propagation_retry(ctx: Context) -> dict[str, Any]:
    """P08: count the failure and schedule the retry with exponential backoff (1, 2, 4, 8 s …)."""
    attempts = int(ctx.data.get("propagation_attempts") or 0) + 1
    base = ctx.duration("catalog.propagation_backoff_base")
    cap = ctx.duration("catalog.propagation_backoff_max")
    delay = min(base * (2 ** min(attempts - 1, 30)), cap)
    return {"propagation_attempts": attempts, "propagation_retry_at": ctx.now + delay}


@updater("catalog_stage_pricing")
def catalog_stage_pricing(ctx: Context) -> dict[str, Any]:
    """P09: stage the price change as pending_change."""
    moment = aware_datetime(ctx.arg("effective_at"))
    return {
        "pending_change": {
            "kind": "pricing",
            "price_cents": ctx.arg("new_price_cents"),
            "effective_at": moment,
        }
    }


@updater("catalog_stage_features")
def catalog_stage_features(ctx: Context) -> dict[str, Any]:
    """P10: stage the feature change as pending_change."""
    moment = aware_datetime(ctx.payload.get("effective_at"))
    return {
        "pending_change": {
            "kind": "features",
            "feature": ctx.arg("feature_name"),
            "description": ctx.arg("description"),
            "dependencies": list(ctx.payload.get("dependencies") or []),
            "breaking": ctx.payload.get("breaking") is True,
            "effective_at": moment,
        }
    }


@updater("catalog_start_campaign")
def catalog_start_campaign(ctx: Context) -> dict[str, Any]:
    """P11: store the campaign (id, featured price, end)."""
    return {
        "campaign_id": ctx.arg("campaign_id"),
        "featured_price_cents": ctx.arg("featured_price_cents"),
        "campaign_ends_at": aware_datetime(ctx.arg("ends_at")),
        "kpi_drop_percent": None,
    }


@updater("catalog_end_campaign")
def catalog_end_campaign(ctx: Context) -> dict[str, Any]:
    """P12/P13/P14/P17: badge off, back to the regular price."""
    out: dict[str, Any] = {"campaign_id": None, "featured_price_cents": None, "campaign_ends_at": None}
    if ctx.data.get("campaign_id") is not None:
        out["last_campaign_id"] = ctx.data["campaign_id"]
    return out


@updater("catalog_record_kpi_check")
def catalog_record_kpi_check(ctx: Context) -> dict[str, Any]:
    """P14: remember the monthly KPI reading."""
    drop = ctx.fact("sku_kpi_drop_percent")
    return {"kpi_checked_at": ctx.now, "kpi_drop_percent": drop if isinstance(drop, int | float) else None}


@updater("catalog_record_compliance_check")
def catalog_record_compliance_check(ctx: Context) -> dict[str, Any]:
    """P15: store the weekly compliance result (issues set attention).

    Facts: ``sku_compliance_issues`` (list of issue descriptions; empty when the check passed).
    """
    issues = ctx.fact("sku_compliance_issues") or []
    return {"compliance_checked_at": ctx.now, "compliance_issues": [str(i) for i in issues] or None}


@updater("catalog_deprecate")
def catalog_deprecate(ctx: Context) -> dict[str, Any]:
    """P17: deprecated_at = now, remember the replacement and the sunset note."""
    return {
        "deprecated_at": ctx.now,
        "replacement_sku": ctx.payload.get("replacement_sku") or None,
        "sunset_note": ctx.payload.get("sunset_note") or None,
        "archive_blocked": None,
    }


@updater("catalog_resurrect")
def catalog_resurrect(ctx: Context) -> dict[str, Any]:
    """P19: clear the deprecation."""
    return {"deprecated_at": None, "replacement_sku": None, "sunset_note": None, "archive_blocked": None}


@updater("catalog_block_archive")
def catalog_block_archive(ctx: Context) -> dict[str, Any]:
    """P21b: auto-archive blocked by holders; record it for attention and the weekly re-check."""
    return {"archive_blocked": True, "archive_checked_at": ctx.now}
