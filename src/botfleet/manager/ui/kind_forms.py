"""Forms drawn from a kind's JSON Schemas (the start form's config, a command's payload), and
the submitted form read back into the JSON object the API takes.

One field per top-level property: string → text, integer/number → number (min/max),
boolean → checkbox, enum → select, anything else (array, object, a union) → a JSON textarea;
`description` is the help text, `default` is prefilled, `required` is marked. A schema with no
properties to draw, or one that says `additionalProperties` outright, keeps a JSON-object
textarea for the rest. The form only shapes the body: the API's own checks (the kind's schema
included) decide, and their errors (JSON pointers) are shown beside the field they point into.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from botfleet.manager.core.errors import BotfleetError, ErrorCode, Invalid
from botfleet.manager.http.body_guard import refusal
from botfleet.manager.services.kind_checks import pointer

#: Fields drawn from one schema at most; the rest is typed into the JSON textarea.
MAX_FIELDS = 100
#: A form field's text at most (as the API's bounds on a config).
MAX_FIELD_CHARS = 70_000
#: A string longer than this is written in a textarea rather than a one-line input.
LONG_TEXT = 256
_COMBINATORS = ("anyOf", "oneOf", "allOf", "not", "if", "patternProperties", "dependentSchemas")
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class FormField:
    """One input of a form and where its value goes in the JSON body."""

    key: str  # the property's name
    name: str  # the input's name: "<area>.<key>"
    id: str
    widget: str  # text | textarea | number | checkbox | select | json | password
    label: str
    path: str  # JSON pointer of the value in the API's body, e.g. /config/api_url
    help: str = ""
    required: bool = False
    default: str = ""  # the default, as the input shows it
    options: tuple[tuple[str, str], ...] = ()  # a select's (value, label)
    minimum: str | None = None
    maximum: str | None = None
    step: str = "any"
    maxlength: int | None = None
    integer: bool = False
    has_default: bool = False


@dataclass(frozen=True)
class SchemaForm:
    """The fields drawn from one schema, and whether a JSON textarea takes the rest."""

    area: str  # "config" or "payload": the body key, the inputs' prefix
    fields: tuple[FormField, ...] = ()
    extra: bool = True
    description: str = ""

    @property
    def extra_path(self) -> str:
        return "/" + self.area


def _resolve(schema: Any, root: Mapping[str, Any], depth: int = 0) -> Any:
    """A local `$ref` (`#/...`) followed; anything else as it is."""
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and depth < 16:
        ref = schema["$ref"]
        if not ref.startswith("#"):
            return schema
        target: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or part not in target:
                return schema
            target = target[part]
        schema, depth = target, depth + 1
    return schema


def _types(schema: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    """The JSON types a property takes, `null` left out (an empty input is never null)."""
    declared = schema.get("type")
    if isinstance(declared, str):
        types = [declared]
    elif isinstance(declared, list):
        types = [t for t in declared if isinstance(t, str)]
    else:
        types = []
        for choice in schema.get("anyOf") or schema.get("oneOf") or ():
            choice = _resolve(choice, root)
            if isinstance(choice, Mapping) and isinstance(choice.get("type"), str):
                types.append(choice["type"])
            else:
                return []  # a union of shapes: JSON
    return [t for t in types if t != "null"]


def _number_text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return str(value)


def _widget(key: str, schema: Any, root: Mapping[str, Any], area: str, index: int) -> FormField:
    schema = _resolve(schema, root)
    spec: Mapping[str, Any] = schema if isinstance(schema, Mapping) else {}
    title = spec.get("title")
    common: dict[str, Any] = {
        "key": key,
        "name": f"{area}.{key}",
        "id": f"{area}-{re.sub(r'[^A-Za-z0-9_-]', '_', key)[:40]}-{index}",
        "label": str(title) if isinstance(title, str) and title else key,
        "path": pointer((area, key)),
        "help": str(spec.get("description") or ""),
        "has_default": "default" in spec,
    }
    default = spec.get("default")
    enum = spec.get("enum")
    types = _types(spec, root)
    kind = types[0] if len(types) == 1 else None
    if isinstance(enum, list) and enum:
        options = tuple(
            (json.dumps(v), v if isinstance(v, str) else json.dumps(v)) for v in enum[:200]
        )
        chosen = json.dumps(default) if "default" in spec else ""
        return FormField(widget="select", options=options, default=chosen, **common)
    if kind == "boolean":
        return FormField(widget="checkbox", default="1" if default is True else "", **common)
    if kind in ("integer", "number"):
        low = _number_text(spec.get("minimum", spec.get("exclusiveMinimum")))
        high = _number_text(spec.get("maximum", spec.get("exclusiveMaximum")))
        return FormField(
            widget="number",
            minimum=low,
            maximum=high,
            step="1" if kind == "integer" else "any",
            integer=kind == "integer",
            default=_number_text(default) or "",
            **common,
        )
    if kind == "string" and not any(k in spec for k in _COMBINATORS):
        limit = spec.get("maxLength")
        maxlength = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        return FormField(
            widget="textarea" if maxlength is not None and maxlength > LONG_TEXT else "text",
            maxlength=maxlength,
            default=default if isinstance(default, str) else "",
            **common,
        )
    help_text = common.pop("help")
    hint = "JSON" if help_text else "a JSON value"
    return FormField(
        widget="json",
        help=f"{help_text} ({hint})" if help_text else hint,
        default=json.dumps(default, indent=2) if "default" in spec else "",
        **common,
    )


def schema_form(schema: Mapping[str, Any] | None, area: str) -> SchemaForm:
    """The fields of `schema`'s top-level properties; none (a JSON textarea only) for no schema
    or one whose shape is not a plain object of properties."""
    if not isinstance(schema, Mapping):
        return SchemaForm(area=area)
    root = schema
    body = _resolve(schema, root)
    description = str(schema.get("description") or "")
    properties = body.get("properties") if isinstance(body, Mapping) else None
    if not isinstance(properties, Mapping) or not properties:
        return SchemaForm(area=area, description=description)
    if any(k in body for k in _COMBINATORS):
        return SchemaForm(area=area, description=description)
    required = set(body.get("required") or ())
    drawn = []
    for index, (key, prop) in enumerate(list(properties.items())[:MAX_FIELDS]):
        made = _widget(str(key), prop, root, area, index)
        drawn.append(made if key not in required else _required(made))
    open_rest = body.get("additionalProperties", False) not in (False, None)
    return SchemaForm(
        area=area,
        fields=tuple(drawn),
        extra=open_rest or len(properties) > MAX_FIELDS,
        description=description,
    )


def _required(made: FormField) -> FormField:
    return FormField(**{**made.__dict__, "required": True})


def secret_fields(names: tuple[str, ...] | list[str]) -> tuple[FormField, ...]:
    """One password input per secret the kind needs (their values are never shown back)."""
    return tuple(
        FormField(
            key=name,
            name=f"secret.{name}",
            id=f"secret-{re.sub(r'[^A-Za-z0-9_-]', '_', name)}-{index}",
            widget="password",
            label=name,
            path=pointer(("secrets", name)),
            required=True,
        )
        for index, name in enumerate(names)
    )


# ---- reading a submitted form ---------------------------------------------------------------


@dataclass
class FormErrors:
    """Errors found while reading a form, as the API words them: `{path, message}`."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": path, "message": message})

    def raise_if_any(self, code: ErrorCode = ErrorCode.INVALID_INPUT) -> None:
        if self.items:
            first = self.items[0]
            where, message = first["path"].lstrip("/") or "body", first["message"]
            joined = " " if message.startswith(("is ", "must ")) else ": "
            raise Invalid(code, f"{where}{joined}{message}", errors=self.items)


