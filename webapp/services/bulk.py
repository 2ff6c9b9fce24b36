"""Bulk retry of failed payments (CONSOLE.md §3.2): preview per invoice, then one job applies them.

- ``preview_retry``: for each invoice, would ``retry_now`` (B10) apply for this user, or why not —
  the user's best role for the event comes from the definitions (``manual_actions``), and the plan
  from ``transitions.preview``; nothing is written.
- ``create_run``: a ``bulk_runs`` row (status ``queued``) with the invoices, the role and the reason.
- ``run_bulk``: applies the event to each invoice through ``fire_event`` under the deterministic
  idempotency key ``bulk:<run id>:<instance id>``, committing per invoice and recording progress on
  the row. Running it again (a redelivered job, a second click) replays the stored results: every
  item reports "already applied" and no transition is written.
- ``run_bulk_job(run_id)``: the RQ job function (``webapp.services.bulk.run_bulk_job``); it reaches
  the runtime through ``webapp.jobs.runtime()`` like the other jobs. ``start`` enqueues it when
  Redis is configured, else runs it inline in the request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from webapp.models import GovernorInstance
from webapp.models.bulk import BulkRun
from webapp.runtime import Runtime
from webapp.services.facts import world_facts
from webapp.services.transitions import Actor, EventRequest, TransitionError, fire_event, preview

log = logging.getLogger(__name__)

RETRY_EVENT = "retry_now"
KIND = "billing_retry"


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class PreviewItem:
    """What ``retry_now`` would do to one invoice for this user."""

    instance_id: str
    customer_id: str | None
    state: str
    amount_cents: int
    currency: str
    applies: bool
    role: str
    outcome: str


def idempotency_key(run_id: str, instance_id: str) -> str:
    """The deterministic key of one item of a bulk run."""
    return f"bulk:{run_id}:{instance_id}"


def _amount(row: GovernorInstance) -> int:
    data = row.data or {}
    raw = data.get("total_cents")
    if raw is None:
        raw = data.get("amount_cents")
    try:
        return int(raw or 0)
    except (TypeError, ValueError):
        return 0


def preview_retry(
    session: Session,
    rows: Sequence[GovernorInstance],
    user_id: str,
    roles: Iterable[str],
    now: datetime,
    settings: Any,
    reason: str = "bulk retry preview (what-if)",
) -> list[PreviewItem]:
    """Per invoice: would ``retry_now`` apply directly for this user, or why not (applies nothing)."""
    from webapp.services.actions import best_actions_for_row

    held = list(roles)
    items: list[PreviewItem] = []
    for row in rows:

        def make(applies: bool, role: str, outcome: str, row: GovernorInstance = row) -> PreviewItem:
            return PreviewItem(
                instance_id=row.id,
                customer_id=row.customer_id,
                state=row.state,
                amount_cents=_amount(row),
                currency=str((row.data or {}).get("currency") or ""),
                applies=applies,
                role=role,
                outcome=outcome,
            )

        best = best_actions_for_row(session, row, held, now, settings)
        if RETRY_EVENT not in best:
            items.append(make(False, "", f"no retry in state {row.state}"))
            continue
        action, role = best[RETRY_EVENT]
        if not action.allowed:
            items.append(make(False, role, action.reason))
            continue
        if action.mode != "direct":
            outcome = f"needs approval by {' or '.join(action.approvers)}: not available in bulk"
            items.append(make(False, role, outcome))
            continue
        req = EventRequest(
            tenant_id=row.tenant_id, event=RETRY_EVENT, instance_id=row.id, payload={"reason": reason}
        )
        try:
            plan = preview(session, req, Actor(user_id, role), now, settings=settings, facts_hook=world_facts)
        except TransitionError as exc:
            items.append(make(False, role, exc.message))
            continue
        rejection = plan.get("rejection")
        if rejection:
            items.append(make(False, role, str(rejection.get("message"))))
            continue
        root = (
            next((s for s in plan.get("steps", []) if s.get("step") == 0), None)
            or (plan.get("steps") or [{}])[0]
        )
        to_state = root.get("to_state") or "?"
        items.append(make(True, role, f"would move {row.state} → {to_state}"))
    return items


@dataclass(frozen=True)
class _RunSpec:
    """What a run needs while it works (read once; the row itself is only updated)."""

    id: str
    event: str
    reason: str
    created_by: str
    role: str
    instance_ids: tuple[str, ...]


def create_run(
    session: Session,
    *,
    user_id: str,
    role: str,
    reason: str,
    instance_ids: Sequence[str],
    now: datetime,
    run_id: str | None = None,
) -> BulkRun:
    """A queued bulk retry over ``instance_ids`` (the caller commits)."""
    run = BulkRun(
        id=run_id or f"bulk-{uuid.uuid4().hex}",
        kind=KIND,
        created_by=user_id,
        role=role,
        reason=reason,
        event=RETRY_EVENT,
        status="queued",
        instance_ids=list(instance_ids),
        total=len(instance_ids),
        done=0,
        results={},
        runs=0,
        created_at=now,
    )
    session.add(run)
    return run


def _apply_one(
    rt: Runtime, run: _RunSpec, instance_id: str, now: datetime
) -> tuple[dict[str, Any], tuple[int, ...]]:
    with rt.db.session() as session:
        row = session.get(GovernorInstance, instance_id)
        if row is None:
            return {"outcome": "refused", "message": "no such invoice", "state": ""}, ()
        req = EventRequest(
            tenant_id=row.tenant_id,
            event=run.event,
            instance_id=row.id,
            payload={"reason": run.reason},
            idempotency_key=idempotency_key(run.id, row.id),
        )
        try:
            result = fire_event(
                session,
                req,
                Actor(run.created_by, run.role),
                now,
                settings=rt.settings,
                facts_hook=world_facts,
            )
        except TransitionError as exc:
            return {"outcome": "refused", "message": exc.message, "state": row.state}, ()
        session.refresh(row)
        state = row.state
        if result.status == 200:
            outcome = "already applied" if result.replayed else "applied"
            return {"outcome": outcome, "message": "", "state": state}, result.outbox_ids
        error = (result.body or {}).get("error") or {}
        message = str(error.get("message") or f"refused ({result.status})")
        outcome = "already refused" if result.replayed else "refused"
        return {"outcome": outcome, "message": message, "state": state}, ()


def run_bulk(rt: Runtime, run_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Apply the run's event to each invoice (idempotent per item); returns the per-item results."""
    from webapp.jobs import after_commit

    with rt.db.session() as session:
        stored = session.get(BulkRun, run_id)
        if stored is None:
            return {}
        stored.status = "running"
        stored.started_at = now or utcnow()
        stored.done = 0
        stored.runs = (stored.runs or 0) + 1
        stored.results = {}
        run = _RunSpec(
            id=stored.id,
            event=stored.event,
            reason=stored.reason,
            created_by=stored.created_by,
            role=stored.role,
            instance_ids=tuple(stored.instance_ids or ()),
        )
    results: dict[str, Any] = {}
    for instance_id in run.instance_ids:
        try:
            item, outbox_ids = _apply_one(rt, run, instance_id, now or utcnow())
        except Exception as exc:  # one broken item must not stop the others; it is reported
            item, outbox_ids = {"outcome": "error", "message": str(exc)[:300], "state": ""}, ()
        after_commit(rt, outbox_ids)
        results[instance_id] = item
        with rt.db.session() as session:
            stored = session.get(BulkRun, run_id)
            if stored is not None:
                stored.results = dict(results)
                stored.done = len(results)
    with rt.db.session() as session:
        stored = session.get(BulkRun, run_id)
        if stored is not None:
            stored.status = "finished"
            stored.finished_at = utcnow() if now is None else now
    return results


