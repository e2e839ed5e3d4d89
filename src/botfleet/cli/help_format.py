"""Help pages that say what to type: `--url URL` and `--wait`, never `--url <str>`, `--wait <bool>`.

typer 0.29 (what `typer>=0.12` installs today) prints a parameter's Python type wherever no
metavar is given, and its Rich help does so even for flags, which take no value (`--help <bool>`),
and for arguments, whose name is already shown. So every value option of the CLI names its metavar
(`KEY=VALUE`, `SECONDS`), and the command classes below print no type for flags and arguments,
and the option's name for an option without a metavar (the manager's own commands have those).
They override `display_type_rich`, a typer 0.29 method: older versions never call it and print
their own help. tests/integration/cli/test_cli.py checks the help pages, so a typer upgrade
that changes this again shows up there. The same classes convert values without pydantic where
they can (`botfleet.cli.quick_params`).
"""

from __future__ import annotations

import copy
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandInfo

from botfleet.cli import quick_params


class _Option(TyperOption):
    def get_runtime_param(self) -> Any:
        return quick_params.runtime_param(self, super().get_runtime_param)

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        descriptor = getattr(self, "type_descriptor", None)
        if self.metavar is None and not getattr(descriptor, "is_choice", False):
            return (self.name or "value").upper()
        return super().display_type_rich(ctx)


class _Argument(TyperArgument):
    def get_runtime_param(self) -> Any:
        return quick_params.runtime_param(self, super().get_runtime_param)

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # its name (metavar) is shown already, in capitals


_PLAIN: dict[type[Any], type[Any]] = {TyperOption: _Option, TyperArgument: _Argument}


def _plain(params: list[Any]) -> list[Any]:
    # typer builds its parameter objects itself, with no way to choose their class; only how they
    # describe themselves in help changes, so re-classing them in place is safe.
    for param in params:
        if plain := _PLAIN.get(type(param)):
            param.__class__ = plain
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


class Typer(typer.Typer):
    """`typer.Typer` whose groups and commands print plain help (the classes above)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


def adopt(info: CommandInfo) -> CommandInfo:
    """A copy of another app's command (the manager's) that prints plain help too."""
    adopted = copy.copy(info)
    if adopted.cls in (None, TyperCommand):
        adopted.cls = Command
    return adopted
