"""sealed secrets and idempotency

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Bot secrets move from a plain JSON column to a Fernet-sealed text column: existing secrets are
sealed with the configured key (BOTFLEET_SECRETS_KEYS, or the data folder's key) on the way.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "idempotency_records",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("body", JSONType, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_records_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_records")),
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"), "idempotency_records", ["created_at"]
    )
    op.add_column("bots", sa.Column("secrets_sealed", sa.Text(), nullable=True))
    _seal_existing_secrets()
    op.drop_column("bots", "secrets")


def _seal_existing_secrets() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, secrets FROM bots WHERE secrets IS NOT NULL"))
    pending = [(row.id, row.secrets) for row in rows]
    if not pending:
        return
    from botfleet.manager.core.sealing import load_box
    from botfleet.manager.core.settings import get_settings

    box = load_box(get_settings())
    for bot_id, secrets in pending:
        value = json.loads(secrets) if isinstance(secrets, str) else secrets
        connection.execute(
            sa.text("UPDATE bots SET secrets_sealed = :sealed WHERE id = :id"),
            {"sealed": box.seal(value), "id": bot_id},
        )


def downgrade() -> None:
    # Sealed secrets are not unsealed on the way down: they are dropped.
    op.add_column("bots", sa.Column("secrets", JSONType, nullable=True))
    op.drop_column("bots", "secrets_sealed")
    op.drop_index(op.f("ix_idempotency_records_created_at"), table_name="idempotency_records")
    op.drop_table("idempotency_records")
