"""`ApiClient`: one method per endpoint of the botfleet HTTP API (see /docs).

It speaks HTTP through `botfleet.cli.transport`: the standard library's http.client on a direct
connection, httpx otherwise (a proxy, …), imported when a client is made, never with this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botfleet.cli.bulk_api import BulkCalls
from botfleet.cli.sse import Event, SSEParser
from botfleet.cli.transport import TransportError, client_for

if TYPE_CHECKING:
    import httpx

    from botfleet.cli.transport import Answer, StreamedAnswer

Json = dict[str, Any]
MAX_PAGE = 1000  # the API's largest `?limit=`


class ApiError(Exception):
    """The API refused: its HTTP status and the stable `{code, message}` it sent."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message, self.body = status, code, message, body


class Unreachable(Exception):
    """No HTTP answer at all (refused, DNS, timeout): a different fix than an API error."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url, self.reason = url, reason


class ApiClient(BulkCalls):  # bulk operations and edits: cli/bulk_api.py
    def __init__(self, url: str, token: str | None, *, timeout: float = 30) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = client_for(url, headers, timeout)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    # ---- transport ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Answer | httpx.Response:
        """`params`, `json` and `headers` as httpx takes them; an error status raises ApiError,
        no answer at all Unreachable."""
        try:
            response = self.http.request(method, path, **kwargs)
        except TransportError as exc:
            raise Unreachable(self.url, exc.reason) from exc
        _raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _pages(
        self, path: str, params: list[tuple[str, str | int]] | None = None
    ) -> Iterator[Json]:
        """Every page of a list, following `next_cursor` until the server says there is no
        more (every list of the API is a page: `{"items": [...], "next_cursor": ...}`)."""
        cursor = None
        while True:
            query = list(params or []) + ([("cursor", cursor)] if cursor else [])
            page = self._json("GET", path, params=query)
            yield page
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _all(self, path: str) -> list[Json]:
        """The items of every page, in the list's own order, at the largest page size."""
        return [item for page in self._pages(path, [("limit", MAX_PAGE)]) for item in page["items"]]

    # ---- bots --------------------------------------------------------------------------------

    def start_bot(self, body: Json, *, idempotency_key: str | None = None) -> Json:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/bots", json=body, headers=headers)

    def list_bots(
        self,
        *,
        status: list[str] | None = None,
        labels: list[tuple[str, str]] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        user_id: str | None = None,
        id_part: str | None = None,
    ) -> Json:
        """One page of bots; `id_part`: those whose id starts or ends with it (a prefix, or the
        short id the CLI shows)."""
        params = _bot_filters(status, labels, limit, user_id)
        if id_part:
            params.append(("id", id_part))
        if cursor:
            params.append(("cursor", cursor))
        return self._json("GET", "/bots", params=params)

    def iter_pages(
        self,
        *,
        status: list[str] | None = None,
        labels: list[tuple[str, str]] | None = None,
        limit: int | None = None,
        user_id: str | None = None,
    ) -> Iterator[Json]:
        """Every page of `GET /bots`, following `next_cursor` until there is no more."""
        return self._pages("/bots", _bot_filters(status, labels, limit, user_id))

    def get_bot(self, bot_id: str) -> Json:
        return self._json("GET", f"/bots/{bot_id}")

    def transitions(self, bot_id: str) -> list[Json]:
        """The whole history, oldest first (every page)."""
        return self._all(f"/bots/{bot_id}/transitions")

    def merge_config(self, bot_id: str, patch: Json) -> Json:
        """A JSON Merge Patch (RFC 7396) of the config: keys merge, null removes one."""
        return self._json("PATCH", f"/bots/{bot_id}/config", json={"config": patch})

    def replace_config(self, bot_id: str, config: Json) -> Json:
        return self._json("PUT", f"/bots/{bot_id}/config", json={"config": config})

    def stop_bot(self, bot_id: str) -> Json:
        return self._json("POST", f"/bots/{bot_id}/stop")

    def relaunch_bot(self, bot_id: str, *, idempotency_key: str | None = None) -> Json:
        """A new bot made from an ended one (409 `bot_live` while it runs)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", f"/bots/{bot_id}/relaunch", headers=headers)

    def delete_bot(self, bot_id: str, *, purge_state: bool = False) -> None:
        """An ended bot, its history and logs (409 `bot_live` while it runs)."""
        params = {"purge_state": 1} if purge_state else {}
        self._request("DELETE", f"/bots/{bot_id}", params=params)

    def commands(self, bot_id: str) -> list[Json]:
        """Every command sent to the bot, newest first (every page)."""
        return self._all(f"/bots/{bot_id}/commands")

    def get_command(self, bot_id: str, command_id: str) -> Json:
        return self._json("GET", f"/bots/{bot_id}/commands/{command_id}")

    def send_command(self, bot_id: str, action: str, payload: Json) -> Json:
        """A custom command for the bot's `on_command`; its answer is the command's `result`."""
        return self._json(
            "POST", f"/bots/{bot_id}/commands", json={"action": action, "payload": payload}
        )

    def replace_secrets(self, bot_id: str, secrets: dict[str, str]) -> Json:
        """A live bot's whole new set of secrets; the answer is the `secrets` command."""
        return self._json("PUT", f"/bots/{bot_id}/secrets", json=secrets)

    def logs(self, bot_id: str, *, tail: int | None = None) -> str:
        params = {"tail": tail} if tail else {}
        return self._request("GET", f"/bots/{bot_id}/logs", params=params).text

    def follow_logs(self, bot_id: str, *, tail: int) -> Iterator[str]:
        """The last `tail` lines, then each new line as the bot writes it, from one streamed
        `GET /bots/{id}/logs?follow=1` (no polling); ends when the bot's workload ends."""
        params: dict[str, str | int] = {"tail": tail, "follow": 1}
        path = f"/bots/{bot_id}/logs"
        try:
            # A quiet bot sends nothing for a long time: no read timeout.
            with self.http.stream("GET", path, params=params, connect_s=10, read_s=None) as resp:
                if resp.is_error:
                    resp.read()
                    _raise_for_error(resp)
                yield from resp.iter_lines()
        except TransportError as exc:
            raise Unreachable(self.url, exc.reason) from exc

    # ---- users (admin token) -----------------------------------------------------------------

    def create_user(self, name: str, *, max_concurrent_bots: int | None = None) -> Json:
        body: Json = {"name": name}
        if max_concurrent_bots is not None:
            body["max_concurrent_bots"] = max_concurrent_bots
        return self._json("POST", "/admin/users", json=body)

    def list_users(self) -> list[Json]:
        """Every user (every page)."""
        return self._all("/admin/users")

    def set_limit(self, user_id: str, max_concurrent_bots: int) -> Json:
        body = {"max_concurrent_bots": max_concurrent_bots}
        return self._json("PATCH", f"/admin/users/{user_id}", json=body)

    def create_key(
        self,
        user_id: str,
        *,
        name: str | None = None,
        scopes: list[str] | None = None,
        expires_in_s: int | None = None,
    ) -> Json:
        body: Json = {}
        if name is not None:
            body["name"] = name
        if scopes:
            body["scopes"] = scopes
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return self._json("POST", f"/admin/users/{user_id}/keys", json=body)

    def list_keys(self, user_id: str) -> list[Json]:
        """The user's live keys (every page), never the keys themselves."""
        return self._all(f"/admin/users/{user_id}/keys")

    def revoke_key(self, user_id: str, key_id: str) -> None:
        self._request("DELETE", f"/admin/users/{user_id}/keys/{key_id}")

    def set_default_restart(self, user_id: str, policy: Json | None) -> Json:
        """The restart policy of the user's bots that name none (None removes it)."""
        body = {"default_restart": policy}
        return self._json("PATCH", f"/admin/users/{user_id}", json=body)

    def set_disabled(self, user_id: str, disabled: bool) -> Json:
        return self._json("PATCH", f"/admin/users/{user_id}", json={"disabled": disabled})

    def audit(
        self, *, user_id: str | None = None, since: str | None = None, limit: int | None = None
    ) -> Json:
        """One page of the admin log, newest first."""
        params: list[tuple[str, str | int]] = []
        if user_id:
            params.append(("user_id", user_id))
        if since:
            params.append(("since", since))
        if limit:
            params.append(("limit", limit))
        return self._json("GET", "/admin/audit", params=params)

    # ---- kinds (writes with the admin token) -------------------------------------------------

    def list_kinds(self) -> list[Json]:
        return self._all("/kinds")

    def get_kind(self, name: str) -> Json:
        return self._json("GET", f"/kinds/{name}")

    def register_kind(self, document: Json) -> Json:
        return self._json("POST", "/admin/kinds", json=document)

    def update_kind(self, name: str, document: Json) -> Json:
        return self._json("PUT", f"/admin/kinds/{name}", json=document)

    def retire_kind(self, name: str) -> None:
        self._request("DELETE", f"/admin/kinds/{name}")

    # ---- events ------------------------------------------------------------------------------

    def events(
        self, *, last_event_id: str | None = None, max_backoff_s: float = 30
    ) -> Iterator[Event]:
        """The live stream of `GET /events`, forever.

        A dropped connection (or a 5xx) reconnects with exponential backoff and resumes after the
        last id seen, so a manager restart loses nothing; a 4xx is the caller's to fix and raises.
        """
        backoff = 0.5
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            parser = SSEParser()
            # Keep-alives arrive well within the read timeout; a silent socket is a dead one.
            stream = self.http.stream("GET", "/events", headers=headers, connect_s=10, read_s=90)
            try:
                with stream as resp:
                    if resp.is_error:
                        resp.read()
                        _raise_for_error(resp)
                    for chunk in resp.iter_bytes():
                        for event in parser.feed(chunk):
                            last_event_id = event.id or last_event_id
                            backoff = 0.5
                            yield event
            except TransportError:
                pass
            except ApiError as exc:
                if exc.status < 500:
                    raise
            if parser.retry_ms is not None:
                backoff = max(backoff, parser.retry_ms / 1000)
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


def _bot_filters(
    status: list[str] | None,
    labels: list[tuple[str, str]] | None,
    limit: int | None,
    user_id: str | None = None,
) -> list[tuple[str, str | int]]:
    params: list[tuple[str, str | int]] = [("status", s) for s in status or []]
    params += [("label", f"{key}:{value}") for key, value in labels or []]
    if limit:
        params.append(("limit", limit))
    if user_id:
        params.append(("user_id", user_id))  # the admin fleet view
    return params


def _raise_for_error(response: Answer | StreamedAnswer | httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict) and "code" in detail:
        raise ApiError(response.status_code, detail["code"], str(detail.get("message", "")), body)
    text = response.text.strip()[:200] or response.reason_phrase
    raise ApiError(response.status_code, f"http_{response.status_code}", text, body)
