"""the queue: the queued state and the capacities an admin sets

The `capacities` table (fleet-wide, or per label: at most `max_concurrent` bots holding a
slot), and partial indexes on `bots` that find what is due without reading every bot: the
queue in admission order, queued bots with a timeout, active bots with a duration limit, bots
waiting for their `start_at`, and restart backoffs. `queued` needs no change to the `status`
column (a plain string).

Revision ID: 0017
Revises: 0016
Create Date: 2027-01-20 10:01:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: name → (predicate, columns); the predicates as core/queue_models.py states them.
INDEXES: dict[str, tuple[str, list[str | sa.TextClause]]] = {
    "ix_bots_queue": ("status = 'queued'", [sa.text("priority DESC"), "queued_at", "id"]),
    "ix_bots_queue_timeout": (
        "status = 'queued' AND queue_timeout_s IS NOT NULL",
        ["queue_timeout_s", "queued_at"],
    ),
    "ix_bots_max_duration": (
        "status = 'active' AND max_duration_s IS NOT NULL",
        ["max_duration_s", "active_at"],
    ),
    "ix_bots_start_at": ("status = 'requested' AND start_at IS NOT NULL", ["start_at"]),
    "ix_bots_next_attempt": ("next_attempt_at IS NOT NULL", ["next_attempt_at"]),
}


def upgrade() -> None:
    op.create_table(
        "capacities",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("scope", sa.String(420), nullable=False),
        sa.Column("label_key", sa.String(100), nullable=True),
        sa.Column("label_value", sa.String(300), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_capacities"),
        sa.UniqueConstraint("scope", name="uq_capacities_scope"),
    )
    for name, (predicate, columns) in INDEXES.items():
        where = sa.text(predicate)
        op.create_index(name, "bots", columns, postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    # An older manager knows no `queued` bot: those still waiting end as if their wait ran out.
    op.execute(
        "UPDATE bots SET status = 'failed', status_reason = 'queue_timeout', "
        "ended_at = CURRENT_TIMESTAMP WHERE status = 'queued'"
    )
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="bots")
    op.drop_table("capacities")
