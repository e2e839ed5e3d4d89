"""A stand-in for the slice of the Telegram Bot API that the `telegram` bot kind uses.

api.telegram.org cannot be reached here, so this real HTTP server (stdlib, 127.0.0.1, a free
port, in a thread) answers `/bot<token>/<method>` with the shapes of the official documentation,
https://core.telegram.org/bots/api: `{"ok": true, "result": ...}` or `{"ok": false,
"error_code", "description", "parameters": {"retry_after"}}`; User, Chat, Message, Update,
CallbackQuery and InlineKeyboardMarkup objects. aiogram is pointed at it through its documented
custom server setting (`TelegramAPIServer.from_base(standin.url)`), so the real aiogram client
code (its multipart/urlencoded forms, polling loop, error classes) runs against it.

Methods: `getMe`; `getUpdates` (`offset` confirms every update below it, a negative offset keeps
the last -offset; `limit` 1-100; `timeout` holds the request until an update is queued or the time
passes; `allowed_updates` applies to updates queued afterwards; a newer getUpdates of the same
token ends a waiting one with 409 Conflict); `sendMessage` (`text` 1-4096 characters,
`reply_markup` with an inline keyboard whose `callback_data` is 1-64 bytes; only chats a user
wrote in first, else 400 "chat not found"); `answerCallbackQuery` (each query once);
`editMessageReplyMarkup` (400 "message is not modified" on a no-op edit); `deleteWebhook`,
`getWebhookInfo`, `setMyCommands`, `getMyCommands`, `deleteMyCommands`, `sendChatAction`.
Any other method answers 404 "Not Found"; an unknown or revoked token 401 "Unauthorized", as
Telegram does. Errors on demand: `fail_next(token, method, code, retry_after, times)`; with
`enforce_flood=True`, sendMessage answers 429 with `retry_after` above about one message a second
to a chat (bursts of 3) or thirty a second from a bot, the limits Telegram's FAQ states.

The control API (thread-safe; tests in the same process call it): `add_bot`, `user_sends`,
`user_presses`, `block`, `revoke`, `fail_next`; and what happened: `messages`,
`wait_for_messages`, `calls`, `answered_callbacks`, `pending_updates`.

What it does not prove: anything about Telegram's servers themselves. It keeps only private
chats (no groups, channels, inline mode, payments, files, webhooks); it does not parse
`parse_mode` entities or check text formatting; message dates are this machine's clock; it has
no 24-hour update retention, no per-group limit of 20 messages a minute, and its flood rule is
the documented approximation, not Telegram's undisclosed one; it never drops, reorders or
duplicates updates, and answers far faster than the real API, so timing figures measured against
it are a floor for the bot's own cost, not what users of api.telegram.org would see.

Where each concern lives: `server` (HTTP, body parsing, the control API), `methods` (the Bot API
methods), `state` (bots, chats, updates, messages and the lock they share), `limits` (checking
recorded send times against the flood limits, for tests that measure a bot's pacing).
"""

from tests.telegram_standin.server import TelegramStandIn
from tests.telegram_standin.state import ApiError, Call, SentMessage

__all__ = ["ApiError", "Call", "SentMessage", "TelegramStandIn"]
