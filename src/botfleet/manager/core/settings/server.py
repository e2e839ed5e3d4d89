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
        description="Base URL bots use to call the manager back; http://HOST:CALLBACK_PORT "
        "when unset.",
    )
    callback_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port bots' callbacks (/internal/…) are served on, apart from the API's "
        "port (which answers them 404); 0: a free port the kernel picks at start.",
    )
    api_max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections the API port holds at most; past it a new connection "
        "is answered 503 and closed.",
    )
    callback_max_connections: int = Field(
        10000,
        ge=1,
        description="Open connections the bots' callback port holds at most; past it a new "
        "connection is answered 503 and closed, and no bot is judged silent meanwhile.",
    )
    callback_max_connections_per_address: int = Field(
        0,
        ge=0,
        description="Open connections one client address holds at most on the callback port "
        "(0: no such cap). Useful where bots have their own addresses (a Docker bridge "
        "network, Nomad); on the process backend and host networking every bot is 127.0.0.1.",
    )
    callback_connections_per_bot: int = Field(
        4,
        ge=1,
        description="Connections a bot keeps open to the callback port: a connection is the "
        "bot's once a request of its own was answered; past this many, the answer closes it.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Seconds a connection has to send a whole request head (on both ports), "
        "counted from when it opens or its previous answer ended; then it is closed.",
    )
    keep_alive_s: float = Field(
        5.0, gt=0, description="Seconds an idle keep-alive connection stays open (both ports)."
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
