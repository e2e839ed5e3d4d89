"""schedules that start bots on a cron expression

The `schedules` table (a cron expression in an IANA zone, the POST /bots body it starts, its
policies, and `next_fire_at`, indexed for the leader's loop) and `schedule_firings` (one row per
fire time, unique per schedule and time, with the stop due for its bot). Bots already carry
`schedule_id` (0016).

Revision ID: 0019
Revises: 0018
Create Date: 2027-01-20 10:03:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("template", JSONType, nullable=False),
        sa.Column("template_secrets_sealed", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("window_end", sa.String(5), nullable=True),
        sa.Column("overlap", sa.String(16), nullable=False),
        sa.Column("missed", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(16), nullable=True),
        sa.Column("last_bot_id", sa.String(36), nullable=True),
        sa.Column("last_reason", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name="fk_schedules_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    op.create_index("ix_schedules_user_id_id", "schedules", ["user_id", "id"])
    op.create_index("ix_schedules_next_fire_at", "schedules", ["next_fire_at"])
    op.create_table(
        "schedule_firings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("fired_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("stop_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stop_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_firings"),
    )
    op.create_index(
        "uq_schedule_firings_schedule_fired_for",
        "schedule_firings",
        ["schedule_id", "fired_for"],
        unique=True,
    )
    op.create_index("ix_schedule_firings_schedule_id_id", "schedule_firings", ["schedule_id", "id"])
    op.create_index("ix_schedule_firings_stop_at", "schedule_firings", ["stop_at"])


def downgrade() -> None:
    op.drop_index("ix_schedule_firings_stop_at", table_name="schedule_firings")
    op.drop_index("ix_schedule_firings_schedule_id_id", table_name="schedule_firings")
    op.drop_index("uq_schedule_firings_schedule_fired_for", table_name="schedule_firings")
    op.drop_table("schedule_firings")
    op.drop_index("ix_schedules_next_fire_at", table_name="schedules")
    op.drop_index("ix_schedules_user_id_id", table_name="schedules")
    op.drop_table("schedules")
