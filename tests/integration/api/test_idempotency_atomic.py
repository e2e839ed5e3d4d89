"""`Idempotency-Key` is claimed, worked on and answered in one transaction: a request that fails
leaves nothing behind, parallel duplicates all get the one answer, a claim whose request died is
taken over, and a replay is the first answer byte for byte."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from botfleet.manager.core.db import make_engine, make_session_factory, transaction
from botfleet.manager.core.models import IdempotencyRecord, utcnow
from botfleet.manager.schemas.api import BotCreate
from botfleet.manager.services.idempotency import fingerprint
from tests.support import Manager, RedisServer, running_manager

LATER = "2099-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    root = tmp_path_factory.mktemp("idempotency")
    env = {"BOTFLEET_IDEMPOTENCY_CLAIM_TIMEOUT_S": "60"}
    with running_manager(root, redis_server.url, extra_env=env) as instance:
        yield instance


@pytest.fixture(scope="module")
def sessions(manager: Manager) -> Iterator[sessionmaker[Session]]:
    """The manager's own database, read and written behind its back."""
    engine = make_engine(manager.database_url)
    yield make_session_factory(engine)
    engine.dispose()


def record_of(sessions: sessionmaker[Session], user_id: str, key: str) -> IdempotencyRecord | None:
    with sessions() as session:
        return session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
            )
        )


def bots_of(client: httpx.Client) -> list[dict[str, Any]]:
    answer = client.get("/bots")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_a_request_that_fails_leaves_no_claim_and_its_retry_works_once(
    manager: Manager, sessions: sessionmaker[Session]
) -> None:
    user, client = manager.new_user()
    body = {"bot": "demo", "config": {}, "start_at": LATER, "dedup_key": "nightly"}
    first = client.post("/bots", json=body)
    assert first.status_code == 201, first.text

    # The key is claimed, then the work is refused (a live bot has this dedup_key): 409.
    key = {"Idempotency-Key": "after-a-failure"}
    refused = client.post("/bots", json=body, headers=key)
    assert refused.status_code == 409 and refused.json()["detail"]["code"] == "duplicate_bot"
    assert record_of(sessions, user["id"], "after-a-failure") is None, "a claim outlived its work"

    # Once the other bot has ended, the retry with the same key does the work, and only once.
    assert client.post(f"/bots/{first.json()['id']}/stop").status_code == 202
    retried = client.post("/bots", json=body, headers=key)
    assert retried.status_code == 201, retried.text
    again = client.post("/bots", json=body, headers=key)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == retried.json()["id"]
    assert len(bots_of(client)) == 2, "the first bot and exactly one made with the key"


def test_parallel_duplicates_create_one_bot_and_all_get_its_answer(manager: Manager) -> None:
    _, client = manager.new_user()
    body = {"bot": "demo", "config": {"n": 1}, "start_at": LATER}
    answers: list[httpx.Response] = []
    ready = threading.Barrier(10)

    def post() -> None:
        with httpx.Client(base_url=manager.url, headers=client.headers, timeout=60) as own:
            ready.wait()
            answers.append(own.post("/bots", json=body, headers={"Idempotency-Key": "same"}))

    threads = [threading.Thread(target=post) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [201] * 10, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1, "every duplicate answers the one bot"
    assert sum(a.headers.get("Idempotent-Replayed") != "true" for a in answers) == 1
    assert len(bots_of(client)) == 1


def test_a_claim_whose_request_died_is_taken_over(
    manager: Manager, sessions: sessionmaker[Session]
) -> None:
    """A claim with no answer, as a request that died between claiming and answering left it
    (earlier versions claimed in a transaction of its own)."""
    user, client = manager.new_user()
    body = {"bot": "demo", "config": {}, "start_at": LATER, "name": "taken-over"}
    mark = fingerprint("POST /bots", BotCreate.model_validate(body).model_dump(mode="json"))
    with transaction(sessions) as session:
        for key, age_s in (("stale", 300), ("fresh", 0)):
            session.add(
                IdempotencyRecord(
                    user_id=user["id"],
                    key=key,
                    fingerprint=mark,
                    created_at=utcnow() - timedelta(seconds=age_s),
                )
            )

    # A claim younger than a request may take is still in progress: 409, nothing created.
    busy = client.post("/bots", json=body, headers={"Idempotency-Key": "fresh"})
    assert busy.status_code == 409 and busy.json()["detail"]["code"] == "idempotency_in_progress"
    assert bots_of(client) == []

    taken = client.post("/bots", json=body, headers={"Idempotency-Key": "stale"})
    assert taken.status_code == 201, taken.text
    replay = client.post("/bots", json=body, headers={"Idempotency-Key": "stale"})
    assert replay.status_code == 201 and replay.json()["id"] == taken.json()["id"]
    assert [b["id"] for b in bots_of(client)] == [taken.json()["id"]]
    record = record_of(sessions, user["id"], "stale")
    assert record is not None and record.status_code == 201


def test_a_replay_is_the_first_answer_byte_for_byte(manager: Manager) -> None:
    _, client = manager.new_user()
    # Keys out of any sorted order, nested: JSONB would store them reordered.
    config = {"zz_longest_key_first": {"b": 2, "a": [1, 2.5, "é"]}, "k": None, "mid": True}
    body = {"bot": "demo", "config": config, "start_at": LATER, "labels": {"z": "1", "a": "2"}}
    key = {"Idempotency-Key": "bytes"}
    first = client.post("/bots", json=body, headers=key)
    again = client.post("/bots", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]

    bot_id = first.json()["id"]
    assert client.post(f"/bots/{bot_id}/stop").status_code == 202
