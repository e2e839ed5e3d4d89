"""The built-in kinds, `demo` and `telegram`: documents in code (version 1), there without
registration. Their schemas say what the runtime's bots read (runtime/src/botfleet/runtime/
bots/demo.py and bots/telegram/scenario.py; tests/unit/test_kind_checks.py holds the telegram
one against the bot's own pydantic model): the manager never imports a bot to know its shape.
"""

from __future__ import annotations

from typing import Any

from botfleet.manager.services.kind_checks import KindDoc

_TIMER = {"type": ["number", "null"], "minimum": 0}

DEMO_CONFIG: dict[str, Any] = {
    "type": "object",
    "description": "The demo bot idles until told to leave; these switches make it misbehave.",
    "properties": {
        "fail_on_start": {"type": "boolean", "description": "Raise in the start hook."},
        "start_delay_s": {**_TIMER, "description": "Join slowly."},
        "crash_after_s": {**_TIMER, "description": "Raise this long after start."},
        "finish_after_s": {**_TIMER, "description": "Exit on its own (with `exit_code`)."},
        "exit_code": {"type": "integer", "minimum": 0, "maximum": 255},
        "freeze_after_s": {**_TIMER, "description": "Hang: no heartbeats, deaf to SIGTERM."},
        "refuse_reconfigure": {"type": "boolean", "description": "Reject every reconfigure."},
        "ignore_leave": {"type": "boolean", "description": "Keep running after `leave`."},
        "silent": {"type": "boolean", "description": "Never call the manager back."},
        "report_every_s": {**_TIMER, "description": 'Report `{"n": <count>}` this often.'},
        "state_note": {"description": "Print the notes earlier runs left, then add this one."},
    },
    "additionalProperties": True,  # any other key is the bot's to read (and is echoed)
}

DEMO = KindDoc(
    name="demo",
    version=1,
    run={"python": "botfleet.runtime.bots.demo:DemoBot"},
    config_schema=DEMO_CONFIG,
    commands={
        "echo": {"type": "object", "description": "Answers the payload."},
        "sleep": {
            "type": "object",
            "properties": {"s": {"type": "number", "description": "Seconds, 0 to 3600."}},
            "description": "Answers after `s` seconds.",
        },
    },
    description="Idles until told to leave, and misbehaves on request: every lifecycle path "
    "without a real meeting.",
    builtin=True,
    open_commands=True,
)

_NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.-]+$"}
_TEXTS = {
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"minLength": 1, "maxLength": 16, "pattern": "^[A-Za-z_-]+$"},
    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 4096},
    "description": 'A text per language, e.g. {"en": "Hi", "de": "Hallo"}.',
}

TELEGRAM_CONFIG: dict[str, Any] = {
    "type": "object",
    "required": ["scenario"],
    "additionalProperties": False,
    "properties": {
        "language": {"type": "string", "minLength": 1, "maxLength": 16, "pattern": "^[A-Za-z_-]+$"},
        "api_url": {
            "type": "string",
            "pattern": "^https?://",
            "description": "The Bot API server (default https://api.telegram.org).",
        },
        "poll_timeout_s": {"type": "integer", "minimum": 0, "maximum": 50},
        "scenario": {"$ref": "#/$defs/scenario"},
    },
    "$defs": {
        "name": _NAME,
        "texts": _TEXTS,
        "button": {
            "type": "object",
            "required": ["text", "goto"],
            "additionalProperties": False,
            "properties": {"text": {"$ref": "#/$defs/texts"}, "goto": {"$ref": "#/$defs/name"}},
        },
        "auto": {
            "type": "object",
            "required": ["after_s", "goto"],
            "additionalProperties": False,
            "properties": {
                "after_s": {"type": "number", "minimum": 0, "maximum": 7 * 24 * 3600},
                "goto": {"$ref": "#/$defs/name"},
            },
        },
        "step": {
            "type": "object",
            "required": ["message"],
            "additionalProperties": False,
            "properties": {
                "message": {"$ref": "#/$defs/texts"},
                "buttons": {"type": "array", "maxItems": 20, "items": {"$ref": "#/$defs/button"}},
                "collect": {"anyOf": [{"$ref": "#/$defs/name"}, {"type": "null"}]},
                "next": {"anyOf": [{"$ref": "#/$defs/name"}, {"type": "null"}]},
                "auto": {"anyOf": [{"$ref": "#/$defs/auto"}, {"type": "null"}]},
            },
        },
        "scenario": {
            "type": "object",
            "required": ["steps"],
            "additionalProperties": False,
            "properties": {
                "start": {"anyOf": [{"$ref": "#/$defs/name"}, {"type": "null"}]},
                "help": {"anyOf": [{"$ref": "#/$defs/texts"}, {"type": "null"}]},
                "steps": {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": _NAME,
                    "additionalProperties": {"$ref": "#/$defs/step"},
                },
            },
        },
    },
}

TELEGRAM = KindDoc(
    name="telegram",
    version=1,
    run={"python": "botfleet.runtime.bots.telegram:TelegramBot"},
    config_schema=TELEGRAM_CONFIG,
    secrets=("bot_token",),
    commands={
        "stats": {"type": "object", "description": "Answers the bot's counters."},
        "broadcast": {
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 4096}},
            "description": "Sends `text` to every chat the bot knows.",
        },
    },
    description="A scenario bot on the Telegram Bot API (the runtime's `telegram` extra); "
    "its token is the secret `bot_token`.",
    builtin=True,
)

BUILTIN_KINDS: dict[str, KindDoc] = {kind.name: kind for kind in (DEMO, TELEGRAM)}
