"""an event's load also reserves its ids and reads its tenant's audit head, in one result (PostgreSQL)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 15:20:00

``governor_event_load`` returns ``governor_event_rows``' rows (migration 0013) with four more columns,
NULL on them, and then, when ids are asked for, one row of kind ``r``: ``p_history`` ids from the
history sequence, ``p_outbox`` from the outbox sequence, and the audit head of ``p_tenant`` as it
stands (not locked; NULL if the tenant has no chain yet). The transition service sent that
reservation as a statement of its own after the load, in the same round trip; as a function its
plan is made once per connection instead of on every event, and the driver reads one result.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION governor_event_load(
    p_instance text, p_tenant text, p_history integer, p_outbox integer
)
RETURNS TABLE (
    kind "char", id varchar, tenant_id varchar, customer_id varchar, governor varchar,
    subject_id varchar, state varchar, state_seq integer, version integer,
    entered_at timestamptz, data text, timers text, on_hold boolean,
    history bigint[], outbox bigint[], head_seq bigint, head_hash varchar
)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
        SELECT r.*, NULL::bigint[], NULL::bigint[], NULL::bigint, NULL::varchar
          FROM governor_event_rows(p_instance, p_tenant) AS r;
    IF p_history > 0 OR p_outbox > 0 THEN
        RETURN QUERY
            SELECT 'r'::"char", NULL::varchar, NULL::varchar, NULL::varchar, NULL::varchar,
                   NULL::varchar, NULL::varchar, NULL::integer, NULL::integer, NULL::timestamptz,
                   NULL::text, NULL::text, NULL::boolean,
                   ARRAY(SELECT nextval('transitions_id_seq') FROM generate_series(1, p_history)),
                   ARRAY(SELECT nextval('outbox_id_seq') FROM generate_series(1, p_outbox)),
                   h.seq, h.hash
              FROM (SELECT 1) AS one LEFT JOIN audit_heads AS h ON h.tenant_id = p_tenant;
    END IF;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS governor_event_load(text, text, integer, integer)")
