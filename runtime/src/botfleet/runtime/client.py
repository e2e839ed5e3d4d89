"""HTTP calls from the runtime to the manager: lifecycle events, reports, pending commands, acks,
the bot's secrets.

Every call retries transient failures (connection errors, timeouts, 5xx, 429) with backoff
within a budget, then gives up and logs: the bot keeps running even if the manager is away.
Other 4xx are final: 409 means the manager refused the transition, 401/403 that the token is
no longer valid; retrying would not change the answer.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from botfleet.runtime.http import HttpClient, Response, TransportError
from botfleet.runtime.protocol import (
    EVENT_EXITED,
    EVENT_HEARTBEAT,
    EVENT_REPORT,
    CommandMessage,
    ProtocolError,
)
from botfleet.runtime.retry import retry

log = logging.getLogger("botfleet.runtime.client")

LIFECYCLE_BUDGET_S = 60.0  # started / leaving / exited / acks / pending: worth waiting for
HEARTBEAT_BUDGET_S = 5.0  # the next heartbeat is coming anyway
REPORT_BUDGET_S = 10.0  # a bot awaits its report: not for a lifecycle budget
MAX_TEXT = 4000  # the manager's limit on `detail` and `error`
PENDING_PAGE = 1000  # the manager's largest page: fewest round trips on reconnect


class _Transient(Exception):
    """A 5xx or 429: the manager may answer differently in a moment."""


class ManagerClient:
    """Talks to `/internal/bots/{id}/…` with the bot's own bearer token."""

    def __init__(self, *, base_url: str, bot_id: str, token: str, timeout_s: float = 10.0):
        self._prefix = f"/internal/bots/{bot_id}"
        self._http = HttpClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout_s=timeout_s,
        )
        # Once `exited` is accepted the manager revokes the token: a call after it (nothing
        # should make one) hears 401, which is then the expected end, not an error.
        self._exited = False

    async def send_event(
        self,
        event: str,
        *,
        exit_code: int | None = None,
        reason: str | None = None,
        detail: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> bool:
        """POST one callback; True once the manager accepted it."""
        body: dict[str, Any] = {"event": event}
        if exit_code is not None:
            body["exit_code"] = exit_code
        if reason is not None:
            body["reason"] = reason
        if detail is not None:
            body["detail"] = detail[:MAX_TEXT]
        if data is not None:
            body["data"] = data
        budget = {EVENT_HEARTBEAT: HEARTBEAT_BUDGET_S, EVENT_REPORT: REPORT_BUDGET_S}.get(
            event, LIFECYCLE_BUDGET_S
        )
        accepted = await self._call("POST", "/callbacks", f"{event} callback", budget, body)
        if event == EVENT_EXITED and accepted is not None:
            self._exited = True
        return accepted is not None

    async def pending_commands(self) -> list[CommandMessage]:
        """Commands not yet acked, oldest first; [] when the manager cannot be reached.

        The manager answers a page at a time (`{"items": [...], "next_cursor": ...}`); every
        page is read before any command is applied. Pages are keyset pages, so acks sent while
        reading never shift them. A plain array (a manager from before pages) is one last page.
        """
        what = "reading pending commands"
        commands: list[CommandMessage] = []
        params: dict[str, Any] = {"pending": 1, "limit": PENDING_PAGE}
        seen: set[str] = set()
        while True:
            data = await self._call("GET", "/commands", what, LIFECYCLE_BUDGET_S, params=params)
            items, cursor = _page(data)
            if items is None:
                if data is not None:
                    log.error("pending commands: expected a page, got %s", type(data).__name__)
                return commands
            for item in items:
                try:
                    commands.append(CommandMessage.from_dict(item))
                except ProtocolError as exc:
                    log.warning("ignoring a malformed pending command: %s", exc)
            if not cursor or cursor in seen:  # a repeated cursor would loop forever
                return commands
            seen.add(cursor)
            params = {**params, "cursor": cursor}

    async def ack(
        self, command_id: str, ok: bool, error: str | None = None, result: Any = None
    ) -> bool:
        """Answer a command: `{"ok": true, "result"?}` or `{"ok": false, "error"}`."""
        body: dict[str, Any] = {"ok": ok}
        if not ok:
            body["error"] = (error or "failed")[:MAX_TEXT]
        elif result is not None:
            body["result"] = result
        path = f"/commands/{quote(command_id, safe='')}/ack"
        answer = await self._call("POST", path, f"ack {command_id}", LIFECYCLE_BUDGET_S, body)
        return answer is not None

    async def fetch_secrets(self) -> dict[str, str] | None:
        """The bot's current secrets, read with its token (they never travel over Redis);
        None when the manager cannot be reached or answers something else than an object."""
        data = await self._call("GET", "/secrets", "reading secrets", LIFECYCLE_BUDGET_S)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return None
        return data

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        budget_s: float,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (or True when empty), or None after giving up."""

        async def attempt() -> Response:
            resp = await self._http.request(method, self._prefix + path, json=body, params=params)
            if resp.status_code >= 500 or resp.status_code == 429:
                raise _Transient(f"HTTP {resp.status_code}")
            return resp

        try:
            resp = await retry(
                attempt, retry_on=(TransportError, _Transient), budget_s=budget_s, what=what
            )
        except (TransportError, _Transient) as exc:
            log.error("%s: giving up (%s: %s)", what, type(exc).__name__, exc)
            return None
        if resp.is_error and self._exited and resp.status_code in (401, 403):
            log.info("%s: token revoked since the bot exited (HTTP %s)", what, resp.status_code)
            return None
        if resp.is_error:
            hint = {401: "token rejected", 403: "token rejected", 409: "transition refused"}
            log.error(
                "%s: HTTP %s (%s): %s",
                what, resp.status_code, hint.get(resp.status_code, "not retried"), resp.text[:500],
            )  # fmt: skip
            return None
        try:
            return resp.json() if resp.content else True
        except ValueError:
            return True


def _page(data: Any) -> tuple[list[Any] | None, str | None]:
    """The items and next cursor of a page; a bare list is a whole answer; None: neither."""
    if isinstance(data, list):
        return data, None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        cursor = data.get("next_cursor")
        return data["items"], cursor if isinstance(cursor, str) else None
    return None, None


class SilentClient:
    """Stands in for ManagerClient when the bot disables callbacks: every call is a no-op."""

    async def send_event(self, event: str, **_: Any) -> bool:
        log.debug("callbacks disabled: not sending %s", event)
        return True

    async def pending_commands(self) -> list[CommandMessage]:
        return []

    async def ack(
        self, command_id: str, ok: bool, error: str | None = None, result: Any = None
    ) -> bool:
        return True

    async def fetch_secrets(self) -> dict[str, str] | None:
        return None

    async def aclose(self) -> None:
        return None