def json_value(text: str, path: str, errors: FormErrors, *, max_depth: int) -> Any:
    """A JSON textarea's value; refused as the API's body guard refuses (depth, NaN)."""
    refused = refusal(text.encode(), max_depth=max_depth)
    if refused is not None:
        errors.add(path, refused[1])
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        errors.add(path, f"is not valid JSON: {exc.msg}")
        return None


def read_fields(
    drawn: SchemaForm,
    submitted: Mapping[str, str],
    errors: FormErrors,
    *,
    max_depth: int,
) -> dict[str, Any]:
    """The object the fields make: the JSON textarea's (if any) first, each field given over it;
    an empty input is left out (never null, never "")."""
    value: dict[str, Any] = {}
    if drawn.extra:
        text = submitted.get(drawn.area, "").strip()
        if text:
            before = len(errors.items)
            rest = json_value(text, drawn.extra_path, errors, max_depth=max_depth)
            if isinstance(rest, dict):
                value.update(rest)
            elif len(errors.items) == before:
                errors.add(drawn.extra_path, "must be a JSON object")
    for made in drawn.fields:
        raw = submitted.get(made.name)
        found = _read(made, raw, errors, max_depth=max_depth)
        if found is not _MISSING:
            value[made.key] = found
    return value


_MISSING = object()


