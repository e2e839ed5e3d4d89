"""Secrets at rest, bots' secrets and webhook signing secrets alike: sealed with Fernet
(AES-128-CBC + HMAC-SHA256, from `cryptography`).

Keys come from `BOTFLEET_SECRETS_KEYS` (comma-separated Fernet keys, newest first): the first
seals, every key opens, so a key can be rotated without downtime (see SECURITY.md). With none set,
the embedded default generates one key into the data folder, readable by the owner only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from botfleet.manager.core.settings import Settings


class SecretsUnreadable(Exception):
    """No configured key opens these secrets (a key was dropped too early)."""


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is needed")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def seal(self, secrets: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(secrets).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        try:
            return dict(json.loads(self._fernet.decrypt(sealed.encode())))
        except InvalidToken as exc:
            raise SecretsUnreadable("no configured key opens these secrets") from exc

    def seal_text(self, value: str) -> str:
        """One secret string sealed (a webhook's signing secret)."""
        return self._fernet.encrypt(value.encode()).decode()

    def open_text(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise SecretsUnreadable("no configured key opens this secret") from exc

    def reseal(self, sealed: str) -> str:
        """The same secrets sealed with the newest key (for key rotation)."""
        return self._fernet.rotate(sealed.encode()).decode()


def load_box(settings: Settings) -> SecretBox:
    if settings.secrets_keys:
        return SecretBox([k.strip() for k in settings.secrets_keys.split(",") if k.strip()])
    path: Path = settings.data_dir / "secrets.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
    return SecretBox([path.read_text().strip()])
