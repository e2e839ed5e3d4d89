"""`Idempotency-Key`: the same key and body within 24 hours get the first answer again.

The key is claimed in the request's own transaction, before the work, and the answer is stored
in that same transaction: the claim, the work and the answer commit together or not at all. A
concurrent duplicate waits on the claim (PostgreSQL's unique index; SQLite's write lock) and then
replays the committed answer. Answers live in the database, so replays survive restarts and work
across replicas. Only successful answers are kept: a refused request (422, 429…) rolls its claim
back and may be retried with the same key.

A claim is therefore never seen without its answer, except one left by a request that died
between two separate transactions (how earlier versions kept them): once older than a request
could run (`idempotency_claim_timeout_s`) it is taken over by the next request with the key,
instead of answering 409 `idempotency_in_progress` for 24 hours.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from botfleet.manager.core.errors import Conflict, ErrorCode, Invalid
from botfleet.manager.core.models import IdempotencyRecord, utcnow

TTL = timedelta(hours=24)


def fingerprint(operation: str, body: Any) -> str:
    """What makes two requests "the same": the operation and the body's canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{operation}\n{canonical}".encode()).hexdigest()


def claim(
    session: Session, *, user_id: str, key: str, fingerprint: str, stale_after_s: float
) -> IdempotencyRecord | None:
    """Claim `key` for this request. None: this request is the first, so run it and
    `store_answer`; else the record whose answer to replay.

    422 `idempotency_mismatch` when the key was used with another request; 409
    `idempotency_in_progress` when the first request's answer is not there yet (a claim without
    an answer older than `stale_after_s` is taken over instead).
    """
    record = session.get(IdempotencyRecord, (user_id, key), with_for_update=True)
    now = utcnow()
    if record is not None and record.created_at < now - TTL:
        session.delete(record)
        session.flush()
        record = None
    stale = now - timedelta(seconds=stale_after_s)
    if record is not None and not answered(record) and record.created_at < stale:
        # Its request died without an answer, so none of its work was kept: the key is free.
        record.fingerprint, record.created_at = fingerprint, now
        return None
    if record is None:
        try:
            with session.begin_nested():  # a savepoint: losing the race keeps the transaction
                session.add(IdempotencyRecord(user_id=user_id, key=key, fingerprint=fingerprint))
            return None
        except IntegrityError:  # a concurrent request with this key committed first
            record = session.get(IdempotencyRecord, (user_id, key), populate_existing=True)
            if record is None:
                raise Conflict(ErrorCode.IDEMPOTENCY_IN_PROGRESS, "retry this request") from None
    if record.fingerprint != fingerprint:
        raise Invalid(
            ErrorCode.IDEMPOTENCY_MISMATCH,
            "this Idempotency-Key was used with another request; use a new key",
        )
    if not answered(record):
        raise Conflict(
            ErrorCode.IDEMPOTENCY_IN_PROGRESS, "the first request with this key still runs"
        )
    return record


def answered(record: IdempotencyRecord) -> bool:
    return record.status_code is not None


def store_answer(
    session: Session, *, user_id: str, key: str, status_code: int, answer: str
) -> None:
    """Keep the answer (its exact JSON text) of the request that claimed `key`, in the same
    transaction as its work."""
    record = session.get(IdempotencyRecord, (user_id, key))
    if record is None:
        raise RuntimeError(f"Idempotency-Key {key!r} was not claimed in this transaction")
    record.status_code, record.answer = status_code, answer


def sweep(session: Session) -> int:
    """Forget answers older than 24 hours."""
    result = session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < utcnow() - TTL)
    )
    return int(getattr(result, "rowcount", 0) or 0)
