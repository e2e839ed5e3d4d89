"""A bot's declarations in a real runtime process (`python -m botfleet.runtime`): a config or a
secret set its class refuses ends the start with the declaration's code and each error's path;
`@command` payloads are validated and answered through the real command path; `python -m
botfleet.runtime kind` prints the kind document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.runtime.test_runtime_process import (
    FakeManager,
    base_env,
    finish,
    wait_until,
)
from tests.support import REPO

GREETER = "tests.bots.greeter:GreeterBot"
SECRETS = json.dumps({"api_key": "k-123"})


@pytest.fixture
def fake_manager() -> Iterator[FakeManager]:
    manager = FakeManager()
    yield manager
    manager.server.shutdown()


def spawn(manager: FakeManager, config: dict[str, Any], **extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTFLEET_")}
    env.update(
        base_env(
            BOTFLEET_CALLBACK_URL=manager.url,
            BOTFLEET_BOT=GREETER,
            BOTFLEET_BOT_CONFIG=json.dumps(config),
            **extra,
        )
    )
    return subprocess.Popen(
        [sys.executable, "-m", "botfleet.runtime"], env=env, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_config_the_model_refuses_ends_the_start(fake_manager: FakeManager) -> None:
    proc = spawn(fake_manager, {"repeat": 9, "greeting": []}, BOTFLEET_BOT_SECRETS=SECRETS)
    code, out, err = finish(proc)
    assert code == 1, err
    assert fake_manager.names() == ["exited"]
    exited = fake_manager.lifecycle()[0]
    assert (exited["exit_code"], exited["reason"]) == (1, "invalid_config")
    assert exited["detail"].startswith("/greeting: Input should be a valid string; /repeat: ")
    assert "Traceback" not in err  # the user's input, not a bug
    assert "greeter started" not in out


def test_a_missing_secret_ends_the_start(fake_manager: FakeManager) -> None:
    code, _, err = finish(spawn(fake_manager, {}))
    assert code == 1, err
    exited = fake_manager.lifecycle()[0]
    assert (exited["reason"], exited["detail"]) == (
        "missing_secret",
        "/api_key: required secret is missing",
    )


def test_declared_commands_through_the_runtime(fake_manager: FakeManager) -> None:
    """Commands read as pending over HTTP (the Redis URL leads nowhere): each declared command
    answered, a wrong payload and a wrong config refused with their paths, an unknown action
    `unknown_action`."""
    fake_manager.pending = [
        {"id": "c1", "action": "greet", "payload": {"name": "Ada"}, "issued_at": ""},
        {"id": "c2", "action": "greet", "payload": {"name": 3}, "issued_at": ""},
        {"id": "c3", "action": "reconfigure", "config": {"repeat": 0}, "issued_at": ""},
        {"id": "c4", "action": "dance", "payload": {}, "issued_at": ""},
        {"id": "c5", "action": "key_length", "payload": {}, "issued_at": ""},
    ]
    proc = spawn(fake_manager, {"greeting": "hi"}, BOTFLEET_BOT_SECRETS=SECRETS)
    try:
        wait_until(lambda: {cid for cid, _ in fake_manager.acks} >= {"c1", "c2", "c3", "c4", "c5"})
    finally:
        proc.terminate()
    code, out, err = finish(proc)
    assert code == 0, err
    first = {}
    for cid, body in fake_manager.acks:
        first.setdefault(cid, body)
    assert first["c1"] == {"ok": True, "result": {"text": "hi Ada"}}
    assert first["c2"] == {"ok": False, "error": "invalid_payload: /name: Input should be a "
                           "valid string"}  # fmt: skip
    assert first["c3"]["ok"] is False
    assert first["c3"]["error"].startswith("invalid_config: /repeat: ")
    assert first["c4"] == {"ok": False, "error": "unknown_action"}
    assert first["c5"] == {"ok": True, "result": 5}
    assert "k-123" not in out + err


def test_python_m_runtime_kind_prints_the_document() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "botfleet.runtime", "kind", GREETER, "--name", "hello"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["name"] == "hello" and document["run"] == {"python": GREETER}
    assert set(document["commands"]) == {"greet", "count", "key_length"}
    bad = subprocess.run(
        [sys.executable, "-m", "botfleet.runtime", "kind", "nope:Nope"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "cannot import 'nope'" in bad.stderr
