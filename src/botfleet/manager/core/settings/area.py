"""The base of every settings area: the shared `BOTFLEET_` prefix, unknown variables ignored."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsArea(BaseSettings):
    """One area's fields; `Settings` composes every area into the one object the manager reads."""

    model_config = SettingsConfigDict(env_prefix="BOTFLEET_", extra="ignore")
