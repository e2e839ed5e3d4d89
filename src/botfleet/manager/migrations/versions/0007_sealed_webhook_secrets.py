"""sealed webhook secrets

Webhook signing secrets were stored in clear; from here on only their sealed form is kept
(`secret_sealed`, the same SecretBox as bot secrets). Existing secrets are sealed here, in the
migration's own transaction, so no clear value outlives the upgrade and no code path ever has
to tell a clear value from a sealed one.

The keys come the way the manager gets them: `botfleet.manager.migrate.upgrade` hands the migration
the manager's settings (`botfleet serve` and `botfleet migrate` do); run by Alembic's own command,
the settings are read from the environment (`BOTFLEET_SECRETS_KEYS`, else the data folder's
`secrets.key`). They are loaded only when there is something to seal, so a fresh database never
creates a key file. Run it with the same settings as the managers, or their deliveries cannot
be signed (each such attempt fails with `cannot sign`, and is retried, until the key is back).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from botfleet.manager.core.sealing import SecretBox, load_box
from botfleet.manager.core.settings import Settings, get_settings

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

endpoints = sa.table(
    "webhook_endpoints",
    sa.column("id", sa.String),
    sa.column("secret", sa.String),
    sa.column("secret_sealed", sa.Text),
)


def _box() -> SecretBox:
    settings: Settings | None = context.config.attributes.get("settings")
    return load_box(settings or get_settings())


def upgrade() -> None:
    op.add_column("webhook_endpoints", sa.Column("secret_sealed", sa.Text(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(endpoints.c.id, endpoints.c.secret)).all()
    if rows:
        box = _box()
        for endpoint_id, secret in rows:
            bind.execute(
                endpoints.update()
                .where(endpoints.c.id == endpoint_id)
                .values(secret_sealed=box.seal_text(secret))
            )
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("secret")
        batch.alter_column("secret_sealed", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    op.add_column("webhook_endpoints", sa.Column("secret", sa.String(200), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(endpoints.c.id, endpoints.c.secret_sealed)).all()
    if rows:
        box = _box()
        for endpoint_id, sealed in rows:
            bind.execute(
                endpoints.update()
                .where(endpoints.c.id == endpoint_id)
                .values(secret=box.open_text(sealed))
            )
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("secret_sealed")
        batch.alter_column("secret", existing_type=sa.String(200), nullable=False)
