"""API key names, scopes, expiry and last use; disabled users; actors; the admin audit log

- `api_keys` gets `name`, `scopes` (space-separated: `bots:read bots:write`), `expires_at` and
  `last_used_at` (written at most once a minute per key, `manager/hot_path/key_usage.py`). Existing
  keys get both scopes and no expiry: they keep doing what they did.
- `users.disabled_at`: a disabled user's keys all answer 401; its bots run on.
- `bot_transitions.actor` and `commands.actor`: who caused it (`key:<key id>`, `admin`,
  `runtime`, `reconciler`, `scheduler`, `orchestrator`). Rows written before say what their
  `source` said (transitions) or `api` (commands): their key was never recorded.
- `admin_audit`: one row per admin action (user created, limit changed, key created or
  revoked, user disabled), read newest first by `GET /admin/audit`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-18 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

TIME = sa.DateTime(timezone=True)


revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
        batch.add_column(
            sa.Column(
                "scopes", sa.String(100), nullable=False, server_default="bots:read bots:write"
            )
        )
        batch.add_column(sa.Column("expires_at", TIME, nullable=True))
        batch.add_column(sa.Column("last_used_at", TIME, nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled_at", TIME, nullable=True))
    with op.batch_alter_table("bot_transitions") as batch:
        batch.add_column(sa.Column("actor", sa.String(64), nullable=True))
    op.execute("UPDATE bot_transitions SET actor = source WHERE actor IS NULL")
    with op.batch_alter_table("commands") as batch:
        batch.add_column(sa.Column("actor", sa.String(64), nullable=True))
    op.execute("UPDATE commands SET actor = 'api' WHERE actor IS NULL")
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=True),
        sa.Column("change", JSONType, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_audit")),
    )
    op.create_index("ix_admin_audit_user_id_id", "admin_audit", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_admin_audit_user_id_id", table_name="admin_audit")
    op.drop_table("admin_audit")
    with op.batch_alter_table("commands") as batch:
        batch.drop_column("actor")
    with op.batch_alter_table("bot_transitions") as batch:
        batch.drop_column("actor")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
        batch.drop_column("scopes")
        batch.drop_column("name")
