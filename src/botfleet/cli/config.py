"""Where the CLI connects and with which credential: flags > environment > config file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


class ConfigError(Exception):
    """The config file exists but cannot be used; the user must fix it, not retry."""


def config_path() -> Path:
    """`BOTFLEET_CONFIG`, else the XDG location, so one file serves every shell."""
    if explicit := os.environ.get("BOTFLEET_CONFIG"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "botfleet" / "config.toml"


def read_file(path: Path) -> dict[str, Any]:
    """The file's `url`, `key` and `admin_token`; a missing file is simply empty."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return {k: str(v) for k, v in data.items() if k in {"url", "key", "admin_token"}}


@dataclass(frozen=True)
class Connection:
    """The root options as given; resolved lazily so `serve` never reads the config file."""

    url: str | None = None
    key: str | None = None

    def resolve(self, *, admin: bool = False) -> tuple[str, str | None]:
        """(base URL, bearer token). Admin commands use the admin token instead of the key."""
        env_name, file_name = (
            ("BOTFLEET_ADMIN_TOKEN", "admin_token") if admin else ("BOTFLEET_KEY", "key")
        )
        file: dict[str, Any] | None = None

        def pick(flag: str | None, env: str, field: str) -> str | None:
            nonlocal file
            if flag:
                return flag
            if value := os.environ.get(env):
                return value
            if file is None:
                file = read_file(config_path())
            return file.get(field)

        url = pick(self.url, "BOTFLEET_URL", "url") or DEFAULT_URL
        return url.rstrip("/"), pick(self.key, env_name, file_name)
