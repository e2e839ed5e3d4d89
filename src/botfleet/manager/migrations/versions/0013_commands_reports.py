"""custom commands' payload and result, bots' latest report

A custom command (`POST /bots/{id}/commands`) carries a `payload` to the bot and keeps the bot's
JSON answer as its `result`. A bot's latest report (`await self.report({...})`) is kept on the
bot row with its time (`report`, `reported_at`); reports are coalesced in memory before they
are written (manager/hot_path/report_batches.py), so this column changes at most once per bot per
BOTFLEET_REPORT_MIN_INTERVAL_S. Nothing is backfilled: NULL means none.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-19 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("commands", sa.Column("payload", JSONType, nullable=True))
    op.add_column("commands", sa.Column("result", JSONType, nullable=True))
    op.add_column("bots", sa.Column("report", JSONType, nullable=True))
    op.add_column("bots", sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bots") as batch:
        batch.drop_column("reported_at")
        batch.drop_column("report")
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("result")
        batch.drop_column("payload")
