"""bulk operations and their per-bot results; bot edits; a bot name prefix index

`operations` (one `POST /bots/actions`) and `operation_results` (one row per selected bot,
`ok` NULL until the leader's worker acted on it); `bot_edits` (the audit of `PATCH /bots/{id}`).
`ix_bots_user_name_prefix` (PostgreSQL) serves `GET /bots?name=<prefix>`: a case-insensitive
prefix of one user's bot names (`lower(name) LIKE 'abc%'`), with `text_pattern_ops` so that LIKE
uses it whatever the database's collation. SQLite gets none: its LIKE would not use one.

Revision ID: 0018
Revises: 0017
Create Date: 2027-01-20 10:02:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
RUNNING = "status = 'running'"
PENDING = "ok IS NULL"


def upgrade() -> None:
    op.create_table(
        "operations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("selector", JSONType, nullable=False),
        sa.Column("config", JSONType, nullable=True),
        sa.Column("command", JSONType, nullable=True),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operations"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_operations_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_operations_user_id_id", "operations", ["user_id", "id"])
    op.create_index(
        "ix_operations_running",
        "operations",
        ["status"],
        postgresql_where=sa.text(RUNNING),
        sqlite_where=sa.text(RUNNING),
    )
    op.create_table(
        "operation_results",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("operation_id", sa.String(36), nullable=False),
        sa.Column("bot_id", sa.String(64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operation_results"),
    )
    op.create_index(
        "ix_operation_results_operation_id_id", "operation_results", ["operation_id", "id"]
    )
    op.create_index(
        "ix_operation_results_pending",
        "operation_results",
        ["operation_id", "id"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )
    op.create_table(
        "bot_edits",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("bot_id", sa.String(36), nullable=False),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("changes", JSONType, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bot_edits"),
        sa.ForeignKeyConstraint(
            ["bot_id"], ["bots.id"], name="fk_bot_edits_bot_id_bots", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_bot_edits_bot_id_id", "bot_edits", ["bot_id", "id"])
    if op.get_bind().dialect.name == "postgresql":  # SQLite's LIKE would not use one
        op.execute(
            "CREATE INDEX ix_bots_user_name_prefix ON bots (user_id, lower(name) text_pattern_ops)"
        )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_bots_user_name_prefix")
    op.drop_index("ix_bot_edits_bot_id_id", table_name="bot_edits")
    op.drop_table("bot_edits")
    op.drop_index("ix_operation_results_pending", table_name="operation_results")
    op.drop_index("ix_operation_results_operation_id_id", table_name="operation_results")
    op.drop_table("operation_results")
    op.drop_index("ix_operations_running", table_name="operations")
    op.drop_index("ix_operations_user_id_id", table_name="operations")
    op.drop_table("operations")
