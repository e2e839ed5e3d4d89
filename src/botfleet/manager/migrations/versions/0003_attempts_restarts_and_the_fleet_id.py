"""attempts, restarts and the fleet id

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:17:11.753358
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "fleet_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_fleet_meta")),
    )
    op.create_table(
        "bot_attempts",
        sa.Column("bot_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("runtime_ref", sa.String(length=200), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=True),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name=op.f("fk_bot_attempts_bot_id_bots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("bot_id", "attempt", name=op.f("pk_bot_attempts")),
    )
    op.add_column("bots", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    op.drop_column("bots", "next_attempt_at")
    op.drop_table("bot_attempts")
    op.drop_table("fleet_meta")
