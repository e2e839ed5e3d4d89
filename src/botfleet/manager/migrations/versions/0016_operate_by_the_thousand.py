"""operate by the thousand: the columns the queue, schedules and health rules keep on bots

A bot's queue place (`priority`, higher first, then `queued_at`), how long it may wait
(`queue_timeout_s`), the schedule that started it (`schedule_id`), its health rules and what
they have seen so far (`health_rules`, `health_state`); a user's `queue_by_default` (a POST that
names no `queue`); a kind's default health rules. Existing rows get priority 0 and nothing else.
The tables of each part come in the next revisions (0017 queue capacities, 0018 operations,
0019 schedules, 0020 webhook subscriptions).

Revision ID: 0016
Revises: 0015
Create Date: 2027-01-20 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("bots") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("queue_timeout_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("schedule_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("health_rules", JSONType, nullable=True))
        batch.add_column(sa.Column("health_state", JSONType, nullable=True))
    op.create_index("ix_bots_schedule_id", "bots", ["schedule_id"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("queue_by_default", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("kinds") as batch:
        batch.add_column(sa.Column("health", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kinds") as batch:
        batch.drop_column("health")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("queue_by_default")
    op.drop_index("ix_bots_schedule_id", table_name="bots")
    with op.batch_alter_table("bots") as batch:
        for column in (
            "health_state",
            "health_rules",
            "schedule_id",
            "queued_at",
            "queue_timeout_s",
            "priority",
        ):
            batch.drop_column(column)
