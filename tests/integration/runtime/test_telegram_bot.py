"""The `telegram` bot kind (issue 20) against the Telegram Bot API stand-in.

Most tests run the bot by its hooks in a thread of its own (as the runtime does, minus the
manager, with its reports captured): the scenario, reconfigure, restarts over a state directory,
429 and flood pacing. The last ones run it through a real manager on the process backend: a
revoked token ends the bot `failed` / `platform_unauthorized` and no restart policy relaunches
it; `stats`, `broadcast`, reports and a refused reconfigure over the public API.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from botfleet.runtime.bot import BotFailed
from botfleet.runtime.bots.telegram import TelegramBot
from botfleet.runtime.bots.telegram.bot import REPORT_EVERY_S
from botfleet.runtime.bots.telegram.scenario import ScenarioError
from tests.support import (
    Manager,
    RedisServer,
    running_manager,
    transitions,
    wait_for_command,
    wait_for_status,
    wait_until,
)
from tests.telegram_scenario import HELP, SCENARIO
from tests.telegram_standin import SentMessage, TelegramStandIn

MENU_EN = [("Pizza", "pizza"), ("Salad", "salad")]
MANAGER_ENV = {"BOTFLEET_HEARTBEATS_MISSED": "20"}


def new_token() -> str:
    """A token of Telegram's shape (`<bot id>:<secret>`), unique per test."""
    return f"{uuid.uuid4().int % 10**9 + 10**9}:AA{uuid.uuid4().hex}"


def bot_config(standin: TelegramStandIn, **changes: Any) -> dict[str, Any]:
    config = {"language": "en", "api_url": standin.url, "poll_timeout_s": 2}
    config["scenario"] = copy.deepcopy(SCENARIO)
    return config | changes


@pytest.fixture(scope="module")
def standin() -> Iterator[TelegramStandIn]:
    with TelegramStandIn() as server:
        yield server


