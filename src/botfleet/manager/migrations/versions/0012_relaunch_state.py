"""relaunch, state keys and restart triggers

A bot may be a relaunch of an ended one (`relaunch_of`), may hold a persistent state directory
(`state_key`: one live bot per user and key, enforced by a partial unique index, like
`dedup_key`), and says which failures its restart policy retries (`restart_on`, a JSON list;
NULL means the default `["crash", "heartbeat_lost"]`, what every bot did before). A user may
carry a default restart policy (`default_restart`) that POST /bots applies when it names none.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-18 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_STATE = "state_key IS NOT NULL AND NOT (status IN ('completed', 'failed'))"


def upgrade() -> None:
    op.add_column("bots", sa.Column("relaunch_of", sa.String(36), nullable=True))
    op.add_column("bots", sa.Column("state_key", sa.String(200), nullable=True))
    op.add_column("bots", sa.Column("restart_on", JSONType, nullable=True))
    op.add_column("users", sa.Column("default_restart", JSONType, nullable=True))
    op.create_index(
        "uq_bots_user_state_live",
        "bots",
        ["user_id", "state_key"],
        unique=True,
        postgresql_where=sa.text(LIVE_STATE),
        sqlite_where=sa.text(LIVE_STATE),
    )


def downgrade() -> None:
    op.drop_index("uq_bots_user_state_live", table_name="bots")
    op.drop_column("users", "default_restart")
    for column in ("restart_on", "state_key", "relaunch_of"):
        op.drop_column("bots", column)
