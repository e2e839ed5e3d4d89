"""A kind's checks (manager/services/kind_checks.py) and the built-in kinds' documents, as pure
functions: JSON pointers, schemas checked against their metaschema, the telegram schema held
against the bot's own pydantic model."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from botfleet.manager.core.errors import Invalid
from botfleet.manager.schemas.kinds import KindCreate
from botfleet.manager.services.builtin_kinds import BUILTIN_KINDS, DEMO, TELEGRAM
from botfleet.manager.services.kind_checks import (
    KindDoc,
    check_command,
    check_config,
    check_kind_schemas,
    check_schema,
    check_secrets,
    pointer,
    schema_errors,
)
from botfleet.runtime.loader import BUILTIN_BOTS
from tests.telegram_scenario import SCENARIO


def refusal(call: Any) -> tuple[str, list[dict[str, str]]]:
    with pytest.raises(Invalid) as refused:
        call()
    return refused.value.code, refused.value.extra["errors"]


def test_pointers_escape_and_point_at_missing_fields() -> None:
    assert pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"
    schema = {"type": "object", "required": ["x"], "properties": {"y": {"type": "integer"}}}
    assert schema_errors(schema, {"y": "1"}, at=("config",)) == [
        {"path": "/config/x", "message": "'x' is a required property"},
        {"path": "/config/y", "message": "'1' is not of type 'integer'"},
    ]


def test_schemas_are_checked_against_their_metaschema() -> None:
    assert check_schema({"type": "object"}, at=("config_schema",)) == []
    assert check_schema(True, at=("c",)) == []
    [error] = check_schema({"type": "objekt"}, at=("config_schema",))
    assert error["path"] == "/config_schema/type"
    assert check_schema("nope", at=("c",))[0]["path"] == "/c"
    unresolvable = check_schema({"$ref": "https://example.invalid/s.json"}, at=("c",))
    assert unresolvable and "unresolvable" in unresolvable[0]["message"]
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    assert check_schema(draft7, at=("c",)) == []
    code, errors = refusal(
        lambda: check_kind_schemas({"config_schema": {"minimum": "x"}, "commands": {"go": []}})
    )
    assert code == "invalid_schema"
    assert [e["path"] for e in errors] == ["/config_schema/minimum", "/commands/go"]


def test_config_secrets_and_commands_against_a_kind() -> None:
    kind = KindDoc(
        name="k",
        version=3,
        run={"exec": ["node", "bot.js"]},
        config_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        secrets=("token",),
        commands={"go": {"type": "object", "required": ["to"]}},
    )
    assert kind.command == ("node", "bot.js") and kind.bot_ref == "k"
    check_config(kind, {"n": 1})
    code, errors = refusal(lambda: check_config(kind, {"n": "one"}))
    assert code == "invalid_config" and errors[0]["path"] == "/config/n"
    check_secrets(kind, {"token": "t"})
    code, errors = refusal(lambda: check_secrets(kind, {"token": ""}))
    assert code == "missing_secret" and errors == [
        {"path": "/secrets/token", "message": "required secret"}
    ]
    check_command(kind, "go", {"to": "x"})
    assert refusal(lambda: check_command(kind, "stop_now", {}))[0] == "unknown_action"
    code, errors = refusal(lambda: check_command(kind, "go", {}))
    assert code == "invalid_payload" and errors[0]["path"] == "/payload/to"
    open_kind = KindDoc(name="o", version=1, run={"python": "m:C"})
    check_command(open_kind, "anything", {"x": 1})  # no commands listed: any action
    assert open_kind.bot_ref == "m:C" and open_kind.command is None


def test_the_demo_kind_still_passes_other_actions_to_the_bot() -> None:
    check_command(DEMO, "dance", {})  # the bot answers unknown_action itself
    check_command(DEMO, "sleep", {"s": -1})  # the bot's own range check answers
    assert refusal(lambda: check_command(DEMO, "sleep", {"s": "x"}))[0] == "invalid_payload"
    check_config(DEMO, {"lang": "en", "crash_after_s": 0.5, "silent": True})


def test_builtin_kinds_are_the_runtimes_builtin_bots_and_valid() -> None:
    assert set(BUILTIN_KINDS) == set(BUILTIN_BOTS)
    for kind in BUILTIN_KINDS.values():
        assert kind.bot_ref == kind.name and kind.builtin and kind.version == 1
        assert kind.run["python"] == BUILTIN_BOTS[kind.name]
        check_kind_schemas({"config_schema": kind.config_schema, "commands": kind.commands})


def test_the_telegram_schema_agrees_with_the_bots_model() -> None:
    """What the manager refuses, the bot refuses too (the bot checks more: step references)."""
    scenario_module = pytest.importorskip("botfleet.runtime.bots.telegram.scenario")
    good = {"language": "en", "api_url": "http://127.0.0.1:1", "poll_timeout_s": 2}
    good["scenario"] = copy.deepcopy(SCENARIO)
    check_config(TELEGRAM, good)
    scenario_module.parse_config(good)
    model_fields = set(scenario_module.TelegramConfig.model_fields)
    assert model_fields == set(TELEGRAM.config_schema["properties"])  # type: ignore[index]
    bad_ones: list[dict[str, Any]] = [
        {**good, "extra": 1},
        {**good, "api_url": "ftp://x"},
        {**good, "poll_timeout_s": 51},
        {k: v for k, v in good.items() if k != "scenario"},
        {**good, "scenario": {"steps": {}}},
        {**good, "scenario": {"steps": {"a": {"message": {}}}}},
        {**good, "scenario": {"steps": {"a b": {"message": {"en": "x"}}}}},
        {**good, "scenario": {"steps": {"a": {"message": {"en": "x"}, "auto": {"goto": "a"}}}}},
    ]
    for bad in bad_ones:
        with pytest.raises(Invalid):
            check_config(TELEGRAM, bad)
        with pytest.raises(scenario_module.ScenarioError):
            scenario_module.parse_config(bad)


def test_kind_names_and_documents() -> None:
    base = {"run": {"python": "m:C"}}
    for name in ("greeter", "my-bot", "my_bot2"):
        KindCreate.model_validate({"name": name, **base})
    for name in ("Greeter", "a:b", "-x", "x-", "x__y", "1x", ""):
        with pytest.raises(ValueError):
            KindCreate.model_validate({"name": name, **base})
    with pytest.raises(ValueError):
        KindCreate.model_validate({"name": "k", "run": {"python": "m:C", "exec": ["x"]}})
    with pytest.raises(ValueError):
        KindCreate.model_validate({"name": "k", "run": {"exec": []}})
    document = KindCreate.model_validate(
        {"name": "k", **base, "resources": {"cpu": 1}, "restart": {"max_retries": 1}}
    ).document()
    assert document["resources"] == {"cpu": 1.0} and document["restart"]["max_retries"] == 1
    assert "name" not in document and document["secrets"] == []
