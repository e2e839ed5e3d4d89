"""bot kinds: the `kinds` table (one row per version) and the version each bot runs

An operator registers a kind (`POST /admin/kinds`); users start bots of it by name. Each update
inserts the next version; a bot keeps the version it started with (`bots.kind_version`), so a
relaunch or a restart runs what was validated. The built-in kinds have no rows (they are
documents in code, version 1): bots of them that exist already get `kind_version` 1; raw
`module:Class` bots keep NULL.

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-20 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "kinds",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run", JSONType, nullable=False),
        sa.Column("image", sa.String(300), nullable=True),
        sa.Column("package", JSONType, nullable=True),
        sa.Column("config_schema", JSONType, nullable=True),
        sa.Column("secrets", JSONType, nullable=False),
        sa.Column("commands", JSONType, nullable=True),
        sa.Column("resources", JSONType, nullable=True),
        sa.Column("restart", JSONType, nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name="pk_kinds"),
    )
    op.add_column("bots", sa.Column("kind_version", sa.Integer(), nullable=True))
    op.execute("UPDATE bots SET kind_version = 1 WHERE bot IN ('demo', 'telegram')")


def downgrade() -> None:
    with op.batch_alter_table("bots") as batch:
        batch.drop_column("kind_version")
    op.drop_table("kinds")