class LiveBot:
    """A TelegramBot run by its hooks (on_start, run, on_leave) on an event loop in its own
    thread, so the test's thread can block on the stand-in meanwhile."""

    def __init__(self, config: dict[str, Any], token: str, state_dir: Path | None) -> None:
        self.config, self.token, self.state_dir = config, token, state_dir
        self.reports: list[dict[str, Any]] = []
        self.start_error: BaseException | None = None
        self.run_error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    def start(self) -> LiveBot:
        self._thread.start()
        assert self._started.wait(20), "the bot did not start"
        if self.start_error is not None:
            raise self.start_error
        return self

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.bot = TelegramBot(
            bot_id="b-telegram",
            config=self.config,
            secrets={"bot_token": self.token},
            logger=logging.getLogger("test.telegram"),
        )
        self.bot.state_dir = self.state_dir
        self.bot._send_report = self._capture
        try:
            await self.bot.on_start()
        except BaseException as exc:
            self.start_error = exc
            return
        finally:
            self._started.set()
        try:
            await self.bot.run()
        except BaseException as exc:
            self.run_error = exc

    async def _capture(self, data: dict[str, Any]) -> bool:
        self.reports.append(json.loads(json.dumps(data)))
        return True

    def call(self, make: Callable[[], Any], timeout: float = 30) -> Any:
        """Run a coroutine on the bot's loop (as the runtime's command router would)."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.call(lambda: self.bot.on_reconfigure(config))
        self.bot.config = config

    def stop(self) -> None:
        """Leave as on SIGTERM: on_leave, then run() returns."""
        self.loop.call_soon_threadsafe(self.bot._begin_leave, "test")
        self.call(self.bot.on_leave)
        self._thread.join(20)
        assert not self._thread.is_alive(), "run() did not return after leave"

    def wait_ended(self, timeout: float = 20) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "run() did not end"


@pytest.fixture
def run_bot(standin: TelegramStandIn, tmp_path: Path) -> Iterator[Callable[..., LiveBot]]:
    """Start a LiveBot (a new token each, unless given); every one is stopped at the end."""
    started: list[LiveBot] = []

    def run(
        token: str | None = None, config: dict[str, Any] | None = None, state: bool = True
    ) -> LiveBot:
        if token is None:
            token = new_token()
            standin.add_bot(token)
        live = LiveBot(config or bot_config(standin), token, tmp_path if state else None)
        started.append(live)
        return live.start()

    yield run
    for live in started:
        if live._thread.is_alive():
            live.stop()


def texts(messages: list[SentMessage]) -> list[str]:
    return [message.text for message in messages]


def assert_nothing_answered_twice(
    standin: TelegramStandIn, token: str, answered: dict[int, int]
) -> None:
    """Each chat got exactly its `answered` messages: a `/help` sent now is answered as the
    next one. The bot reads its updates in order, one at a time, so an update answered twice
    would have been answered again before this later one."""
    for chat in answered:
        standin.user_sends(token, chat, "/help")
    for chat, count in answered.items():
        sent = standin.wait_for_messages(token, chat, count + 1)
        assert len(standin.messages(token, chat)) == count + 1, (chat, texts(sent))
        assert sent[-1].text in HELP.values(), (chat, texts(sent))


def converse_to_menu(standin: TelegramStandIn, token: str, chat: int, name: str) -> SentMessage:
    """/start, answer the name; return the menu message."""
    before = len(standin.messages(token, chat))
    standin.user_sends(token, chat, "/start")
    standin.wait_for_messages(token, chat, before + 1)
    standin.user_sends(token, chat, name)
    return standin.wait_for_messages(token, chat, before + 2)[-1]


# -- the scenario ---------------------------------------------------------------------------------


def test_the_scenario_from_start_to_the_automatic_last_step(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    token, chat = live.token, 501
    standin.user_sends(token, chat, "/help")
    assert texts(standin.wait_for_messages(token, chat, 1)) == ["Send /start to begin."]

    menu = converse_to_menu(standin, token, chat, "Ann")
    assert menu.text == "Hello Ann, what would you like?"
    assert menu.buttons == MENU_EN
    standin.user_presses(token, chat, menu.message_id, "pizza")
    sent = standin.wait_for_messages(token, chat, 5)
    assert texts(sent)[3:] == ["Pizza it is.", "Thank you, Ann!"]
    # The press was answered and the menu's keyboard taken away.
    assert len(standin.answered_callbacks(token)) == 1
    shown = {m.message_id: m for m in standin.messages(token, chat)}
    assert shown[menu.message_id].keyboard_removed
    # The automatic step came after its delay, not before.
    assert sent[4].at - sent[3].at >= 1.0

    # Outside a collect step any text shows the current step again.
    standin.user_sends(token, chat, "hello?")
    assert standin.wait_for_messages(token, chat, 6)[-1].text == "Thank you, Ann!"
    # /start begins again, forgetting the answers.
    standin.user_sends(token, chat, "/start")
    assert standin.wait_for_messages(token, chat, 7)[-1].text == "Hi! What is your name?"
    assert_nothing_answered_twice(standin, token, {chat: 7})


def test_chats_are_independent(standin: TelegramStandIn, run_bot: Callable[..., LiveBot]) -> None:
    live = run_bot()
    for chat in (601, 602):
        standin.user_sends(live.token, chat, "/start")
    for chat, name in ((601, "Ann"), (602, "Bob")):
        standin.wait_for_messages(live.token, chat, 1)
        standin.user_sends(live.token, chat, name)
    assert standin.wait_for_messages(live.token, 601, 2)[-1].text.startswith("Hello Ann,")
    assert standin.wait_for_messages(live.token, 602, 2)[-1].text.startswith("Hello Bob,")


# -- reconfigure ----------------------------------------------------------------------------------


def test_reconfigure_to_german_changes_the_next_reply_and_keeps_the_step(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    token, chat = live.token, 701
    converse_to_menu(standin, token, chat, "Ann")
    live.reconfigure(bot_config(standin, language="de"))
    standin.user_sends(token, chat, "?")
    menu = standin.wait_for_messages(token, chat, 3)[-1]
    assert menu.text == "Hallo Ann, was möchtest du?"  # same step, same collected name
    assert menu.buttons == [("Pizza", "pizza"), ("Salat", "salad")]
    standin.user_sends(token, chat, "/help")
    assert standin.wait_for_messages(token, chat, 4)[-1].text == "Sende /start, um zu beginnen."


def test_no_update_is_lost_or_answered_twice_across_a_swap(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    chats = list(range(1301, 1341))
    helps = {"Send /start to begin.", "Sende /start, um zu beginnen."}
    swap = threading.Thread(target=live.reconfigure, args=(bot_config(standin, language="de"),))
    for i, chat in enumerate(chats):
        standin.user_sends(live.token, chat, "/help")
        if i == len(chats) // 2:
            swap.start()
    swap.join(30)
    for chat in chats:
        assert set(texts(standin.wait_for_messages(live.token, chat, 1))) <= helps
    assert_nothing_answered_twice(standin, live.token, dict.fromkeys(chats, 1))
    assert standin.messages(live.token, chats[0])[-1].text.startswith("Sende")


def test_a_chat_whose_step_is_gone_restarts_at_the_first_step(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    token, chat = live.token, 702
    converse_to_menu(standin, token, chat, "Ann")
    config = bot_config(standin)
    del config["scenario"]["steps"]["menu"]
    config["scenario"]["steps"]["welcome"]["next"] = "thanks"
    live.reconfigure(config)
    standin.user_sends(token, chat, "Zoe")  # the welcome step collects again
    assert standin.wait_for_messages(token, chat, 3)[-1].text == "Thank you, Zoe!"


def test_an_invalid_reconfigure_is_refused_naming_the_field(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    bad = bot_config(standin)
    bad["scenario"]["steps"]["menu"]["buttons"][1]["goto"] = "soup"
    with pytest.raises(ScenarioError, match=r"steps\.menu\.buttons\.1\.goto: unknown step 'soup'"):
        live.reconfigure(bad)
    # The old scenario still answers.
    standin.user_sends(live.token, 703, "/start")
    assert standin.wait_for_messages(live.token, 703, 1)[-1].text == "Hi! What is your name?"


# -- state across restarts ------------------------------------------------------------------------


def test_a_restart_resumes_each_chat_and_reanswers_nothing(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    first = run_bot()
    token = first.token
    converse_to_menu(standin, token, 801, "Ann")  # chat 801 waits at the menu
    standin.user_sends(token, 802, "/start")  # chat 802 waits for its name
    standin.wait_for_messages(token, 802, 1)
    first.stop()
    # While the bot is down a user writes; after the restart only that is answered.
    standin.user_sends(token, 802, "Bob")
    second = run_bot(token=token)
    assert standin.wait_for_messages(token, 802, 2)[-1].text == "Hello Bob, what would you like?"
    standin.user_sends(token, 801, "?")
    assert standin.wait_for_messages(token, 801, 3)[-1].text == "Hello Ann, what would you like?"
    assert_nothing_answered_twice(standin, token, {801: 3, 802: 2})
    second.stop()


def test_an_automatic_step_due_during_a_restart_still_happens(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    config = bot_config(standin)
    config["scenario"]["steps"]["pizza"]["auto"]["after_s"] = 2
    first = run_bot(config=config)
    token, chat = first.token, 803
    menu = converse_to_menu(standin, token, chat, "Ann")
    standin.user_presses(token, chat, menu.message_id, "pizza")
    standin.wait_for_messages(token, chat, 3)
    first.stop()  # before the automatic step is due
    assert texts(standin.messages(token, chat))[-1] == "Pizza it is."
    run_bot(token=token, config=config)
    assert standin.wait_for_messages(token, chat, 4)[-1].text == "Thank you, Ann!"


# -- flood limits and errors ----------------------------------------------------------------------


def test_429_is_waited_out_and_the_same_call_retried(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    token, chat = live.token, 901
    standin.fail_next(token, "sendMessage", error_code=429, retry_after=2)
    standin.user_sends(token, chat, "/start")
    assert texts(standin.wait_for_messages(token, chat, 1)) == ["Hi! What is your name?"]
    refused, retried = standin.calls(token, "sendMessage")
    assert retried.params["text"] == refused.params["text"]
    assert retried.at - refused.at >= 2.0  # not before retry_after
    assert len(standin.messages(token, chat)) == 1


def test_replies_to_one_chat_are_paced_like_telegram_asks() -> None:
    with TelegramStandIn(enforce_flood=True) as strict:
        token = new_token()
        strict.add_bot(token)
        live = LiveBot(bot_config(strict), token, None).start()
        try:
            for _ in range(6):
                strict.user_sends(token, 950, "/help")
            sent = strict.wait_for_messages(token, 950, 6)
            # A burst of three, then about one a second: never a 429 from the stand-in.
            assert sent[-1].at - sent[0].at >= 2.5
            assert len(strict.calls(token, "sendMessage")) == 6
        finally:
            live.stop()


def test_a_revoked_token_fails_the_bot_with_platform_unauthorized(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    standin.revoke(live.token)
    live.wait_ended()
    assert isinstance(live.run_error, BotFailed)
    assert live.run_error.reason == "platform_unauthorized"
    assert live.token not in str(live.run_error)


def test_an_unknown_token_fails_at_start(standin: TelegramStandIn) -> None:
    live = LiveBot(bot_config(standin), new_token(), None)
    with pytest.raises(BotFailed) as failed:
        live.start()
    assert failed.value.reason == "platform_unauthorized"


def test_a_new_token_that_telegram_refuses_is_not_taken(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    with pytest.raises(ValueError, match="the new bot_token does not work") as refused:
        live.call(lambda: live.bot.on_secrets({"bot_token": new_token()}))
    assert live.token not in str(refused.value)
    standin.user_sends(live.token, 980, "/start")  # the old token still answers
    assert standin.wait_for_messages(live.token, 980, 1)[-1].text == "Hi! What is your name?"


def test_reports_and_stats_count_the_conversation(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    began = time.monotonic()
    converse_to_menu(standin, live.token, 990, "Ann")
    for chat in range(991, 1000):  # nine more updates in a burst
        standin.user_sends(live.token, chat, "/help")
    for chat in range(991, 1000):
        standin.wait_for_messages(live.token, chat, 1)
    stats = wait_until(
        lambda: (
            (s := live.call(lambda: live.bot.on_command("stats", {})))["messages_out"] == 11 and s
        ),
        what="stats counting two replies",
    )
    assert stats["chats"] == 10 and stats["messages_in"] == 11 and stats["errors"] == 0
    assert stats["last_update_at"] and stats["last_error"] is None
    report = wait_until(
        lambda: live.reports and live.reports[-1]["messages_out"] == 11 and live.reports[-1],
        timeout=15,
        what="a report with every reply",
    )
    assert set(report) == {
        "chats", "messages_in", "messages_out", "last_update_at", "errors", "last_error",
    }  # fmt: skip
    assert report == stats
    # Coalesced: one at start, then at most one per REPORT_EVERY_S, not one per update.
    assert len(live.reports) <= 2 + (time.monotonic() - began) / REPORT_EVERY_S


def test_broadcast_reaches_every_chat_and_counts_failures(
    standin: TelegramStandIn, run_bot: Callable[..., LiveBot]
) -> None:
    live = run_bot()
    chats = [1001, 1002, 1003]
    for chat in chats:
        standin.user_sends(live.token, chat, "/start")
        standin.wait_for_messages(live.token, chat, 1)
    standin.block(live.token, 1003)
    result = live.call(lambda: live.bot.on_command("broadcast", {"text": "We open at 9."}))
    assert result == {"sent": 2, "failed": 1}
    for chat in chats[:2]:
        assert standin.messages(live.token, chat)[-1].text == "We open at 9."
    stats = live.call(lambda: live.bot.on_command("stats", {}))
    assert stats["errors"] == 1 and "1003" in stats["last_error"]
    with pytest.raises(ValueError, match="text"):
        live.call(lambda: live.bot.on_command("broadcast", {}))


# -- through a real manager (process backend) -----------------------------------------------------


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Manager]:
    """conftest's manager, with a longer heartbeat budget: on a loaded machine a bot's late
    heartbeat must not stand in for the failure under test."""
    root = tmp_path_factory.mktemp("manager")
    with running_manager(root, redis_server.url, extra_env=MANAGER_ENV) as instance:
        yield instance


def start_bot(client: Any, token: str, config: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = client.post(
        "/bots",
        json={"bot": "telegram", "config": config, "secrets": {"bot_token": token}, **body},
    )
    assert response.status_code == 201, response.text
    return response.json()


def command(client: Any, bot_id: str, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    sent = client.post(f"/bots/{bot_id}/commands", json={"action": action, "payload": payload})
    assert sent.status_code == 202, sent.text
    return wait_for_command(client, bot_id, sent.json()["id"], {"acked", "failed"})


def test_through_the_manager_commands_reports_and_reconfigure(
    manager: Manager, standin: TelegramStandIn
) -> None:
    _, client = manager.new_user()
    token = new_token()
    standin.add_bot(token)
    bot = start_bot(client, token, bot_config(standin), state_key=f"tg-{uuid.uuid4().hex[:8]}")
    wait_for_status(client, bot["id"], {"active"})
    converse_to_menu(standin, token, 1101, "Ann")

    stats = command(client, bot["id"], "stats", {})
    assert stats["status"] == "acked" and stats["result"]["messages_out"] == 2
    broadcast = command(client, bot["id"], "broadcast", {"text": "Hi all"})
    assert broadcast["result"] == {"sent": 1, "failed": 0}
    assert standin.wait_for_messages(token, 1101, 3)[-1].text == "Hi all"
    wait_until(
        lambda: (
            (client.get(f"/bots/{bot['id']}").json().get("report") or {}).get("messages_out") == 3
        ),
        timeout=20,
        what="the report on GET /bots/{id}",
    )

    bad = bot_config(standin, language="de")
    bad["scenario"]["start"] = "nowhere"
    refused = client.patch(f"/bots/{bot['id']}/config", json={"config": bad})
    assert refused.status_code == 202, refused.text
    outcome = wait_for_command(client, bot["id"], refused.json()["id"], {"acked", "failed"})
    assert outcome["status"] == "failed" and "start: unknown step 'nowhere'" in outcome["error"]
    standin.user_sends(token, 1101, "?")
    assert standin.wait_for_messages(token, 1101, 4)[-1].text.startswith("Hello Ann")

    good = client.patch(
        f"/bots/{bot['id']}/config", json={"config": bot_config(standin, language="de")}
    )
    wait_for_command(client, bot["id"], good.json()["id"], {"acked"})
    standin.user_sends(token, 1101, "?")
    assert standin.wait_for_messages(token, 1101, 5)[-1].text == "Hallo Ann, was möchtest du?"

    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    assert wait_for_status(client, bot["id"], {"completed", "failed"})["status"] == "completed"
    logs = client.get(f"/bots/{bot['id']}/logs", params={"tail": 500}).text
    assert token not in logs and token.split(":")[1] not in logs


def test_a_revoked_token_ends_failed_and_is_not_restarted(
    manager: Manager, standin: TelegramStandIn
) -> None:
    _, client = manager.new_user()
    token = new_token()
    standin.add_bot(token)
    restart = {"max_retries": 3, "backoff_s": 0.2, "on": ["crash", "start_failed"]}
    bot = start_bot(client, token, bot_config(standin), restart=restart)
    wait_for_status(client, bot["id"], {"active"})
    standin.revoke(token)
    ended = wait_for_status(client, bot["id"], {"failed", "completed"})
    history = transitions(client, bot["id"])
    assert (ended["status"], ended["status_reason"]) == ("failed", "platform_unauthorized"), history
    assert ended["exit_code"] == 1
    # A restart (backoff 0.2 s) would have begun in a reconciler run after the backoff.
    manager.loop_runs("reconciler", after=datetime.now(UTC) + timedelta(seconds=0.2))
    again = client.get(f"/bots/{bot['id']}").json()
    history = transitions(client, bot["id"])
    assert (again["status"], again["attempt"]) == ("failed", 1), history
    assert [row[1] for row in history].count("starting") == 1

    # A token Telegram never knew fails the start the same way, also without a restart.
    other = start_bot(client, new_token(), bot_config(standin), restart=restart)
    ended = wait_for_status(client, other["id"], {"failed", "completed"})
    assert (ended["status"], ended["status_reason"], ended["attempt"]) == (
        "failed",
        "platform_unauthorized",
        1,
    )


def test_a_killed_bot_is_restarted_and_resumes_every_chat(
    manager: Manager, standin: TelegramStandIn
) -> None:
    _, client = manager.new_user()
    token = new_token()
    standin.add_bot(token)
    restart = {"max_retries": 2, "backoff_s": 0.2}
    key = f"tg-{uuid.uuid4().hex[:8]}"
    bot = start_bot(client, token, bot_config(standin), restart=restart, state_key=key)
    first = wait_for_status(client, bot["id"], {"active"})
    converse_to_menu(standin, token, 1201, "Ann")  # at the menu
    standin.user_sends(token, 1202, "/start")  # waiting for a name
    standin.wait_for_messages(token, 1202, 1)
    # The state is saved after each update, before the next one is read: a later update's
    # answer means the last one's state is on disk.
    standin.user_sends(token, 1203, "/help")
    standin.wait_for_messages(token, 1203, 1)

    os.kill(int(first["runtime_ref"].split("-")[0]), signal.SIGKILL)
    wait_until(
        lambda: (
            (b := client.get(f"/bots/{bot['id']}").json())["attempt"] == 2
            and b["status"] == "active"
        ),
        timeout=60,
        what="the restart policy's second attempt",
    )
    standin.user_sends(token, 1202, "Bob")
    assert standin.wait_for_messages(token, 1202, 2)[-1].text == "Hello Bob, what would you like?"
    standin.user_sends(token, 1201, "?")
    assert standin.wait_for_messages(token, 1201, 3)[-1].text == "Hello Ann, what would you like?"
    assert_nothing_answered_twice(standin, token, {1201: 3, 1202: 2})
    assert client.post(f"/bots/{bot['id']}/stop").status_code == 202
    assert wait_for_status(client, bot["id"], {"completed", "failed"})["status"] == "completed"