def run_bulk_job(run_id: str) -> dict[str, Any]:
    """RQ job: run the bulk operation with the worker's runtime."""
    from webapp.jobs import runtime

    return run_bulk(runtime(), run_id)


def start(rt: Runtime, run_id: str) -> str:
    """Enqueue the run as one RQ job when a queue is configured ("queued"), else run it now ("inline").

    The queue is the runtime's (``REDIS_URL``, or a test's ``extras["queue"]``); the job id is
    ``bulk-run-<run id>`` so enqueueing the same run twice keeps one job.
    """
    from rq import Queue

    from webapp.jobs import get_queue

    if rt.config.redis_url is not None or isinstance(rt.extras.get("queue"), Queue):
        try:
            get_queue(rt).enqueue(run_bulk_job, run_id, job_id=f"bulk-run-{run_id}", job_timeout=1800)
            return "queued"
        except Exception as exc:  # Redis down: do the work here rather than lose it
            log.warning("bulk run %s not enqueued (%s); running it inline", run_id, exc)
    run_bulk(rt, run_id)
    return "inline"


def summary(run: BulkRun) -> dict[str, int]:
    """Counts per outcome of the run's results."""
    counts: dict[str, int] = {}
    for item in (run.results or {}).values():
        outcome = str((item or {}).get("outcome") or "")
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
