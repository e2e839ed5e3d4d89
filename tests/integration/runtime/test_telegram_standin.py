"""The Telegram Bot API stand-in answers as the documented API does (https://core.telegram.org/bots/api).

Two kinds of check: raw HTTP (the JSON shapes, status codes and descriptions the docs give) and
the real aiogram client (its pydantic models must accept every answer, and its error classes must
come out of the stand-in's errors), since that is the client the `telegram` bot kind runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from tests.telegram_standin import TelegramStandIn
from tests.telegram_standin.limits import flood_violations, most_in_one_second

TOKEN = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
KEYBOARD = {"inline_keyboard": [[{"text": "Pizza", "callback_data": "pizza"}]]}


@pytest.fixture
def standin() -> Iterator[TelegramStandIn]:
    with TelegramStandIn() as server:
        server.add_bot(TOKEN, username="pizza_bot")
        yield server


def call(
    standin: TelegramStandIn, method: str, token: str = TOKEN, **params: Any
) -> httpx.Response:
    """POST a form the way aiogram does: strings as they are, anything else JSON-encoded."""
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    return httpx.post(f"{standin.url}/bot{token}/{method}", data=form, timeout=30)


def test_get_me_answers_the_bot_user_and_unknown_tokens_or_methods_are_refused(
    standin: TelegramStandIn,
) -> None:
    me = httpx.get(f"{standin.url}/bot{TOKEN}/getMe").json()
    assert me["ok"] is True
    assert me["result"]["id"] == 110201543  # a token's prefix is its bot's id
    assert me["result"]["is_bot"] is True
    assert me["result"]["username"] == "pizza_bot"

    stranger = httpx.get(f"{standin.url}/bot1:nope/getMe")
    assert stranger.status_code == 401
    assert stranger.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}

    unknown = call(standin, "sendSticker", chat_id=1)
    assert unknown.status_code == 404
    assert unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    # Method names are case-insensitive in the Bot API.
    assert httpx.get(f"{standin.url}/bot{TOKEN}/GETME").json()["ok"] is True


def test_updates_are_returned_until_an_offset_confirms_them(standin: TelegramStandIn) -> None:
    first = standin.user_sends(TOKEN, 501, "/start", first_name="Ann")
    second = standin.user_sends(TOKEN, 501, "Ann")
    updates = call(standin, "getUpdates").json()["result"]
    assert [u["update_id"] for u in updates] == [first, second]
    message = updates[0]["message"]
    assert message["chat"] == {"id": 501, "first_name": "Ann", "type": "private"}
    assert message["from"]["id"] == 501 and message["from"]["is_bot"] is False
    assert message["text"] == "/start"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert isinstance(message["date"], int)

    # Without an offset nothing is confirmed: the same updates come again.
    assert [u["update_id"] for u in call(standin, "getUpdates").json()["result"]] == [first, second]
    # offset = last + 1 confirms both; limit caps the answer.
    third = standin.user_sends(TOKEN, 501, "more")
    answer = call(standin, "getUpdates", offset=second + 1, limit=5).json()["result"]
    assert [u["update_id"] for u in answer] == [third]
    assert standin.pending_updates(TOKEN) == 1
    standin.user_sends(TOKEN, 502, "hi")
    assert len(call(standin, "getUpdates", limit=1).json()["result"]) == 1
    # A negative offset keeps only the last -offset updates.
    last = call(standin, "getUpdates", offset=-1).json()["result"]
    assert [u["message"]["text"] for u in last] == ["hi"]
    assert standin.pending_updates(TOKEN) == 1


def test_allowed_updates_filter_the_updates_queued_afterwards(standin: TelegramStandIn) -> None:
    standin.user_sends(TOKEN, 9, "/start")
    message_id = call(standin, "sendMessage", chat_id=9, text="Hi", reply_markup=KEYBOARD).json()[
        "result"
    ]["message_id"]
    standin.user_presses(TOKEN, 9, message_id, "pizza")  # queued before the setting: kept
    kinds = [sorted(set(u) - {"update_id"}) for u in call(standin, "getUpdates").json()["result"]]
    assert kinds == [["message"], ["callback_query"]]
    last = call(standin, "getUpdates", allowed_updates=["message"]).json()["result"][-1]
    standin.user_presses(TOKEN, 9, message_id, "pizza")
    standin.user_sends(TOKEN, 9, "text")
    # Without allowed_updates the previous setting holds.
    later = call(standin, "getUpdates", offset=last["update_id"] + 1).json()["result"]
    assert [u["message"]["text"] for u in later] == ["text"]


def test_a_long_poll_waits_for_an_update_and_a_newer_poll_ends_it(
    standin: TelegramStandIn,
) -> None:
    began = time.monotonic()
    assert call(standin, "getUpdates", timeout=1).json() == {"ok": True, "result": []}
    assert time.monotonic() - began >= 0.9  # it held the request for the timeout

    answers: list[httpx.Response] = []
    poller = threading.Thread(
        target=lambda: answers.append(call(standin, "getUpdates", timeout=20))
    )
    poller.start()
    wait_until(lambda: len(standin.calls(TOKEN, "getUpdates")) == 2)
    update_id = standin.user_sends(TOKEN, 7, "hello")
    poller.join(10)
    assert [u["update_id"] for u in answers[0].json()["result"]] == [update_id]

    # Two pollers with one token: the newer one wins and the older ends with 409 Conflict.
    call(standin, "getUpdates", offset=update_id + 1)
    answers.clear()
    poller = threading.Thread(
        target=lambda: answers.append(call(standin, "getUpdates", timeout=20))
    )
    poller.start()
    wait_until(lambda: len(standin.calls(TOKEN, "getUpdates")) == 4)
    assert call(standin, "getUpdates", timeout=0).json()["result"] == []
    poller.join(10)
    assert answers[0].status_code == 409
    assert answers[0].json()["description"].startswith("Conflict: terminated by other getUpdates")


def test_send_message_keeps_the_inline_keyboard_in_any_body_encoding(
    standin: TelegramStandIn,
) -> None:
    standin.user_sends(TOKEN, 9, "/start")
    sent = call(standin, "sendMessage", chat_id=9, text="Hi!", reply_markup=KEYBOARD).json()
    assert sent["ok"] is True
    assert sent["result"]["chat"]["id"] == 9
    assert sent["result"]["from"]["is_bot"] is True
    assert sent["result"]["reply_markup"] == KEYBOARD
    assert sent["result"]["message_id"] == 2  # a private chat numbers both sides' messages
    as_json = httpx.post(
        f"{standin.url}/bot{TOKEN}/sendMessage", json={"chat_id": 9, "text": "json body"}
    )
    multipart = httpx.post(
        f"{standin.url}/bot{TOKEN}/sendMessage",
        data={"chat_id": "9", "text": "multipart body"},
        files={"thumbnail": ("t.txt", b"x")},
    )
    query = httpx.get(f"{standin.url}/bot{TOKEN}/sendMessage", params={"chat_id": 9, "text": "q"})
    assert as_json.json()["ok"] and multipart.json()["ok"] and query.json()["ok"]
    messages = standin.messages(TOKEN, 9)
    assert [m.text for m in messages] == ["Hi!", "json body", "multipart body", "q"]
    assert messages[0].buttons == [("Pizza", "pizza")]
    assert standin.calls(TOKEN, "sendmessage")[1].params == {"chat_id": 9, "text": "json body"}


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"chat_id": 404, "text": "x"}, "Bad Request: chat not found"),
        ({"chat_id": 9}, "Bad Request: message text is empty"),
        ({"chat_id": 9, "text": "x" * 4097}, "Bad Request: message is too long"),
        (
            {
                "chat_id": 9,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "a", "callback_data": "d" * 65}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
    ],
)
def test_send_message_refuses_what_telegram_refuses(
    standin: TelegramStandIn, params: dict[str, Any], description: str
) -> None:
    standin.user_sends(TOKEN, 9, "/start")
    answer = call(standin, "sendMessage", **params)
    assert answer.status_code == 400
    assert answer.json() == {"ok": False, "error_code": 400, "description": description}
    assert standin.messages(TOKEN) == []


def test_a_button_press_is_a_callback_query_answered_once_and_its_keyboard_removable(
    standin: TelegramStandIn,
) -> None:
    standin.user_sends(TOKEN, 9, "/start")
    message_id = call(standin, "sendMessage", chat_id=9, text="Hi!", reply_markup=KEYBOARD).json()[
        "result"
    ]["message_id"]
    with pytest.raises(ValueError, match="no button"):
        standin.user_presses(TOKEN, 9, message_id, "salad")
    update_id = standin.user_presses(TOKEN, 9, message_id, "pizza")
    update = call(standin, "getUpdates").json()["result"][-1]
    assert update["update_id"] == update_id
    query = update["callback_query"]
    assert query["data"] == "pizza"
    assert query["from"]["id"] == 9
    assert query["message"]["message_id"] == message_id
    assert query["message"]["reply_markup"] == KEYBOARD
    assert isinstance(query["id"], str) and isinstance(query["chat_instance"], str)

    assert call(standin, "answerCallbackQuery", callback_query_id=query["id"]).json() == {
        "ok": True,
        "result": True,
    }
    again = call(standin, "answerCallbackQuery", callback_query_id=query["id"])
    assert again.status_code == 400 and "query is too old" in again.json()["description"]
    assert standin.answered_callbacks(TOKEN) == [query["id"]]

    edited = call(standin, "editMessageReplyMarkup", chat_id=9, message_id=message_id).json()
    assert edited["ok"] is True and "reply_markup" not in edited["result"]
    assert standin.messages(TOKEN, 9)[0].keyboard_removed is True
    assert standin.messages(TOKEN, 9)[0].buttons == [("Pizza", "pizza")]
    no_op = call(standin, "editMessageReplyMarkup", chat_id=9, message_id=message_id)
    assert no_op.status_code == 400 and "message is not modified" in no_op.json()["description"]
    gone = call(standin, "editMessageReplyMarkup", chat_id=9, message_id=999)
    assert gone.json()["description"] == "Bad Request: message to edit not found"
    with pytest.raises(ValueError, match="no button"):
        standin.user_presses(TOKEN, 9, message_id, "pizza")  # its keyboard is gone


def test_errors_on_demand_and_a_revoked_token(standin: TelegramStandIn) -> None:
    standin.user_sends(TOKEN, 9, "/start")
    standin.fail_next(TOKEN, "sendMessage", 429, retry_after=3, times=2)
    for _ in range(2):
        refused = call(standin, "sendMessage", chat_id=9, text="x")
        assert refused.status_code == 429
        assert refused.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }
    assert call(standin, "sendMessage", chat_id=9, text="x").json()["ok"] is True
    assert len(standin.calls(TOKEN, "sendMessage")) == 3
    assert len(standin.messages(TOKEN)) == 1

    answers: list[httpx.Response] = []
    poller = threading.Thread(
        target=lambda: answers.append(call(standin, "getUpdates", offset=999999, timeout=20))
    )
    poller.start()
    wait_until(lambda: len(standin.calls(TOKEN, "getUpdates")) == 1)
    standin.revoke(TOKEN)
    poller.join(10)
    assert answers[0].status_code == 401  # the waiting long poll too
    assert call(standin, "getMe").status_code == 401


def test_enforced_flood_limits_answer_429_with_retry_after() -> None:
    with TelegramStandIn(enforce_flood=True) as standin:
        standin.add_bot(TOKEN)
        for chat_id in range(1, 41):
            standin.user_sends(TOKEN, chat_id, "/start")
        codes = [call(standin, "sendMessage", chat_id=1, text=f"{n}").status_code for n in range(4)]
        assert codes == [200, 200, 200, 429]  # a burst of three to one chat, then 1/s
        refused = call(standin, "sendMessage", chat_id=1, text="again").json()
        assert refused["parameters"]["retry_after"] >= 1
        with httpx.Client(base_url=f"{standin.url}/bot{TOKEN}") as client:
            codes = [
                client.post("/sendMessage", data={"chat_id": chat_id, "text": "all"}).status_code
                for chat_id in range(2, 41)
            ]
        assert 429 in codes  # at most thirty a second per bot
        assert flood_violations(standin.messages(TOKEN)) == []
        assert most_in_one_second([m.at for m in standin.messages(TOKEN)]) == 30


def test_the_aiogram_client_accepts_every_answer_and_maps_the_errors(
    standin: TelegramStandIn,
) -> None:
    async def scenario() -> None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(standin.url))
        bot = Bot(TOKEN, session=session)
        try:
            me = await bot.get_me()
            assert me.username == "pizza_bot"
            assert await bot.delete_webhook() is True
            standin.user_sends(TOKEN, 33, "/start", first_name="Bo")
            updates = await bot.get_updates(
                timeout=1, allowed_updates=["message", "callback_query"]
            )
            assert updates[0].message is not None and updates[0].message.text == "/start"
            keyboard = InlineKeyboardMarkup(
                inline_keyboard=[[InlineKeyboardButton(text="Pizza", callback_data="pizza")]]
            )
            sent = await bot.send_message(33, "Hi Bo", reply_markup=keyboard)
            assert sent.reply_markup is not None
            assert sent.reply_markup.inline_keyboard[0][0].callback_data == "pizza"
            standin.user_presses(TOKEN, 33, sent.message_id, "pizza")
            updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=1)
            query = updates[0].callback_query
            assert query is not None and query.data == "pizza"
            assert await bot.answer_callback_query(query.id) is True
            edited = await bot.edit_message_reply_markup(chat_id=33, message_id=sent.message_id)
            assert not isinstance(edited, bool) and edited.reply_markup is None

            standin.fail_next(TOKEN, "sendMessage", 429, retry_after=2)
            with pytest.raises(TelegramRetryAfter) as flood:
                await bot.send_message(33, "x")
            assert flood.value.retry_after == 2
            with pytest.raises(TelegramBadRequest, match="chat not found"):
                await bot.send_message(34, "x")
            with pytest.raises(TelegramNotFound):
                await bot(UnknownMethod())
            standin.revoke(TOKEN)
            with pytest.raises(TelegramUnauthorizedError):
                await bot.get_me()
        finally:
            await session.close()

    asyncio.run(scenario())
    # aiogram sends nested values JSON-encoded in a form; the stand-in decoded them.
    sent = standin.calls(TOKEN, "sendMessage")[0].params
    assert json.loads(sent["reply_markup"])["inline_keyboard"][0][0]["callback_data"] == "pizza"


class UnknownMethod(TelegramMethod[bool]):
    """A method the Bot API does not have, to see the 404 path through aiogram."""

    __returning__ = bool
    __api_method__ = "doTheImpossible"


def wait_until(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
