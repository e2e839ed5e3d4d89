"""A bot's life as a picture: one bar per state it was in (how long each lasted), a lane of its
launch attempts, and a mark where it failed, with why. Pure geometry for the SVG in
`templates/bot.html`; the template escapes every text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from botfleet.manager.core.models import BotAttempt, BotTransition
from botfleet.manager.ui.templating import duration

WIDTH = 1000.0
MIN_SEGMENT = 3.0
TERMINAL = {"completed", "failed"}


@dataclass(frozen=True)
class Segment:
    state: str
    x: float
    width: float
    start: datetime
    seconds: float
    attempt: int
    note: str  # the reason and detail of the transition that began it

    @property
    def label(self) -> str:
        return self.state if self.width >= 70 else ""

    @property
    def title(self) -> str:
        text = f"{self.state} for {duration(self.seconds)} (attempt {self.attempt})"
        return f"{text}: {self.note}" if self.note else text


@dataclass(frozen=True)
class Failure:
    x: float
    at: datetime
    reason: str
    detail: str


@dataclass(frozen=True)
class AttemptBar:
    number: int
    x: float
    width: float
    outcome: str
    exit_code: int | None
    running: bool
    failed: bool

    @property
    def state(self) -> str:
        """The colour: running (active), ended in a failure, or ended well (completed)."""
        return "active" if self.running else "failed" if self.failed else "completed"


@dataclass(frozen=True)
class Timeline:
    start: datetime
    end: datetime
    segments: list[Segment]
    attempts: list[AttemptBar]
    failures: list[Failure]

    @property
    def total(self) -> str:
        return duration((self.end - self.start).total_seconds())


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _failed(move: BotTransition) -> bool:
    """A failure: the bot failed, or an attempt failed and the restart policy began another."""
    return move.to_status == "failed" or move.reason == "restarting"


def build(
    created_at: datetime,
    transitions: Sequence[BotTransition],
    attempts: Sequence[BotAttempt],
    *,
    now: datetime | None = None,
    first: str = "requested",
) -> Timeline:
    """The timeline from the bot's creation to its last transition when it has ended, else to
    now. Each state lasts from the transition into it to the next one."""
    start = _utc(created_at)
    moves = [(_utc(t.at), t) for t in transitions]
    ended = bool(moves) and moves[-1][1].to_status in TERMINAL
    end = moves[-1][0] if ended else _utc(now or datetime.now(UTC))
    end = max(end, start)
    span = max((end - start).total_seconds(), 1.0)

    def x_of(at: datetime) -> float:
        return round((at - start).total_seconds() / span * WIDTH, 1)

    # (state, since, attempt, note): the first state from creation (`requested`, or `queued`:
    # the first move's origin, else `first`, the state now), then every transition's target.
    initial = moves[0][1].from_status if moves else first
    spans: list[tuple[str, datetime, int, str]] = [(initial, start, 0, "")]
    failures = []
    for at, move in moves:
        note = move.reason + (f": {move.detail}" if move.detail else "")
        spans.append((move.to_status, at, move.attempt, note))
        if _failed(move):
            failures.append(Failure(x_of(at), at, move.reason, move.detail or ""))
    segments = []
    for i, (state, since, attempt, note) in enumerate(spans):
        if state in TERMINAL and i == len(spans) - 1:
            continue  # an end is a point, drawn as the mark and the axis' end
        until = spans[i + 1][1] if i + 1 < len(spans) else end
        x = x_of(since)
        width = max(x_of(until) - x, MIN_SEGMENT)
        segments.append(
            Segment(state, x, width, since, (until - since).total_seconds(), attempt, note)
        )
    # A restart's transition carries the new attempt's number: the failed one is the one before.
    failed_attempts = {
        move.attempt - 1 if move.reason == "restarting" else move.attempt
        for _, move in moves
        if _failed(move)
    }
    bars = []
    for a in attempts:
        launched = _utc(a.launched_at)
        finished = _utc(a.ended_at) if a.ended_at is not None else end
        x = x_of(launched)
        bars.append(
            AttemptBar(
                number=a.attempt,
                x=x,
                width=max(x_of(finished) - x, MIN_SEGMENT),
                outcome=a.outcome or ("running" if a.ended_at is None else "ended"),
                exit_code=a.exit_code,
                running=a.ended_at is None,
                failed=a.attempt in failed_attempts,
            )
        )
    return Timeline(start, end, segments, bars, failures)
