"""per-bot resources and placement

A bot's own CPU and memory (`resources`: `{"cpu": float, "memory_mb": int}`, within the admin's
maxima; null: its kind's, else the backend's defaults) and where it may run (`placement`:
`{"constraints": [...], "node_labels": {...}}`, honoured by the swarm and nomad backends); a
kind's default placement. Existing rows keep null: nothing changes for them.

Revision ID: 0021
Revises: 0020
Create Date: 2027-02-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("bots") as batch:
        batch.add_column(sa.Column("resources", JSONType, nullable=True))
        batch.add_column(sa.Column("placement", JSONType, nullable=True))
    with op.batch_alter_table("kinds") as batch:
        batch.add_column(sa.Column("placement", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("kinds") as batch:
        batch.drop_column("placement")
    with op.batch_alter_table("bots") as batch:
        batch.drop_column("placement")
        batch.drop_column("resources")
