"""Issue 14, item 2: a user may name only the images the operator allows.

Before the allow-list, any `image` was accepted and handed to the engine (Nomad even pulls it,
with the host's network). Each attack below names an image that is not allowed and asserts the
answer is 422 `image_not_allowed` with no record written; the matcher is tested on its own too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support import RUNTIME_IMAGE, Manager, RedisServer, running_manager, wait_for_status

LATER = "2099-01-01T00:00:00Z"  # a scheduled start keeps a bot `requested`: nothing launches
DIGEST = "sha256:" + "a" * 64
HOST_IMAGE = "botfleet-manager:latest"  # on the engine (make test builds it), never allowed


def bot_count(client: httpx.Client) -> int:
    answer = client.get("/bots", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return len(answer.json()["items"])


def assert_refused(client: httpx.Client, image: str) -> dict[str, str]:
    """POST the image; it must be 422 `image_not_allowed` and leave no bot behind."""
    before = bot_count(client)
    answer = client.post("/bots", json={"bot": "demo", "config": {}, "image": image})
    assert answer.status_code == 422, (image, answer.text)
    detail: dict[str, str] = answer.json()["detail"]
    assert detail["code"] == "image_not_allowed", (image, detail)
    assert bot_count(client) == before, f"{image}: a record was written"
    return detail


# ---- the matcher -----------------------------------------------------------------------------


# ---- against a real manager ------------------------------------------------------------------


@pytest.fixture(scope="module")
def patterned(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    env = {"BOTFLEET_ALLOWED_IMAGES": json.dumps(["registry.internal/bots/*"])}
    with running_manager(tmp_path_factory.mktemp("images"), redis_server.url, extra_env=env) as m:
        yield m


@pytest.fixture(scope="module")
def docker_manager(
    docker_engine: None, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("images-docker")
    with running_manager(root, redis_server.url, backend="docker") as instance:
        yield instance


def test_the_process_backend_allows_no_image_by_default(manager: Manager) -> None:
    _, client = manager.new_user()
    for image in (RUNTIME_IMAGE, "evil/botfleet-runtime", HOST_IMAGE):
        assert_refused(client, image)
    plain = client.post("/bots", json={"bot": "demo", "config": {}, "start_at": LATER})
    assert plain.status_code == 201, "no image named: the backend's own"
    client.post(f"/bots/{plain.json()['id']}/stop")


def test_a_pattern_allows_matching_images_and_refuses_lookalikes(patterned: Manager) -> None:
    _, client = patterned.new_user()
    for image in ("registry.internal/bots/runner:2", "registry.internal/bots/runner"):
        answer = client.post(
            "/bots", json={"bot": "demo", "config": {}, "image": image, "start_at": LATER}
        )
        assert answer.status_code == 201, (image, answer.text)
        assert answer.json()["image"] == image
        client.post(f"/bots/{answer.json()['id']}/stop")
    for image in (
        "registry.internal/bots/team/runner",
        "registry.internal/botsevil/runner",
        "registry.internal.evil.com/bots/runner",
        RUNTIME_IMAGE,  # the operator's list replaces the default
    ):
        detail = assert_refused(client, image)
        assert "registry.internal/bots/*" not in detail["message"], "the list is not disclosed"


def test_docker_runs_the_runtime_image_under_any_spelling_and_nothing_else(
    docker_manager: Manager,
) -> None:
    _, client = docker_manager.new_user()
    spelled = "docker.io/library/botfleet-runtime"  # == botfleet-runtime:latest
    bot = client.post("/bots", json={"bot": "demo", "config": {}, "image": spelled})
    assert bot.status_code == 201, bot.text
    wait_for_status(client, bot.json()["id"], {"active"})
    client.post(f"/bots/{bot.json()['id']}/stop")

    # An image that exists on the engine and one that does not answer alike: the refusal
    # comes before the engine is asked, so it cannot be used to probe the host's images.
    present = assert_refused(client, HOST_IMAGE)
    absent = assert_refused(client, "botfleet-no-such-image:1")
    assert present["message"].replace(HOST_IMAGE, "X") == absent["message"].replace(
        "botfleet-no-such-image:1", "X"
    )
    for lookalike in (
        "botfleet-runtime:latest.evil",
        "evil/botfleet-runtime",
        f"botfleet-runtime@{DIGEST}",
    ):
        assert_refused(client, lookalike)
    wait_for_status(client, bot.json()["id"], {"completed", "failed"})
