"""The CLI converts command-line values without pydantic where it can (botfleet.cli.quick_params)
and must then give exactly what typer's own conversion gives: the same value of the same type.
Where it cannot tell, it hands the value to typer, whose checks and error messages stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer._adapters import build_adapter
from typer.models import ArgumentInfo, OptionInfo
from typer.testing import CliRunner

from botfleet.cli.main import app
from botfleet.cli.quick_params import SLOW, quick_value

BOUNDED_INT = {"min": 1, "max": 1000}
BOUNDED_FLOAT = {"min": 0.2}
#: (annotation, ParameterInfo options, value as typer hands it over, and does quick answer?)
CASES: list[tuple[Any, dict[str, Any], Any, bool]] = [
    (str, {}, "abc", True),
    (str, {}, "", True),
    (str, {}, "a\udcffb\x00 [x] é", True),  # undecodable argv bytes, NUL, markup, non-ASCII
    (bool, {}, True, True),
    (bool, {}, "true", False),
    (int, {}, "42", True),
    (int, {}, "-7", True),
    (int, {}, "05", True),
    (int, {}, 3, True),
    (int, {}, " 5", False),
    (int, {}, "+5", False),
    (int, {}, "1_000", False),
    (int, {}, "1e3", False),
    (int, {}, "9" * 30, False),
    (int, {}, True, False),
    (int, BOUNDED_INT, "1", True),
    (int, BOUNDED_INT, "1000", True),
    (int, BOUNDED_INT, "0", False),
    (int, BOUNDED_INT, "1001", False),
    (int, {"min": 0, "clamp": True}, "-3", False),
    (float, {}, "2.5", True),
    (float, {}, "2", True),
    (float, {}, 120.0, True),
    (float, {}, 30, True),
    (float, {}, "2.", False),
    (float, {}, "1e3", False),
    (float, {}, "nan", False),
    (float, BOUNDED_FLOAT, "0.2", True),
    (float, BOUNDED_FLOAT, "0.1", False),
    (Path, {}, "some/file.json", False),
]


def typers(annotation: Any, options: dict[str, Any], value: Any) -> Any:
    """What typer 0.29's pydantic adapter makes of `value`, or the error it raises."""
    try:
        return build_adapter(annotation, OptionInfo(**options)).validate_python(value)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return exc


@pytest.mark.parametrize(("annotation", "options", "value", "quick"), CASES)
def test_a_quick_value_is_typers_value(
    annotation: Any, options: dict[str, Any], value: Any, quick: bool
) -> None:
    got = quick_value(annotation, OptionInfo(**options), value, multiple=False)
    assert (got is not SLOW) == quick
    if quick:
        expected = typers(annotation, options, value)
        assert got == expected and type(got) is type(expected)


def test_lists_absent_values_and_parsers() -> None:
    info = OptionInfo()
    assert quick_value(list[str], info, ("a", "b"), multiple=True) == ["a", "b"]
    assert quick_value(list[str], info, (), multiple=True) == []
    assert quick_value(list[int], info, ("1", "2"), multiple=True) == [1, 2]
    assert quick_value(list[int], info, ("1", "x"), multiple=True) is SLOW
    assert quick_value(list[str], info, "a", multiple=True) is SLOW  # typer's own error
    assert quick_value(list[str], ArgumentInfo(), None, multiple=True) == ()
    assert quick_value(str, info, None, multiple=False) is None
    assert quick_value(tuple[str, int], info, ("a", "1"), multiple=False) is SLOW
    assert quick_value(str, OptionInfo(parser=str.upper), "a", multiple=False) is SLOW
    assert quick_value(str, OptionInfo(parser=str.upper), None, multiple=False) is None


def test_values_quick_cannot_tell_still_get_typers_checks(tmp_path: Path) -> None:
    """Out of range, oddly written, not a number: typer's own messages, exit 2."""
    runner = CliRunner()
    env = {"BOTFLEET_CONFIG": str(tmp_path / "absent.toml"), "COLUMNS": "200"}
    for args, message in (
        (["bots", "ls", "--limit", "0"], "greater than or equal to 1"),
        (["bots", "ls", "--limit", "many"], "valid integer"),
        (["bots", "ls", "--interval", "0.1"], "greater than or equal to 0.2"),
    ):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, result.output
        assert message in result.output, result.output
