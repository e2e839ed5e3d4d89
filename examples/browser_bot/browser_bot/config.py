"""The browser bot's config, declared with the standard library only.

The runtime accepts any class with `model_json_schema()` and `model_validate()` as a bot's
`Config` (pydantic's shape, duck-typed). This one writes its JSON Schema by hand and checks the
few rules it uses itself, so the example needs nothing beyond the runtime; the manager checks
the same schema (from kind.json) before a bot is even launched.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

#: What a page address may be: the web, or a page made on the spot. Not file: (the bot's files).
URL_PATTERN = r"^(https?://|about:|data:)"

URL = {
    "type": "string",
    "pattern": URL_PATTERN,
    "maxLength": 2048,
    "description": "An http(s), about: or data: address.",
}

SCHEMA: dict[str, Any] = {
    "title": "BrowserConfig",
    "type": "object",
    "properties": {
        "url": {**URL, "description": "The page the bot opens when it starts."},
        "text_chars": {
            "type": "integer",
            "minimum": 0,
            "maximum": 4000,
            "default": 500,
            "description": "How much of the page's visible text a report carries.",
        },
        "load_timeout_s": {
            "type": "number",
            "minimum": 1,
            "maximum": 120,
            "default": 30,
            "description": "Longest wait for a page's load event.",
        },
        "width": {"type": "integer", "minimum": 200, "maximum": 3840, "default": 1280},
        "height": {"type": "integer", "minimum": 200, "maximum": 2160, "default": 720},
        "browser": {
            "type": "string",
            "maxLength": 512,
            "description": "The browser's executable (default: chromium, chromium-browser or "
            "google-chrome, the first on PATH).",
        },
        "sandbox": {
            "type": "boolean",
            "default": True,
            "description": "Keep Chromium's own sandbox (it needs user namespaces; a bot "
            "running as root never has it). false: --no-sandbox.",
        },
    },
    "required": ["url"],
    "additionalProperties": False,
}

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


class ConfigError(ValueError):
    """Shaped like pydantic's ValidationError: `errors()` gives each error's `loc` and `msg`,
    which the runtime turns into `invalid_config` with a JSON path per error."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'/'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self._errors = errors

    def errors(self, include_url: bool = False) -> list[dict[str, Any]]:
        return self._errors


@dataclass(frozen=True)
class BrowserConfig:
    url: str
    text_chars: int = 500
    load_timeout_s: float = 30
    width: int = 1280
    height: int = 720
    browser: str | None = None
    sandbox: bool = True

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        return copy.deepcopy(SCHEMA)

    @classmethod
    def model_validate(cls, data: dict[str, Any]) -> BrowserConfig:
        errors = check(SCHEMA, data)
        if errors:
            raise ConfigError(errors)
        return cls(**data)

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def check(schema: dict[str, Any], data: Any) -> list[dict[str, Any]]:
    """The errors of `data` against a flat object schema of the kind above (the keywords it
    uses: type, required, additionalProperties, minimum, maximum, maxLength, pattern)."""
    if not isinstance(data, dict):
        return [{"loc": (), "msg": "must be an object"}]
    props: dict[str, Any] = schema["properties"]
    errors = [{"loc": (name,), "msg": "field required"} for name in schema.get("required", ())]
    errors = [e for e in errors if e["loc"][0] not in data]
    for name, value in data.items():
        rule = props.get(name)
        if rule is None:
            if schema.get("additionalProperties") is False:
                errors.append({"loc": (name,), "msg": "extra field not allowed"})
            continue
        if message := _check_value(rule, value):
            errors.append({"loc": (name,), "msg": message})
    return errors


def _check_value(rule: dict[str, Any], value: Any) -> str | None:
    wanted = rule["type"]
    is_bool = isinstance(value, bool)
    if not isinstance(value, _TYPES[wanted]) or (is_bool and wanted != "boolean"):
        return f"must be of type {wanted}"
    if "minimum" in rule and value < rule["minimum"]:
        return f"must be at least {rule['minimum']}"
    if "maximum" in rule and value > rule["maximum"]:
        return f"must be at most {rule['maximum']}"
    if not isinstance(value, str):
        return None
    if "maxLength" in rule and len(value) > rule["maxLength"]:
        return f"must be at most {rule['maxLength']} characters"
    if "pattern" in rule and not re.search(rule["pattern"], value):
        return f"must match {rule['pattern']}"
    return None
