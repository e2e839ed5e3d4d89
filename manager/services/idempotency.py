"""`Idempotency-Key`: the same key and body within 24 hours get the first answer again.

The key is claimed in the database before the work runs (a concurrent duplicate gets 409), and
the answer is stored with it, so replays survive restarts and work across replicas. Only
successful answers are kept: a refused request (422, 429…) may be retried with the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from manager.db import transaction
from manager.errors import Conflict, Invalid
from manager.models import IdempotencyRecord, utcnow

TTL = timedelta(hours=24)
REPLAY_HEADER = "Idempotent-Replayed"


def fingerprint(operation: str, body: Any) -> str:
    """What makes two requests "the same": the operation and the body's canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


def respond_once(
    sessions: sessionmaker[Session],
    *,
    user_id: str,
    key: str | None,
    fingerprint: str,
    status_code: int,
    run: Callable[[], Any],
) -> JSONResponse:
    """Run `run` (returning a JSON-able body) once per key, replaying its answer after."""
    if key is None:
        return JSONResponse(run(), status_code)
    with transaction(sessions) as session:
        record = session.get(IdempotencyRecord, (user_id, key), with_for_update=True)
        if record is not None and record.created_at < utcnow() - TTL:
            session.delete(record)
            session.flush()
            record = None
        if record is not None:
            return _replay(record, fingerprint)
    try:
        with transaction(sessions) as session:
            session.add(IdempotencyRecord(user_id=user_id, key=key, fingerprint=fingerprint))
    except IntegrityError:  # another request with this key claimed it a moment ago
        with sessions() as session:
            record = session.get(IdempotencyRecord, (user_id, key))
            if record is None:
                raise Conflict("idempotency_in_progress", "retry this request") from None
            return _replay(record, fingerprint)
    try:
        body = run()
    except BaseException:
        with transaction(sessions) as session:
            session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
                )
            )
        raise
    with transaction(sessions) as session:
        record = session.get(IdempotencyRecord, (user_id, key), with_for_update=True)
        if record is not None:
            record.status_code, record.body = status_code, body
    return JSONResponse(body, status_code)


def _replay(record: IdempotencyRecord, fingerprint: str) -> JSONResponse:
    if record.fingerprint != fingerprint:
        raise Invalid(
            "idempotency_mismatch",
            "this Idempotency-Key was used with another request; use a new key",
        )
    if record.status_code is None:
        raise Conflict("idempotency_in_progress", "the first request with this key still runs")
    return JSONResponse(record.body, record.status_code, headers={REPLAY_HEADER: "true"})


def sweep(session: Session) -> int:
    """Forget answers older than 24 hours."""
    result = session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - TTL)
    )
    return int(getattr(result, "rowcount", 0) or 0)
