"""webhook fairness and exact idempotent replays

Each webhook endpoint gets its circuit breaker's state: `consecutive_failures`, `failing_since`
(the first failure of the current streak), `paused_until` and `pause_s` (the length of the
last pause, doubled at each new trip up to a cap; 0 when the breaker is closed).

Idempotency records keep the first answer's exact bytes in `answer` (JSONB reorders an
object's keys, so a replay rendered from `body` was not byte-for-byte the first answer).
Records written before keep their `body`, still replayed from it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(
            sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pause_s", sa.Float(), nullable=False, server_default="0"))
    op.add_column("idempotency_records", sa.Column("answer", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("idempotency_records", "answer")
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("pause_s")
        batch.drop_column("paused_until")
        batch.drop_column("failing_since")
        batch.drop_column("consecutive_failures")
