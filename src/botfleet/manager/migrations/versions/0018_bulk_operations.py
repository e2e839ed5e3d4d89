"""bulk operations and their per-bot results

Revision ID: 0018
Revises: 0017
Create Date: 2027-01-20 10:02:00
"""

from collections.abc import Sequence

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
