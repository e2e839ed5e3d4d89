"""The API client's calls for bulk operations and bot edits (`ApiClient` inherits them): kept
apart so that `cli/api.py` stays short. They use the client's own transport (`_json`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Json = dict[str, Any]


class BulkCalls:
    """`POST /bots/actions`, `/operations/...`, `PATCH /bots/{id}` and `GET /bots/{id}/edits`."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # ApiClient's
        raise NotImplementedError

    def _pages(
        self, path: str, params: list[tuple[str, str | int]] | None = None
    ) -> Iterator[Json]:
        raise NotImplementedError

    def bulk_action(self, body: Json, *, idempotency_key: str | None = None) -> Json:
        """Start an operation: 202 with it (`{id, action, status, total, done, failed, …}`)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return dict(self._json("POST", "/bots/actions", json=body, headers=headers))

    def get_operation(self, operation_id: str) -> Json:
        return dict(self._json("GET", f"/operations/{operation_id}"))

    def list_operations(self, *, limit: int | None = None) -> Json:
        params = [("limit", limit)] if limit else []
        return dict(self._json("GET", "/operations", params=params))

    def operation_results(self, operation_id: str, *, ok: bool | None = None) -> Iterator[Json]:
        """Every result so far (`ok`: only successes or failures), following the pages."""
        params: list[tuple[str, str | int]] = [("limit", 1000)]
        if ok is not None:
            params.append(("ok", "true" if ok else "false"))
        for page in self._pages(f"/operations/{operation_id}/results", params):
            yield from page["items"]

    def cancel_operation(self, operation_id: str) -> Json:
        return dict(self._json("POST", f"/operations/{operation_id}/cancel"))

    def edit_bot(self, bot_id: str, changes: Json) -> Json:
        return dict(self._json("PATCH", f"/bots/{bot_id}", json=changes))

    def bot_edits(self, bot_id: str) -> list[Json]:
        return [e for page in self._pages(f"/bots/{bot_id}/edits") for e in page["items"]]
