"""`Idempotency-Key` as a route dependency: the route asks for a replay first, and hands its
answer over to be kept. The claim and the answer live in the request's own transaction
(`manager/services/idempotency.py` says how duplicates and races are settled)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from botfleet.manager.http.deps import CurrentUser, SessionDep, SettingsDep
from botfleet.manager.services import idempotency

REPLAY_HEADER = "Idempotent-Replayed"

KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="The same key and body within 24 h return the first answer again.",
    ),
]


class Replayed(JSONResponse):
    """A kept answer sent again: its stored JSON text as is, byte for byte."""

    def render(self, content: Any) -> bytes:
        return content.encode() if isinstance(content, str) else super().render(content)


class Idempotency:
    """One request's `Idempotency-Key` (or none): `replay()` before the work, `answer()` after."""

    def __init__(
        self,
        session: SessionDep,
        user: CurrentUser,
        settings: SettingsDep,
        key: KeyHeader = None,
    ) -> None:
        self.session, self.user_id, self.key = session, user.id, key
        self.stale_after_s = settings.idempotency_claim_timeout_s
        self.claimed = False

    def replay(self, operation: str, body: Any) -> JSONResponse | None:
        """The first answer when this request repeats an earlier one with the same key; None
        when the work must run (then `answer` keeps what it returns)."""
        if self.key is None:
            return None
        record = idempotency.claim(
            self.session,
            user_id=self.user_id,
            key=self.key,
            fingerprint=idempotency.fingerprint(operation, body),
            stale_after_s=self.stale_after_s,
        )
        if record is None:
            self.claimed = True
            return None
        kept = record.answer if record.answer is not None else record.body  # body: before 0009
        assert record.status_code is not None  # claim() returns only answered records
        return Replayed(kept, record.status_code, headers={REPLAY_HEADER: "true"})

    def answer(self, model: BaseModel, status_code: int) -> JSONResponse:
        """The answer as JSON, kept (these very bytes) for replays when this request claimed a
        key: in the request's transaction, so the work and its answer commit together."""
        response = JSONResponse(model.model_dump(mode="json"), status_code)
        if self.claimed and self.key is not None:
            idempotency.store_answer(
                self.session,
                user_id=self.user_id,
                key=self.key,
                status_code=status_code,
                answer=bytes(response.body).decode(),
            )
        return response


Idempotent = Annotated[Idempotency, Depends()]
