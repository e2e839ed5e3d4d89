"""docs/protocol.md against the code that speaks the protocol: the Python runtime (the reference)
and the Node SDK (sdk/node). A variable, event or envelope field added on one side and not the
others fails here, and so does a signing example or a shared test vector that no longer verifies."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from botfleet.runtime import env, protocol
from botfleet.runtime.protocol import CommandMessage, signing_key, verify_command

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "protocol.md").read_text()
NODE_ENV = (REPO / "sdk" / "node" / "src" / "env.js").read_text()
NODE_PROTOCOL = (REPO / "sdk" / "node" / "src" / "protocol.js").read_text()
VECTORS = REPO / "sdk" / "node" / "test" / "vectors.json"


def section(title: str) -> str:
    """The text of a `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match, f"docs/protocol.md has no section {title!r}"
    return match.group(1)


def python_env_names() -> set[str]:
    return {v for k, v in vars(env).items() if k.isupper() and isinstance(v, str)
            and v.startswith("BOTFLEET_")}  # fmt: skip


def python_events() -> set[str]:
    return {v for k, v in vars(protocol).items() if k.startswith("EVENT_")}


def example(name: str) -> str:
    """The fenced block after `<!-- example:name -->`."""
    match = re.search(rf"<!-- example:{name} -->\n```\w*\n(.*?)\n```", DOC, re.S)
    assert match, f"docs/protocol.md has no example {name!r}"
    return match.group(1)


def test_every_runtime_variable_is_documented_and_every_documented_one_exists() -> None:
    table = section("Environment").split("\n\n### ")[0]
    documented = set(re.findall(r"^\| `(BOTFLEET_[A-Z_]+)` \|", table, re.M))
    assert documented == python_env_names()


def test_the_node_sdk_reads_the_same_variables() -> None:
    node = set(re.findall(r"= '(BOTFLEET_[A-Z_]+)';", NODE_ENV))
    assert node == python_env_names()


def test_every_callback_event_is_documented_and_known_to_node() -> None:
    callbacks = section("Callbacks (bot → manager)")
    documented = set(re.findall(r"^\| `([a-z]+)` \|", callbacks, re.M))
    assert documented == python_events()
    node = set(re.findall(r"EVENT_[A-Z]+ = '([a-z]+)';", NODE_PROTOCOL))
    assert node == python_events()


def test_every_envelope_field_is_documented_and_known_to_node() -> None:
    envelope = {f.name for f in fields(CommandMessage) if f.name != "extra"}
    envelope.add(protocol.SIGNATURE_FIELD)
    table = section("Commands (manager → bot)").split("\n\n### ")[0]
    assert set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M)) == envelope
    node_fields = re.search(r"ENVELOPE_FIELDS = Object\.freeze\(\[(.*?)\]\)", NODE_PROTOCOL, re.S)
    assert node_fields
    assert set(re.findall(r"'([a-z_]+)'", node_fields.group(1))) | {"sig"} == envelope
    for action in protocol.RESERVED_ACTIONS:
        assert f"`{action}`" in DOC


def test_the_signing_example_verifies() -> None:
    token, key = example("token"), example("key")
    assert signing_key(token) == key
    message = json.loads(example("message"))
    assert verify_command(message, key)
    unsigned = {k: v for k, v in message.items() if k != "sig"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"))
    assert canonical == example("canonical")
    assert f"`{message['sig']}`" in DOC
    assert not verify_command(message | {"config_version": 4}, key)


def test_the_node_sdks_test_vectors_verify_in_python() -> None:
    """sdk/node/test/vectors.json (floats, huge integers, non-ASCII, key order) is what the Node
    SDK's canonical JSON is tested against: each message must be the manager's own signature."""
    vectors = json.loads(VECTORS.read_text())
    assert signing_key(vectors["token"]) == vectors["key"]
    for raw in vectors["messages"]:
        assert verify_command(json.loads(raw), vectors["key"]), raw
