"""The Bot API methods the stand-in answers, in the shapes of https://core.telegram.org/bots/api.

Each handler runs with the world's lock held (getUpdates releases it while it waits) and returns
the `result` of a successful answer or raises `ApiError`. Parameters arrive as strings (a query
string or a form, with nested objects JSON-encoded, as aiogram and the docs send them) or as JSON
values (an `application/json` body); the helpers here read both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.telegram_standin.state import (
    CHAT_BURST,
    CHAT_RATE_PER_S,
    ApiError,
    BotAccount,
    Bucket,
    Chat,
    StoredMessage,
    World,
)

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
MAX_POLL_TIMEOUT_S = 50  # the real server caps long polls near this; tests never need more

Handler = Callable[[World, BotAccount, dict[str, Any]], Any]


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


def int_param(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    """An Integer parameter: a JSON number or its decimal string."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise bad_request(f"invalid {name} specified")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad_request(f"invalid {name} specified") from None


def json_param(params: dict[str, Any], name: str) -> Any:
    """A JSON-serialized parameter (reply_markup, allowed_updates): decoded if it is a string."""
    value = params.get(name)
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    try:
        return json.loads(value)
    except ValueError:
        raise bad_request(f"can't parse {name} JSON object") from None


def chat_of(bot: BotAccount, params: dict[str, Any]) -> Chat:
    """The private chat named by `chat_id`; the bot can only write where a user wrote first."""
    chat_id = int_param(params, "chat_id")
    if chat_id is None:
        raise bad_request("chat_id is empty")
    chat = bot.chats.get(chat_id)
    if chat is None:
        raise bad_request("chat not found")
    return chat


def check_inline_keyboard(markup: Any) -> dict[str, Any] | None:
    """Validate an InlineKeyboardMarkup as Telegram does; other markups are kept but not shown."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" not in markup:
        return markup
    rows = markup["inline_keyboard"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request('field "inline_keyboard" of the InlineKeyboardMarkup should be an Array')
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise bad_request("can't parse inline keyboard button: Text buttons are unallowed")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                raise bad_request("BUTTON_DATA_INVALID")
    return markup


def message_json(bot: BotAccount, message: StoredMessage) -> dict[str, Any]:
    """A bot's message as a Bot API `Message`."""
    chat = bot.chats[message.chat_id]
    body: dict[str, Any] = {
        "message_id": message.message_id,
        "from": bot.user(),
        "chat": chat_json(chat.chat_id, chat.first_name),
        "date": message.date,
        "text": message.text,
    }
    if message.reply_markup and message.reply_markup.get("inline_keyboard"):
        body["reply_markup"] = message.reply_markup
    return body


def chat_json(chat_id: int, first_name: str) -> dict[str, Any]:
    return {"id": chat_id, "first_name": first_name, "type": "private"}


def user_json(user_id: int, first_name: str) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": "en"}


def get_me(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    return {
        **bot.user(),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def get_updates(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    """Confirm updates below `offset`, then answer at once or hold until one comes or time ends.

    A newer getUpdates of the same bot ends a waiting one with 409 Conflict, as Telegram does
    when two instances poll with one token.
    """
    offset = int_param(params, "offset", 0) or 0
    limit = int_param(params, "limit", 100) or 100
    timeout = int_param(params, "timeout", 0) or 0
    allowed = json_param(params, "allowed_updates")
    if allowed is not None:
        if not isinstance(allowed, list):
            raise bad_request("can't parse allowed_updates JSON array")
        bot.allowed_updates = [str(kind) for kind in allowed]
    limit = min(max(limit, 1), 100)
    if offset > 0:
        while bot.updates and bot.updates[0]["update_id"] < offset:
            bot.updates.popleft()
    elif offset < 0:
        while len(bot.updates) > -offset:
            bot.updates.popleft()
    bot.poll_generation += 1
    generation = bot.poll_generation
    world.cond.notify_all()  # an older poll of this bot ends with 409
    deadline = time.monotonic() + min(max(timeout, 0), MAX_POLL_TIMEOUT_S)
    while not bot.updates and not world.closing:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        world.cond.wait(left)
        if bot.poll_generation != generation:
            raise ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        if bot.revoked:
            raise ApiError(401, "Unauthorized")
    return list(bot.updates)[:limit]


def send_message(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    chat = chat_of(bot, params)
    text = params.get("text")
    if text is None or str(text).strip() == "":
        raise bad_request("message text is empty")
    text = str(text)
    if len(text) > MAX_TEXT:
        raise bad_request("message is too long")
    markup = check_inline_keyboard(json_param(params, "reply_markup"))
    if chat.blocked:
        raise ApiError(403, "Forbidden: bot was blocked by the user")
    if world.enforce_flood:
        bucket = bot.chat_buckets.setdefault(chat.chat_id, Bucket(CHAT_RATE_PER_S, CHAT_BURST))
        wait = max(bucket.wait_s(), bot.bot_window.wait_s())
        if wait:
            raise ApiError(429, f"Too Many Requests: retry after {wait}", wait)
        bucket.spend()
        bot.bot_window.spend()
    now = time.time()
    message = StoredMessage(
        message_id=chat.take_message_id(),
        chat_id=chat.chat_id,
        text=text,
        date=int(now),
        at=now,
        sent_markup=markup,
    )
    bot.messages.append(message)
    world.cond.notify_all()
    return message_json(bot, message)


def answer_callback_query(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    query_id = params.get("callback_query_id")
    if not query_id:
        raise bad_request("query_id is empty")
    query_id = str(query_id)
    if query_id not in bot.open_callbacks:
        raise bad_request("query is too old and response timeout expired or query ID is invalid")
    del bot.open_callbacks[query_id]
    bot.answered_callbacks.append(query_id)
    world.cond.notify_all()
    return True


def edit_message_reply_markup(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    if params.get("inline_message_id"):
        raise bad_request("inline messages are not emulated by the stand-in")
    chat = chat_of(bot, params)
    message_id = int_param(params, "message_id")
    if message_id is None:
        raise bad_request("message identifier is not specified")
    message = bot.find_message(chat.chat_id, message_id)
    if message is None:
        raise bad_request("message to edit not found")
    markup = check_inline_keyboard(json_param(params, "reply_markup"))
    if not markup or not markup.get("inline_keyboard"):
        markup = None
    if markup == message.reply_markup or (markup is None and message.keyboard_removed):
        raise bad_request(
            "message is not modified: specified new message content and reply markup are "
            "exactly the same as a current content and reply markup of the message"
        )
    message.reply_markup = markup
    message.keyboard_removed = markup is None
    world.cond.notify_all()
    return message_json(bot, message)


def delete_webhook(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    if str(params.get("drop_pending_updates", "")).lower() in ("true", "1"):
        bot.updates.clear()
    return True


def get_webhook_info(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    return {"url": "", "has_custom_certificate": False, "pending_update_count": len(bot.updates)}


def accept(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    """Methods a bot may call at start-up that change nothing the tests look at."""
    return True


def get_my_commands(world: World, bot: BotAccount, params: dict[str, Any]) -> Any:
    return []


METHODS: dict[str, Handler] = {
    "getme": get_me,
    "getupdates": get_updates,
    "sendmessage": send_message,
    "answercallbackquery": answer_callback_query,
    "editmessagereplymarkup": edit_message_reply_markup,
    "deletewebhook": delete_webhook,
    "getwebhookinfo": get_webhook_info,
    "setmycommands": accept,
    "deletemycommands": accept,
    "getmycommands": get_my_commands,
    "sendchataction": accept,
}
