"""What a bot class declares about itself: its config model, its commands, the secrets it needs.

A Python author writes the shape once, on the `Bot` subclass, and both sides read it from there:
the runtime validates the config and payloads it is given with it, and the kind document
(`botfleet.runtime.kind`) exports it as JSON Schema for the manager, which then refuses a wrong
body before anything is launched.

A model is any class with `model_json_schema()` and `model_validate()` (a pydantic model): the
runtime never imports pydantic, the author's bot does. A payload may also be a JSON Schema dict,
which the manager checks (the runtime hands the dict through as it is).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from botfleet.runtime.protocol import RESERVED_ACTIONS

#: The manager's rule for a custom command's action (schemas/commands.py).
ACTION_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
INVALID_CONFIG: Final = "invalid_config"
INVALID_PAYLOAD: Final = "invalid_payload"
MISSING_SECRET: Final = "missing_secret"
_MARK: Final = "_botfleet_command"
#: How many errors a refusal names; the rest are counted.
MAX_ERRORS_SHOWN: Final = 10

F = TypeVar("F", bound=Callable[..., Any])


class Refused(ValueError):
    """A config, payload or secret set that does not match what the bot declares. `code` is the
    CONTRACT's (`invalid_config`, `invalid_payload`, `missing_secret`), `errors` its
    `[{"path": "/a/b", "message": "…"}]`; str() is `code: /a/b: message; …`, the text that goes
    into an ack's `error` or an `exited` detail."""

    def __init__(self, code: str, errors: list[dict[str, str]]) -> None:
        self.code, self.errors = code, errors
        super().__init__(f"{code}: {describe_errors(errors)}")


