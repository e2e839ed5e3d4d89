"""A bot found by a piece of its id (issue 29): `GET /bots?id=` takes a prefix or the short id
the CLI and the dashboard show (the last 8 characters), so neither needs the whole UUID back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from botfleet.manager.services.bots import short_id
from tests.support import Manager, RedisServer, running_manager


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    with running_manager(tmp_path_factory.mktemp("short-ids"), redis_server.url) as instance:
        yield instance


def test_a_short_id_or_a_prefix_finds_the_bot_and_only_the_owners(manager: Manager) -> None:
    _, client = manager.new_user(max_bots=5)
    _, other = manager.new_user()
    made = [
        client.post("/bots", json={"bot": "demo", "config": {}, "start_at": "2999-01-01T00:00:00Z"})
    ]
    made.append(
        client.post("/bots", json={"bot": "demo", "config": {}, "start_at": "2999-01-01T00:00:00Z"})
    )
    assert all(m.status_code == 201 for m in made), [m.text for m in made]
    ids = [m.json()["id"] for m in made]

    def found(viewer: object, part: str) -> list[str]:
        answer = viewer.get("/bots", params={"id": part})  # type: ignore[attr-defined]
        assert answer.status_code == 200, answer.text
        return [b["id"] for b in answer.json()["items"]]

    assert found(client, short_id(ids[0])) == [ids[0]]
    assert found(client, short_id(ids[1]).upper()) == [ids[1]]  # case does not matter
    assert found(client, ids[1]) == [ids[1]]  # the whole id
    # Bots made the same minute share a prefix: the short form tells them apart, a prefix lists
    # every match (newest first) so a client can say which are ambiguous.
    assert found(client, ids[0][:8]) == [ids[1], ids[0]]
    assert found(other, short_id(ids[0])) == []  # another user's bot is never found
    refused = client.get("/bots", params={"id": "zz%_"})
    assert refused.status_code == 422 and refused.json()["detail"]["code"] == "invalid_id"
