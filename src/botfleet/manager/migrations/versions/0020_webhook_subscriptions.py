"""webhook endpoints with event types, label filters and headers

A user may have several endpoints (`POST /webhooks`), each a row of `webhook_endpoints` with
`subscription` true and its own filters: `events` (null: every type), `label_filter` (null: every
bot), custom headers sealed like the signing secret (`headers_sealed`, with `header_names` in
clear), and a `name`. The one `PUT /webhook` endpoint per user stays unique: its partial index now
leaves the subscriptions out. Existing endpoints are not subscriptions, and keep the types they
were sent (`bot.transition`, `bot.report`), now written in their `events`.

Revision ID: 0020
Revises: 0019
Create Date: 2027-01-20 10:04:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
DEFAULT_INDEX = "uq_webhook_endpoints_user_default"
V2_EVENTS = ["bot.transition", "bot.report"]  # what v1/v2 endpoints were sent


def _default_index(where: str) -> None:
    op.create_index(
        DEFAULT_INDEX,
        "webhook_endpoints",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    op.drop_index(DEFAULT_INDEX, table_name="webhook_endpoints")
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(
            sa.Column("subscription", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("events", JSONType, nullable=True))
        batch.add_column(sa.Column("label_filter", JSONType, nullable=True))
        batch.add_column(sa.Column("headers_sealed", sa.Text(), nullable=True))
        batch.add_column(sa.Column("header_names", JSONType, nullable=True))
    _default_index("bot_id IS NULL AND NOT subscription")
    endpoints = sa.table("webhook_endpoints", sa.column("events", JSONType))
    op.execute(endpoints.update().values(events=V2_EVENTS))


def downgrade() -> None:
    # Subscriptions have no place in the older schema (one user-level endpoint each).
    subscriptions = "SELECT id FROM webhook_endpoints WHERE subscription"
    deliveries = f"SELECT id FROM webhook_deliveries WHERE endpoint_id IN ({subscriptions})"
    op.execute(sa.text(f"DELETE FROM webhook_attempts WHERE delivery_id IN ({deliveries})"))
    op.execute(sa.text(f"DELETE FROM webhook_deliveries WHERE endpoint_id IN ({subscriptions})"))
    op.execute(sa.text("DELETE FROM webhook_endpoints WHERE subscription"))
    op.drop_index(DEFAULT_INDEX, table_name="webhook_endpoints")
    with op.batch_alter_table("webhook_endpoints") as batch:
        for column in (
            "header_names",
            "headers_sealed",
            "label_filter",
            "events",
            "name",
            "subscription",
        ):
            batch.drop_column(column)
    _default_index("bot_id IS NULL")