def describe_errors(errors: list[dict[str, str]]) -> str:
    shown = [f"{e['path'] or '/'}: {e['message']}" for e in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        shown.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "; ".join(shown)


def is_model(candidate: object) -> bool:
    """Duck-typed: a pydantic model class (or anything shaped like one)."""
    return isinstance(candidate, type) and all(
        callable(getattr(candidate, name, None)) for name in ("model_json_schema", "model_validate")
    )


def validate(model: Any, data: Mapping[str, Any], code: str) -> Any:
    """`model.model_validate(data)`, its failure turned into `Refused(code, errors)` with a JSON
    path per error (pydantic's `loc`), or one error at the root for any other exception."""
    try:
        return model.model_validate(dict(data))
    except Exception as exc:
        raise Refused(code, _errors_of(exc)) from None


def _errors_of(exc: Exception) -> list[dict[str, str]]:
    listed = getattr(exc, "errors", None)
    if callable(listed):
        try:
            items = listed(include_url=False)
        except TypeError:
            items = listed()
        if isinstance(items, list) and items:
            return [
                {"path": json_path(item.get("loc", ())), "message": str(item.get("msg", item))}
                for item in items
                if isinstance(item, dict)
            ]
    return [{"path": "", "message": str(exc) or type(exc).__name__}]


def json_path(loc: Any) -> str:
    """pydantic's `("a", 0, "b")` as a JSON Pointer `/a/0/b` (RFC 6901 escapes)."""
    parts = loc if isinstance(loc, list | tuple) else (loc,)
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def dump(value: Any) -> Any:
    """A model instance as JSON data (`model_dump(mode="json")`); anything else as it is."""
    dumper = getattr(value, "model_dump", None)
    if callable(dumper) and not isinstance(value, type):
        return dumper(mode="json")
    return value


@dataclass(frozen=True)
class CommandSpec:
    """One `@command`: its action, payload (a model, a JSON Schema dict or None: any object),
    the method's name on the class and whether it takes the payload."""

    action: str
    payload: Any
    method: str
    takes_payload: bool
    description: str

    def schema(self) -> dict[str, Any]:
        """The payload's JSON Schema, with the method's docstring as its description."""
        if is_model(self.payload):
            schema: dict[str, Any] = dict(self.payload.model_json_schema())
        elif isinstance(self.payload, Mapping):
            schema = dict(self.payload)
        else:
            schema = {"type": "object"}
        if self.description and "description" not in schema:
            schema["description"] = self.description
        return schema

    async def invoke(self, bot: Any, payload: dict[str, Any]) -> Any:
        """Validate the payload against a model, call the method, dump a model answer."""
        argument: Any = payload
        if is_model(self.payload):
            argument = validate(self.payload, payload, INVALID_PAYLOAD)
        method = getattr(bot, self.method)
        answer = method(argument) if self.takes_payload else method()
        if inspect.isawaitable(answer):
            answer = await answer
        return dump(answer)


def command(
    action: str | Callable[..., Any] | None = None,
    *,
    payload: Any = None,
    description: str | None = None,
) -> Any:
    """Declare a method of a `Bot` subclass as the answer to a custom command.

    `@command("greet", payload=GreetPayload)` (a model: the method receives the validated
    instance, a wrong payload fails the command with `invalid_payload: /path: message`),
    `payload={...}` (a JSON Schema the manager checks; the method receives the dict), or no
    payload (the dict as sent). Bare `@command` names the action after the method. The method
    may be async or not, take the payload or only `self`; its return value (JSON data or a
    model) becomes the command's `result`.
    """
    if callable(action):  # bare @command
        return command(None)(action)
    if payload is not None and not (is_model(payload) or isinstance(payload, Mapping)):
        raise TypeError("payload must be a model class (pydantic) or a JSON Schema dict")
    if action is not None:
        _check_action(action)

    def mark(func: F) -> F:
        name = action or _check_action(func.__name__)
        params = list(inspect.signature(func).parameters.values())[1:]  # after self
        doc = description if description is not None else inspect.getdoc(func) or ""
        spec = CommandSpec(name, payload, func.__name__, bool(params), doc.strip())
        setattr(func, _MARK, spec)
        return func

    return mark


def _check_action(name: str) -> str:
    if not ACTION_PATTERN.fullmatch(name) or name in RESERVED_ACTIONS:
        raise ValueError(
            f"command action {name!r}: snake_case, at most 32 characters, "
            f"not one of {sorted(RESERVED_ACTIONS)}"
        )
    return name


def collect_commands(cls: type) -> dict[str, CommandSpec]:
    """Every `@command` of `cls` and its bases by action; a subclass's declaration wins."""
    found: dict[str, CommandSpec] = {}
    for klass in reversed(cls.__mro__):
        here: dict[str, str] = {}
        for attr in vars(klass).values():
            spec = getattr(attr, _MARK, None)
            if not isinstance(spec, CommandSpec):
                continue
            if spec.action in here:
                raise TypeError(
                    f"{cls.__qualname__}: command {spec.action!r} declared twice "
                    f"({here[spec.action]} and {spec.method})"
                )
            here[spec.action] = spec.method
            found[spec.action] = spec
    return found


def declared_secrets(cls: type) -> tuple[str, ...]:
    """The names in the class attribute `secrets = ("api_key", …)`, or () without one (on an
    instance, `self.secrets` is the dict of values: the class attribute stays the names)."""
    names = getattr(cls, "secrets", ())
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, list | tuple | set | frozenset) or not all(
        isinstance(n, str) for n in names
    ):
        raise TypeError(f"{cls.__qualname__}.secrets must name secrets: a tuple of strings")
    return tuple(dict.fromkeys(sorted(names) if isinstance(names, set | frozenset) else names))


def check_config_model(cls: type) -> Any:
    """The class's `Config`, checked when the class is defined: None or a model class."""
    model = getattr(cls, "Config", None)
    if model is not None and not is_model(model):
        raise TypeError(
            f"{cls.__qualname__}.Config must be a model class with model_json_schema() and "
            "model_validate() (a pydantic BaseModel)"
        )
    return model
