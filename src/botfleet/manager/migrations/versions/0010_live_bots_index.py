"""a partial index on live bots

The reconciler reads every live bot each tick (manager/background/reconciler/__init__.py). Ended
bots outnumber live ones by far and only grow, so the live rows get an index of their own: a
partial index on `status` holding only the rows not in a terminal status (PostgreSQL and
SQLite both support partial indexes). Its predicate is the one the reconciler's query states,
word for word, which is how both planners know the index covers the query.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "NOT (status IN ('completed', 'failed'))"


def upgrade() -> None:
    op.create_index(
        "ix_bots_live",
        "bots",
        ["status"],
        unique=False,
        postgresql_where=sa.text(LIVE),
        sqlite_where=sa.text(LIVE),
    )


def downgrade() -> None:
    op.drop_index("ix_bots_live", table_name="bots")
