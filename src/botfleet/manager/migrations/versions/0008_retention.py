"""retention

Ended bots are pruned by age (`BOTFLEET_RETAIN_ENDED_BOTS_DAYS`, manager/services/retention.py):
an index on `bots.ended_at` lets housekeeping find the oldest ended bots without scanning the
table, and one on `webhook_deliveries.bot_id` lets a deleted bot's deliveries go with it. The
outbox and webhook deliveries are pruned by age from their oldest ids (both sort by time), so
that needs no new index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_bots_ended_at", "bots", ["ended_at"], unique=False)
    op.create_index("ix_webhook_deliveries_bot_id", "webhook_deliveries", ["bot_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_bot_id", table_name="webhook_deliveries")
    op.drop_index("ix_bots_ended_at", table_name="bots")
