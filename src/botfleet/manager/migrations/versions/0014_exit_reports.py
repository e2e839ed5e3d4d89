"""the runtime's exit report, kept on the attempt until its workload is gone

A bot's record says `completed` (or `failed`) only once none of its processes remain. The
runtime's `exited` callback is validated and kept on its attempt (`reported_exit_code`,
`reported_reason`, `reported_detail`, `reported_at`); the attempt ends with that report once the
engine confirms the workload is gone (manager/background/exit_watch.py, and the reconciler after
a restart). A partial index holds the few attempts waiting so (`reported_at` set, `ended_at`
not): the reconciler reads them each tick. Nothing is backfilled: NULL means no report waits.

Revision ID: 0014
Revises: 0013
Create Date: 2027-01-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "reported_at IS NOT NULL AND ended_at IS NULL"


def upgrade() -> None:
    op.add_column("bot_attempts", sa.Column("reported_exit_code", sa.Integer(), nullable=True))
    op.add_column("bot_attempts", sa.Column("reported_reason", sa.String(64), nullable=True))
    op.add_column("bot_attempts", sa.Column("reported_detail", sa.Text(), nullable=True))
    op.add_column(
        "bot_attempts", sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_bot_attempts_exit_pending",
        "bot_attempts",
        ["bot_id"],
        unique=False,
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_bot_attempts_exit_pending", table_name="bot_attempts")
    with op.batch_alter_table("bot_attempts") as batch:
        batch.drop_column("reported_at")
        batch.drop_column("reported_detail")
        batch.drop_column("reported_reason")
        batch.drop_column("reported_exit_code")