def _read(made: FormField, raw: str | None, errors: FormErrors, *, max_depth: int) -> Any:
    if made.widget == "checkbox":
        if raw:
            return True
        return False if made.has_default or made.required else _MISSING
    text = (raw or "") if made.widget in ("text", "textarea") else (raw or "").strip()
    if text == "":
        return _MISSING
    if made.widget == "number":
        if made.integer:
            if not _INTEGER.match(text):
                errors.add(made.path, "must be a whole number")
                return _MISSING
            return int(text)
        try:
            number = int(text) if _INTEGER.match(text) else float(text)
        except ValueError:
            errors.add(made.path, "must be a number")
            return _MISSING
        if isinstance(number, float) and not math.isfinite(number):
            errors.add(made.path, "must be a finite number")
            return _MISSING
        return number
    if made.widget == "select":
        if text not in {v for v, _ in made.options}:
            errors.add(made.path, "must be one of the choices offered")
            return _MISSING
        return json.loads(text)
    if made.widget == "json":
        found = json_value(text, made.path, errors, max_depth=max_depth)
        return _MISSING if found is None and text != "null" else found
    return text


# ---- errors beside their fields -------------------------------------------------------------


def errors_by_input(
    exc: BotfleetError, inputs: list[FormField], extra_names: Mapping[str, str]
) -> dict[str, str]:
    """Each `{path, message}` of a refusal under the input its path points into (the input's
    name); a path inside a JSON field keeps its inner part. `extra_names` maps a body key (e.g.
    "config") to the JSON textarea that takes what no field does."""
    shown: dict[str, str] = {}
    for error in exc.extra.get("errors") or ():
        path, message = str(error.get("path", "")), str(error.get("message", ""))
        target = _owner(path, inputs)
        if target is not None:
            inner = path[len(target.path) :]
            text = f"{inner.lstrip('/')}: {message}" if inner else message
            name = target.name
        else:
            area = path.lstrip("/").split("/", 1)[0]
            name = extra_names.get(area, "")
            text = f"{path}: {message}" if path else message
        if name and name not in shown:
            shown[name] = text
    return shown


def _owner(path: str, inputs: list[FormField]) -> FormField | None:
    for made in inputs:
        if path == made.path or path.startswith(made.path + "/"):
            return made
    return None


def pydantic_errors(exc: Any) -> list[dict[str, str]]:
    """A pydantic ValidationError as `{path, message}` (pointers into the body)."""
    found = []
    for item in exc.errors()[:20]:
        loc = [p for p in item.get("loc", ()) if p != "body"]
        found.append({"path": pointer(loc), "message": str(item.get("msg", "invalid"))})
    return found


def initial_values(inputs: list[FormField]) -> dict[str, str]:
    """What a fresh form shows: each field's default."""
    return {made.name: made.default for made in inputs if made.default}
