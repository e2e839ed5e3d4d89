"""The stand-in's HTTP server and the control API the tests drive it with.

A stdlib ThreadingHTTPServer on 127.0.0.1 (a thread per connection, so every bot's long poll
waits in its own thread) answers `/bot<token>/<method>`. Bodies are read the ways clients send
them: a query string, `application/x-www-form-urlencoded` (aiogram's AiohttpSession without
files: an aiohttp FormData whose nested values are JSON strings), `multipart/form-data` (the same
form once a file is attached) or `application/json`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.telegram_standin.methods import METHODS, chat_json, message_json, user_json
from tests.telegram_standin.state import (
    ApiError,
    BotAccount,
    Call,
    Chat,
    SentMessage,
    World,
    buttons_of,
    error_for,
)


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """The request's parameters from its body, by content type."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if kind == "application/json":
        value = json.loads(body)
        if not isinstance(value, dict):
            raise ApiError(400, "Bad Request: can't parse JSON object")
        return value
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        params: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename():
                params[name] = f"<file {part.get_filename()}: {len(payload)} bytes>"
            else:
                params[name] = payload.decode(part.get_content_charset() or "utf-8")
        return params
    return {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    world: World
    connections: set[Any]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A bot killed mid-request resets its connection: expected here, not worth a trace."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp and httpx expect of api.telegram.org
    # One segment per answer: headers and body written apart meet Nagle's algorithm and the
    # client's delayed ACK, 40 ms a request.
    disable_nagle_algorithm = True
    wbufsize = -1
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a fleet of bots long-polling would flood the test output."""

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, answer = 200, {"ok": True, "result": self._dispatch(body)}
        except ApiError as error:
            status, answer = error.code, error.body()
        payload = json.dumps(answer, ensure_ascii=False).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away during a long poll

    def _dispatch(self, body: bytes) -> Any:
        world = self.server.world
        url = urlsplit(self.path)
        parts = url.path.split("/")
        if len(parts) != 3 or parts[0] != "" or not parts[1].startswith("bot"):
            raise error_for(404)
        token, method = parts[1][3:], parts[2]
        params: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            params.update(parse_body(self.headers.get("Content-Type", ""), body))
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse request body") from None
        with world.cond:
            world.calls.setdefault(token, []).append(Call(method, time.time(), params))
            bot = world.bots.get(token)
            if bot is None or bot.revoked:
                raise error_for(401)
            handler = METHODS.get(method.lower())  # Bot API method names are case-insensitive
            if handler is None:
                raise error_for(404)
            pending = world.failures.get((token, method.lower()))
            if pending:
                raise pending.pop(0)
            return handler(world, bot, params)


class TelegramStandIn:
    """A Bot API server for tests; see the package docstring for what it is and is not."""

    def __init__(self, *, enforce_flood: bool = False, host: str = "127.0.0.1") -> None:
        self.world = World(enforce_flood=enforce_flood)
        self._host = host
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------------------

    def start(self) -> TelegramStandIn:
        server = _Server((self._host, 0), _Handler)
        server.world = self.world
        server.connections = set()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Answer every waiting long poll, stop serving, and drop open connections."""
        if self._server is None:
            return
        with self.world.cond:
            self.world.closing = True
            self.world.cond.notify_all()
        self._server.shutdown()
        for connection in list(self._server.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._server = None

    def __enter__(self) -> TelegramStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client in place of https://api.telegram.org."""
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- bots and users -------------------------------------------------------------------------

    def add_bot(self, token: str, username: str = "bot_1", first_name: str | None = None) -> int:
        """Register a bot token (its id is the token's numeric prefix, as Telegram's are)."""
        prefix = token.split(":", 1)[0]
        with self.world.cond:
            existing = self.world.bots.get(token)
            if existing is not None:
                existing.revoked = False
                return existing.user_id
            user_id = int(prefix) if prefix.isdigit() else self.world.next_bot_id()
            self.world.bots[token] = BotAccount(
                token=token, user_id=user_id, username=username, first_name=first_name or username
            )
            return user_id

    def revoke(self, token: str) -> None:
        """From now on every call with this token answers 401 (waiting long polls too)."""
        with self.world.cond:
            self._bot(token).revoked = True
            self.world.cond.notify_all()

    def user_sends(self, token: str, chat_id: int, text: str, first_name: str = "Ann") -> int:
        """A user writes `text` to the bot in their private chat; returns the update_id."""
        with self.world.cond:
            bot = self._bot(token)
            chat = bot.chats.setdefault(chat_id, Chat(chat_id=chat_id, first_name=first_name))
            message: dict[str, Any] = {
                "message_id": chat.take_message_id(),
                "from": user_json(chat_id, chat.first_name),
                "chat": chat_json(chat_id, chat.first_name),
                "date": int(time.time()),
                "text": text,
            }
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
            return self._queue(bot, "message", message)

    def user_presses(self, token: str, chat_id: int, message_id: int, data: str) -> int:
        """A user presses the inline button with `data` under a bot message; returns update_id."""
        with self.world.cond:
            bot = self._bot(token)
            message = bot.find_message(chat_id, message_id)
            if message is None:
                raise ValueError(f"the bot sent no message {message_id} to chat {chat_id}")
            if data not in [button_data for _, button_data in buttons_of(message.reply_markup)]:
                raise ValueError(f"message {message_id} in chat {chat_id} has no button {data!r}")
            chat = bot.chats[chat_id]
            query_id = self.world.next_callback_id()
            bot.open_callbacks[query_id] = chat_id
            query = {
                "id": query_id,
                "from": user_json(chat_id, chat.first_name),
                "message": message_json(bot, message),
                "chat_instance": f"{bot.user_id}{chat_id}",
                "data": data,
            }
            return self._queue(bot, "callback_query", query)

    def block(self, token: str, chat_id: int) -> None:
        """The user blocks the bot: sending to the chat answers 403 from now on."""
        with self.world.cond:
            self._bot(token).chats[chat_id].blocked = True

    def fail_next(
        self, token: str, method: str, error_code: int = 429, retry_after: int = 1, times: int = 1
    ) -> None:
        """The next `times` calls of `method` with this token fail with `error_code`."""
        with self.world.cond:
            queue = self.world.failures.setdefault((token, method.lower()), [])
            queue.extend(error_for(error_code, retry_after) for _ in range(times))

    # -- what happened --------------------------------------------------------------------------

    def messages(self, token: str, chat_id: int | None = None) -> list[SentMessage]:
        """What the bot sent (to one chat, or all), in order."""
        with self.world.cond:
            return self._messages(token, chat_id)

    def wait_for_messages(
        self, token: str, chat_id: int, count: int, timeout: float = 20
    ) -> list[SentMessage]:
        """Block until the bot has sent at least `count` messages to the chat; all of them."""
        deadline = time.monotonic() + timeout
        with self.world.cond:
            while True:
                sent = self._messages(token, chat_id)
                left = deadline - time.monotonic()
                if len(sent) >= count or left <= 0:
                    break
                self.world.cond.wait(min(left, 1.0))
        if len(sent) < count:
            texts = [message.text for message in sent]
            raise TimeoutError(
                f"chat {chat_id}: {len(sent)} of {count} messages after {timeout}s: {texts}"
            )
        return sent

    def calls(self, token: str, method: str | None = None) -> list[Call]:
        """Every request seen with this token (any method, or one, case-insensitive)."""
        with self.world.cond:
            seen = list(self.world.calls.get(token, []))
        if method is None:
            return seen
        return [call for call in seen if call.method.lower() == method.lower()]

    def answered_callbacks(self, token: str) -> list[str]:
        with self.world.cond:
            return list(self._bot(token).answered_callbacks)

    def pending_updates(self, token: str) -> int:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        with self.world.cond:
            return len(self._bot(token).updates)

    # -- inside ---------------------------------------------------------------------------------

    def _bot(self, token: str) -> BotAccount:
        bot = self.world.bots.get(token)
        if bot is None:
            raise KeyError(f"unknown bot token {token!r}: add_bot() it first")
        return bot

    def _messages(self, token: str, chat_id: int | None) -> list[SentMessage]:
        return [
            message.snapshot()
            for message in self._bot(token).messages
            if chat_id is None or message.chat_id == chat_id
        ]

    def _queue(self, bot: BotAccount, kind: str, payload: dict[str, Any]) -> int:
        """Queue an update (unless the bot's allowed_updates exclude its kind) and wake polls."""
        update_id = bot.take_update_id()
        if not bot.allowed_updates or kind in bot.allowed_updates:
            bot.updates.append({"update_id": update_id, kind: payload})
            self.world.cond.notify_all()
        return update_id
