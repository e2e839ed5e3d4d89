"""Where the API listens, where it keeps its files, and the installation's own credentials."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from botfleet.manager.core.settings.area import SettingsArea


class ServerSettings(SettingsArea):
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, description="Port the API listens on.")
    data_dir: Path = Field(
        Path(".botfleet"),
        description="SQLite file, embedded Redis, process logs and the generated admin token.",
    )
    admin_token: str | None = Field(
        None, description="Bearer token for /admin; generated on first start when unset."
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="Proxies whose X-Forwarded-For and X-Forwarded-Proto the manager believes "
        "(comma-separated addresses, or `*`). Unset: none, so a client's address is the "
        "socket's own and a bot on this host cannot pose as another address to the "
        "per-address limits. Set it to your TLS proxy's address when the manager runs behind one.",
    )
    callback_url: str | None = Field(
        None,
        description="Base URL bots use to call the manager back; http://HOST:PORT when unset.",
    )
    fleet_id: str | None = Field(
        None,
        description="Label of this installation's workloads; generated once and kept in the "
        "database when unset.",
    )
    secrets_keys: str | None = Field(
        None,
        description="Fernet keys sealing bot secrets, comma-separated, newest first; one is "
        "generated into the data folder when unset.",
    )
    migrate_on_start: bool = Field(True, description="Run Alembic migrations when serving.")
    bootstrap_user: str | None = Field(
        None,
        description="Create this user with an API key on start when it does not exist "
        "(`make run` uses it to print a ready key).",
    )
