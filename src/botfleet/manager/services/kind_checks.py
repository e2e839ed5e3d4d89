"""A kind as the manager uses it (`KindDoc`), and the checks of what users send against it:
a config against its JSON Schema, the secrets it needs, a command and its payload.

Every refusal is one shape, built by `refuse`: 422 with `detail: {code, message, errors: [{path,
message}]}`, each path a JSON pointer (RFC 6901) into what was sent, so a client (the dashboard's
form) can put each message beside its field. Pure functions: no database, no engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from botfleet.manager.core.errors import ErrorCode, Invalid

#: Errors listed in one answer at most: enough to fix a form, never a megabyte of them.
MAX_ERRORS = 20
#: The draft a schema without `$schema` is read as.
DEFAULT_DRAFT = jsonschema.Draft202012Validator


@dataclass(frozen=True)
class KindDoc:
    """One version of a kind: a built-in's document, or a row of the `kinds` table."""

    name: str
    version: int
    run: Mapping[str, Any]  # {"python": "module:Class"} | {"exec": [argv]}
    image: str | None = None
    package: Mapping[str, Any] | None = None
    config_schema: Mapping[str, Any] | None = None
    secrets: tuple[str, ...] = ()
    commands: Mapping[str, Mapping[str, Any]] | None = None
    resources: Mapping[str, Any] | None = None
    placement: Mapping[str, Any] | None = None  # where its bots run unless they name a place
    restart: Mapping[str, Any] | None = None
    health: Sequence[Mapping[str, Any]] | None = None  # its bots' health rules
    description: str = ""
    builtin: bool = False
    created_at: datetime | None = None
    retired_at: datetime | None = None
    #: Actions the kind does not list still go to the bot (its own `unknown_action`). Only the
    #: built-in `demo`, the bot that exercises every path, the bot-side refusal included.
    open_commands: bool = field(default=False, repr=False)

    @property
    def bot_ref(self) -> str:
        """BOTFLEET_BOT for its bots: a built-in's name (the runtime knows it), a Python kind's
        `module:Class`, an `exec` kind's name (its program may read it)."""
        if self.builtin or "python" not in self.run:
            return self.name
        return str(self.run["python"])

    @property
    def command(self) -> tuple[str, ...] | None:
        """An `exec` kind's argv; None: the backend's runtime command."""
        argv = self.run.get("exec")
        return tuple(str(a) for a in argv) if argv else None


def pointer(parts: Iterable[str | int]) -> str:
    """A JSON pointer (RFC 6901): `~` and `/` inside a key escaped."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def refuse(code: ErrorCode, message: str, errors: list[dict[str, str]]) -> Invalid:
    """The one 422 of a body that does not match its kind: `errors` as `[{path, message}]`."""
    shown = errors[:MAX_ERRORS]
    return Invalid(code, message, errors=shown)


def _validator(schema: Mapping[str, Any]) -> Validator:
    cls = jsonschema.validators.validator_for(schema, default=DEFAULT_DRAFT)
    return cls(schema)


def schema_errors(
    schema: Mapping[str, Any], instance: Any, *, at: tuple[str | int, ...] = ()
) -> list[dict[str, str]]:
    """Where and why `instance` does not match `schema`, paths prefixed with `at`; a schema
    whose `$ref` cannot be resolved is one error at the root (remote references are never
    fetched)."""
    try:
        found = sorted(
            _validator(schema).iter_errors(instance), key=lambda e: list(map(str, e.path))
        )
    except (Unresolvable, SchemaError) as exc:
        return [{"path": pointer(at), "message": f"the kind's schema cannot be applied: {exc}"}]
    return [_error(e, at) for e in found[:MAX_ERRORS]]


def _error(error: ValidationError, at: tuple[str | int, ...]) -> dict[str, str]:
    path = [*at, *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        # Point at the missing field itself: that is where a form shows it.
        missing = [n for n in error.validator_value if n not in error.instance]
        if missing:
            path.append(missing[0])
    return {"path": pointer(path), "message": error.message}


def check_schema(schema: Any, *, at: tuple[str | int, ...]) -> list[dict[str, str]]:
    """Whether `schema` is itself a valid JSON Schema (its draft's metaschema); errors point
    into the kind's document (`at`: e.g. ("config_schema",))."""
    if not isinstance(schema, (dict, bool)):
        return [{"path": pointer(at), "message": "a JSON Schema is an object or a boolean"}]
    cls = jsonschema.validators.validator_for(schema, default=DEFAULT_DRAFT)
    found = list(cls(cls.META_SCHEMA).iter_errors(schema))
    errors = [_error(e, at) for e in found[:MAX_ERRORS]]
    if not errors:  # a `$ref` that can never resolve is found on a first use
        try:
            for _ in cls(schema).iter_errors(None):
                pass
        except Unresolvable as exc:
            errors.append({"path": pointer(at), "message": f"unresolvable reference: {exc}"})
    return errors


def check_kind_schemas(document: Mapping[str, Any]) -> None:
    """422 `invalid_schema` unless the config schema and every command's payload schema are
    valid JSON Schemas."""
    errors: list[dict[str, str]] = []
    if document.get("config_schema") is not None:
        errors += check_schema(document["config_schema"], at=("config_schema",))
    for action, schema in (document.get("commands") or {}).items():
        errors += check_schema(schema, at=("commands", action))
    if errors:
        raise refuse(
            ErrorCode.INVALID_SCHEMA, "a schema of the kind is not a valid JSON Schema", errors
        )


def check_config(kind: KindDoc, config: Mapping[str, Any], *, at: str = "config") -> None:
    """422 `invalid_config` unless `config` matches the kind's config schema."""
    if kind.config_schema is None:
        return
    errors = schema_errors(kind.config_schema, config, at=(at,))
    if errors:
        raise refuse(
            ErrorCode.INVALID_CONFIG,
            f"config does not match kind {kind.name!r} (version {kind.version}): "
            f"{errors[0]['path']}: {errors[0]['message']}",
            errors,
        )


def check_secrets(kind: KindDoc, secrets: Mapping[str, str] | None) -> None:
    """422 `missing_secret` unless every secret the kind needs is given (and not empty)."""
    given = secrets or {}
    missing = [name for name in kind.secrets if not given.get(name)]
    if missing:
        raise refuse(
            ErrorCode.MISSING_SECRET,
            f"kind {kind.name!r} needs the secret(s) {', '.join(missing)}",
            [{"path": pointer(("secrets", n)), "message": "required secret"} for n in missing],
        )


def check_command(kind: KindDoc, action: str, payload: Mapping[str, Any]) -> None:
    """422 `unknown_action` for an action the kind does not list, `invalid_payload` for a
    payload that does not match the action's schema. A kind that lists no commands takes any."""
    if kind.commands is None:
        return
    schema = kind.commands.get(action)
    if schema is None:
        if kind.open_commands:
            return
        known = ", ".join(sorted(kind.commands)) or "none"
        raise refuse(
            ErrorCode.UNKNOWN_ACTION,
            f"kind {kind.name!r} has no command {action!r}; it answers: {known}",
            [{"path": "/action", "message": f"not one of: {known}"}],
        )
    errors = schema_errors(schema, payload, at=("payload",))
    if errors:
        raise refuse(
            ErrorCode.INVALID_PAYLOAD,
            f"payload of {action!r} does not match kind {kind.name!r}: "
            f"{errors[0]['path']}: {errors[0]['message']}",
            errors,
        )
