"""A store for the transition service that keeps the customers it creates in memory (the seed's).

``marketplace seed`` replays every event of every life through ``fire_event``; the service is the
same, only where it reads and writes rows differs. With the database as the store, an event costs
three or four round trips and a commit's worth of locking for a customer nobody else can see yet. This store
serves the plans of the customers created through it from memory, hands out ids from blocks it
reserves from the sequences, chains audit entries onto heads it holds locked, and keeps the rows
of all those events in one buffer (an instance's last values, a timer's last arming, every history
row, audit entry and outbox row) that ``flush`` writes with the service's own one-statement write
(``webapp.db.JsonBatch``): one round trip per customer instead of several per event.

What it loads is what the database would return: written instances are taken back from the rows
as stored (JSON and back), so a plan sees the same values either way.

Rules of use (the seed follows them): only on PostgreSQL; ``flush`` before the transaction or
savepoint the events ran in commits, ``discard`` when it rolls back; ``forget`` a customer once it
is written. Events on instances it did not create go to the database (after a flush), and the
service makes it flush before it writes through the session itself (rejections, approval requests,
refused timers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy.orm import Session

from governors import Instance
from webapp import audit
from webapp.services.instances import decoded_instance
from webapp.services.transitions import EventRequest, Loaded, SqlStore, allocate_ids, chained, write_rows

ID_BLOCKS = (64, 1024)
"""Ids reserved from the sequences at a time: the first block, doubling up to the last. A store lives
for one batch of customers; what it reserved and did not use is a gap in the ids, kept small."""

_APPENDED = ("history", "snapshots", "audit", "outbox", "idempotency")


class BulkStore(SqlStore):
    """The service's store for customers being created by this process (see the module)."""

    def __init__(self, catalog: Mapping[str, Instance], catalog_tenant: str) -> None:
        self._catalog = dict(catalog)
        self._catalog_tenant = catalog_tenant
        self._customers: dict[str, dict[str, Instance]] = {}
        self._tenant_of: dict[str, str] = {}
        self._owner: dict[str, str] = {}
        self._heads: dict[str, audit.Head] = {}
        self._history: list[int] = []
        self._outbox: list[int] = []
        self._block = ID_BLOCKS[0]
        self._clear()

    def _clear(self) -> None:
        self._created: dict[str, dict[str, Any]] = {}
        self._updated: dict[str, dict[str, Any]] = {}
        self._timers: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._moves: dict[str, dict[str, Any]] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {key: [] for key in _APPENDED}

    # ----------------------------------------------------------------- the store

    def load(self, session: Session, req: EventRequest) -> Loaded:
        if req.instance_id is None:
            customer = req.customer_id
        else:
            customer = self._owner.get(req.instance_id)
            if customer is None:  # not one of ours (the catalog's included): the database knows it
                self.sync(session)
                return super().load(session, req)
        mine = self._customers.setdefault(customer or "", {})
        snapshot = {**mine, **self._catalog}
        tenants = {iid: self._tenant_of.get(iid, req.tenant_id) for iid in mine}
        tenants.update(dict.fromkeys(self._catalog, self._catalog_tenant))
        # A customer created here has no legal hold: holds are placed by staff on stored customers.
        return Loaded(snapshot, tenants, req.instance_id, customer, False)

    def allocate(
        self, session: Session, loaded: Loaded, history: int, outbox: int, chains: Iterable[str]
    ) -> tuple[list[int], list[int]]:
        if history > len(self._history) or outbox > len(self._outbox):
            block = self._block
            self._block = min(block * 2, ID_BLOCKS[1])
            # The service's own allocation, for a block and no audit heads (this store holds its own).
            history_ids, outbox_ids = allocate_ids(session, max(block, history), max(block, outbox))
            self._history.extend(history_ids)
            self._outbox.extend(outbox_ids)
        taken = self._history[:history], self._outbox[:outbox]
        del self._history[:history], self._outbox[:outbox]
        return taken

    def write(
        self,
        session: Session,
        loaded: Loaded,
        rows: dict[str, list[dict[str, Any]]],
        entries: Sequence[tuple[str, audit.NewEntry]],
        *,
        commit: bool = False,
    ) -> None:
        if commit:
            raise ValueError("the bulk store writes at flush: it cannot commit with an event")
        missing = sorted({t for t, _ in entries} - set(self._heads))
        if missing:
            # Locked for the rest of the transaction; copied, as the session's cache is dropped on flush.
            for tenant, head in audit.lock_heads(session, missing).items():
                self._heads[tenant] = audit.Head(head.seq, head.hash)
        audit_rows, moves = audit.chain_onto(self._heads, entries)
        rows = {**rows, **chained(audit_rows, moves)}
        for row in rows["creations"]:
            self._created[row["id"]] = dict(row)
            self._tenant_of[row["id"]] = row["tenant_id"]
            self._remember(row, created=True)
        for row in rows["updates"]:
            created = self._created.get(row["id"])
            if created is not None:
                created.update(row)
            else:
                self._updated[row["id"]] = dict(row)
            self._remember(row, created=False)
        for gone in rows["timers_gone"]:
            self._timers[(gone["instance_id"], gone["name"])] = None
        for armed in rows["timers"]:
            self._timers[(armed["instance_id"], armed["name"])] = armed
        for move in rows["heads"]:
            self._moves[move["tenant_id"]] = move
        for key in _APPENDED:
            self._rows[key].extend(rows[key])

    def sync(self, session: Session) -> None:
        self.flush(session)
        # The service appends through the session next (a rejection, an approval request): the
        # heads move behind this store's back, so they are read afresh on the next chain.
        self._heads.clear()

    # ----------------------------------------------------------------- the seed's side

    def flush(self, session: Session) -> None:
        """Write everything buffered (one statement). The heads stay held (the rows are written under
        the transaction's locks); a store lives for one transaction, as its locks do."""
        if not (self._created or self._updated or self._timers or any(self._rows.values())):
            return
        write_rows(
            session.connection(),
            {
                "creations": list(self._created.values()),
                "updates": list(self._updated.values()),
                "heads": list(self._moves.values()),
                "timers_gone": [
                    {"instance_id": i, "name": n} for (i, n), v in self._timers.items() if v is None
                ],
                "timers": [v for v in self._timers.values() if v is not None],
                **self._rows,
            },
        )
        self._clear()
        # The session's cache of locked heads is behind this write; the store's own copies are not.
        audit.forget_locked_heads(session)

    def discard(self) -> None:
        """Drop what is buffered (its transaction or savepoint rolled back) and the heads held."""
        self._clear()
        self._heads.clear()

    def forget(self, customer_id: str) -> None:
        """Let go of a written customer's instances."""
        for iid in self._customers.pop(customer_id, {}):
            self._tenant_of.pop(iid, None)
            self._owner.pop(iid, None)

    def instance(self, instance_id: str) -> Instance | None:
        """One of this store's instances as last written (a customer's or the catalog's)."""
        found = self._catalog.get(instance_id)
        if found is not None:
            return found
        customer = self._owner.get(instance_id)
        return None if customer is None else self._customers[customer].get(instance_id)

    def _remember(self, row: Mapping[str, Any], *, created: bool) -> None:
        """Keep the instance as the database will return it (its JSON columns decoded again)."""
        iid = row["id"]
        if created:
            governor, customer = row["governor"], row["customer_id"]
        else:
            before = self.instance(iid)
            if before is None:  # loaded from the database, not one of ours: nothing to keep
                return
            governor, customer = before.governor, before.customer_id
        # revive copies the JSON containers, so the instance shares nothing with the buffered row.
        stored = SimpleNamespace(**{**row, "governor": governor, "customer_id": customer})
        instance = decoded_instance(stored, row["data"], row["timers"])
        if iid in self._catalog:
            self._catalog[iid] = instance
        else:
            self._customers.setdefault(customer or "", {})[iid] = instance
            self._owner[iid] = customer or ""


__all__ = ["BulkStore"]
