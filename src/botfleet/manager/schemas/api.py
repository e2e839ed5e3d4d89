"""Every request and response body of the public API under one name, for the importers that
want them all; each lives in the module of its resource (the OpenAPI page at `/docs` is
generated from them)."""

from __future__ import annotations

from botfleet.manager.schemas.bots import (
    BOT_REF,
    IMAGE_REF,
    LABEL_KEY,
    MAX_LABELS,
    AttemptPublic,
    BotCreate,
    BotPage,
    BotPublic,
    ConfigPatch,
    ConfigReplace,
    SecretsReplace,
    TransitionPublic,
)
from botfleet.manager.schemas.bounds import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_SECRETS,
    ShortText,
    Strict,
    check_config,
    check_secrets,
)
from botfleet.manager.schemas.callbacks import (
    MAX_REPORT_BYTES,
    MAX_RESULT_BYTES,
    AckIn,
    CallbackIn,
    CallbackOut,
)
from botfleet.manager.schemas.commands import RESERVED_ACTION_NAMES, CommandCreate, CommandPublic
from botfleet.manager.schemas.list_page import Item, Page
from botfleet.manager.schemas.restart import RestartPolicy, RestartPublic, RestartTrigger
from botfleet.manager.schemas.users import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    AuditEntry,
    Scope,
    UserCreate,
    UserPublic,
    UserUpdate,
    UserWithKey,
)

__all__ = [
    "BOT_REF",
    "IMAGE_REF",
    "LABEL_KEY",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_LABELS",
    "MAX_REPORT_BYTES",
    "MAX_RESULT_BYTES",
    "MAX_SECRETS",
    "RESERVED_ACTION_NAMES",
    "AckIn",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyPublic",
    "AttemptPublic",
    "AuditEntry",
    "BotCreate",
    "BotPage",
    "BotPublic",
    "CallbackIn",
    "CallbackOut",
    "CommandCreate",
    "CommandPublic",
    "ConfigPatch",
    "ConfigReplace",
    "Item",
    "Page",
    "RestartPolicy",
    "RestartPublic",
    "RestartTrigger",
    "Scope",
    "SecretsReplace",
    "ShortText",
    "Strict",
    "TransitionPublic",
    "UserCreate",
    "UserPublic",
    "UserUpdate",
    "UserWithKey",
    "check_config",
    "check_secrets",
]
