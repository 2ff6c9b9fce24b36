"""one statement loads and locks what an event's plan reads (PostgreSQL)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 10:30:00

The transition service locked an event's customer and then its instances with two statements sent as
one pipelined batch: the second must take its snapshot after the customer lock is granted, so that it
sees instances a transaction that held the lock has just created. In a PL/pgSQL function each
statement takes its own snapshot (READ COMMITTED), so the same two steps run server-side from one
call: the driver's per-statement and pipeline work on the hot path is halved. The rows come back with a
``kind``: ``t`` the target, ``c`` a catalog row (unlocked reads, as before), ``i`` one of the locked
customer's instances (id order, with whether a legal hold stands on the customer). No ``i`` rows for
a target with a customer means the customer was not found in the tenant (the caller says 404).
SQLite has no such functions; the service keeps its statements there.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION governor_event_rows(p_instance text, p_tenant text)
RETURNS TABLE (
    kind "char", id varchar, tenant_id varchar, customer_id varchar, governor varchar,
    subject_id varchar, state varchar, state_seq integer, version integer,
    entered_at timestamptz, data text, timers text, on_hold boolean
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_customer varchar;
BEGIN
    -- The target's customer first: the lock every event on it takes before anything else.
    SELECT c.id INTO v_customer FROM customers c
     WHERE c.id = (SELECT g.customer_id FROM governor_instances g WHERE g.id = p_instance)
       AND c.tenant_id = p_tenant
       FOR UPDATE;
    RETURN QUERY
        SELECT CASE WHEN g.id = p_instance THEN 't'::"char" ELSE 'c'::"char" END,
               g.id, g.tenant_id, g.customer_id, g.governor, g.subject_id, g.state, g.state_seq,
               g.version, g.entered_at, g.data::text, g.timers::text, false
          FROM governor_instances g
         WHERE g.id = p_instance OR g.governor = 'catalog';
    IF v_customer IS NOT NULL THEN
        -- A statement of its own: its snapshot is taken now that the customer lock is held.
        RETURN QUERY
            SELECT 'i'::"char", g.id, g.tenant_id, g.customer_id, g.governor, g.subject_id, g.state,
                   g.state_seq, g.version, g.entered_at, g.data::text, g.timers::text,
                   EXISTS (SELECT 1 FROM legal_holds h
                            WHERE h.customer_id = v_customer AND h.released_at IS NULL)
              FROM governor_instances g
             WHERE g.customer_id = v_customer
             ORDER BY g.id
               FOR UPDATE OF g;
    END IF;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS governor_event_rows(text, text)")
