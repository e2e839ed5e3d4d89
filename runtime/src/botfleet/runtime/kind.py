"""The kind document of a bot class: what an operator registers (`POST /admin/kinds`).

`python -m botfleet.runtime kind module:Class [--name N] [--image I]` prints it as JSON, and
`botfleet kinds export` calls the same `kind_document`. It is read from the class's declarations
(`botfleet.runtime.declare`): `Config` gives `config_schema`, the class attribute `secrets` gives
`secrets`, each `@command` gives `commands[action]` (its payload's JSON Schema), the class
docstring's first paragraph gives `description`. A bot that declares no command (one that
overrides `on_command` itself) exports no `commands`, which leaves its actions unchecked.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from typing import Any

from botfleet.runtime.bot import Bot
from botfleet.runtime.declare import declared_secrets
from botfleet.runtime.loader import BUILTIN_BOTS, BotLoadError, load_bot_class


def kind_document(
    spec: str, *, name: str | None = None, image: str | None = None
) -> dict[str, Any]:
    """The POST /admin/kinds body for the bot `spec` (`module:Class` or a built-in name)."""
    bot_class = load_bot_class(spec)
    document: dict[str, Any] = {
        "name": name or default_kind_name(bot_class),
        "run": {"python": BUILTIN_BOTS.get(spec, spec)},
    }
    if image:
        document["image"] = image
    if bot_class.Config is not None:
        document["config_schema"] = bot_class.Config.model_json_schema()
    document["secrets"] = list(declared_secrets(bot_class))
    if bot_class.declared_commands:
        document["commands"] = {
            action: declared.schema()
            for action, declared in sorted(bot_class.declared_commands.items())
        }
    if description := description_of(bot_class):
        document["description"] = description
    return document


def default_kind_name(bot_class: type[Bot]) -> str:
    """`kind_name` on the class, else its name in snake_case without a `_bot` suffix
    (`GreeterBot` -> `greeter`)."""
    explicit = getattr(bot_class, "kind_name", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", bot_class.__name__)
    snake = snake.lower()
    return snake.removesuffix("_bot") or snake


def description_of(bot_class: type) -> str:
    """The first paragraph of the class's own docstring (never an inherited one)."""
    doc = bot_class.__dict__.get("__doc__")
    if not isinstance(doc, str) or not doc.strip():
        return ""
    first = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(first.split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m botfleet.runtime kind",
        description="Print the kind document (POST /admin/kinds) of a bot class, as JSON.",
    )
    parser.add_argument("bot", metavar="module:Class", help="the bot class (or a built-in name)")
    parser.add_argument("--name", help="the kind's name (default: from the class)")
    parser.add_argument("--image", help="the image docker/nomad run it in")
    args = parser.parse_args(argv)
    try:
        document = kind_document(args.bot, name=args.name, image=args.image)
    except (BotLoadError, TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0
