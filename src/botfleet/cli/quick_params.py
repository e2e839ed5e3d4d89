"""Command-line values converted without pydantic, where the answer is certain.

typer 0.29 converts every parameter it reads (a default or an absent value too) with a pydantic
`TypeAdapter`, built on first use. Importing pydantic and building the adapters of a simple
command was a fifth of its time (issue 29: a simple command in under 0.3 s). Most values need
none of it: an absent option, a `str` (what the command line gives), an `int` or a float written
plainly and within its bounds. `quick_value` answers those as typer's adapter would
(test_cli_params.py compares them) and leaves anything else (a Path, an out-of-range or oddly
written number, a parser) to typer's adapter, so that its checks and error messages stay the
same. help_format's parameter classes override `get_runtime_param`, a typer 0.29 method, with
`runtime_param`: a typer without that method never calls the override and converts every value
itself, only slower (test_cli_imports.py then fails: the command imports pydantic)."""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

#: What int() and pydantic read alike: plain decimal digits (no sign, `_`, spaces or `+`).
INTEGER = re.compile(r"-?[0-9]{1,18}")
#: The same for a float: digits, a point, digits (no exponent, `inf`, `nan`).
DECIMAL = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,15})?")


class _Slow:
    """A value left to typer's adapter."""


SLOW = _Slow()


def quick_value(annotation: Any, info: Any, value: Any, *, multiple: bool) -> Any:
    """What typer's adapter turns `value` into, or SLOW when only the adapter can tell.
    `info` is the parameter's typer ParameterInfo; None stands for "no value" as typer has it."""
    if value is None:
        return () if multiple else None
    if info.parser is not None or info.clamp:
        return SLOW
    if not multiple:
        return _leaf(annotation, info, value)
    args = get_args(annotation)
    if get_origin(annotation) is not list or len(args) != 1:
        return SLOW
    if not isinstance(value, list | tuple):
        return SLOW  # a lone string for a list: typer's own error
    items = [_leaf(args[0], info, item) for item in value]
    return SLOW if any(item is SLOW for item in items) else items


def _leaf(annotation: Any, info: Any, value: Any) -> Any:
    kind = type(value)
    if annotation is str or annotation is bool:
        return value if kind is annotation else SLOW
    if annotation is int:
        if kind is str and INTEGER.fullmatch(value):
            value, kind = int(value), int
        return value if kind is int and _within(value, info) else SLOW
    if annotation is float:
        if (kind is str and DECIMAL.fullmatch(value)) or kind is int:
            value, kind = float(value), float
        return value if kind is float and _within(value, info) else SLOW
    return SLOW


def _within(number: float, info: Any) -> bool:
    """Inside the parameter's min/max (outside: typer's adapter says so, in its words)."""
    return (info.min is None or number >= info.min) and (info.max is None or number <= info.max)


def runtime_param(param: Any, typers: Any) -> Any:
    """What typer's `get_runtime_param` gives `param` (typer's own is `typers()`), for the
    parameter classes of help_format to return from theirs."""
    return _QuickRuntimeParam(param, typers)


class _QuickRuntimeParam:
    """What typer's `process_value` calls `coerce` on; typer's adapter is built only when the
    quick conversion cannot answer."""

    def __init__(self, param: Any, typers: Any) -> None:
        self._descriptor, self._typers = param.type_descriptor, typers

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multiple = bool(param.multiple or param.nargs == -1)
        descriptor = self._descriptor
        quick = quick_value(
            descriptor.annotation, descriptor.parameter_info, value, multiple=multiple
        )
        if quick is SLOW:
            return self._typers().coerce(value, param=param, ctx=ctx)
        return quick
