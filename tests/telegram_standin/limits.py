"""Check recorded send times against Telegram's flood limits (the same rule `enforce_flood` uses).

Tests measure a bot's sending from the stand-in's timestamps with these, rather than trusting
the bot's own account of how fast it sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from tests.telegram_standin.state import (
    BOT_PER_SECOND,
    CHAT_BURST,
    CHAT_RATE_PER_S,
    SentMessage,
)


def densest_second(times: Iterable[float], slack_s: float = 0.0) -> list[float]:
    """The most sends inside any one-second window (shortened by `slack_s`), as their times."""
    ordered = sorted(times)
    best: list[float] = []
    start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= 1.0 - slack_s:
            start += 1
        if end - start + 1 > len(best):
            best = ordered[start : end + 1]
    return best


def most_in_one_second(times: Iterable[float], slack_s: float = 0.0) -> int:
    """The largest number of sends inside any one-second window (shortened by `slack_s`)."""
    return len(densest_second(times, slack_s))


def over_chat_limit(times: Iterable[float], slack_s: float = 0.05) -> int:
    """How many sends to one chat a bucket of CHAT_BURST refilled at CHAT_RATE_PER_S would refuse.

    `slack_s` forgives the jitter between the bot deciding to send and the stand-in's clock.
    """
    tokens, last, refused = float(CHAT_BURST), None, 0
    for at in sorted(times):
        if last is not None:
            tokens = min(CHAT_BURST, tokens + (at - last + slack_s) * CHAT_RATE_PER_S)
        last = at
        if tokens >= 1:
            tokens -= 1
        else:
            refused += 1
    return refused


def sustained_rate(times: Iterable[float]) -> float:
    """Sends a second from the first to the last (what jitter cannot inflate over a long run)."""
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] == ordered[0]:
        return float("inf") if len(ordered) > 1 else 0.0
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def flood_violations(messages: Iterable[SentMessage], slack_s: float = 0.25) -> list[str]:
    """Every way these messages (one bot's) broke the per-chat or per-bot limit; [] if none.

    `slack_s` forgives that much jitter between a bot's pacing and the stand-in's clock: a send
    leaves a busy event loop late and the next one on time, then crosses HTTP and a second
    scheduler (bunches of 0-5 ms gaps in a 30/s stream have been measured here with the machine's
    load near 20). A bot that does not pace at all still fails: it sends its burst within
    milliseconds. Pair it with `sustained_rate` over a long run; Telegram states its limits as
    approximate too.
    """
    messages = list(messages)
    problems = []
    densest = densest_second((m.at for m in messages), slack_s)
    if len(densest) > BOT_PER_SECOND:
        gaps = [round((b - a) * 1000) for a, b in itertools.pairwise(densest)]
        problems.append(f"{len(densest)} messages in one second from the bot (gaps ms: {gaps})")
    for chat_id in sorted({m.chat_id for m in messages}):
        refused = over_chat_limit((m.at for m in messages if m.chat_id == chat_id), slack_s)
        if refused:
            problems.append(f"chat {chat_id}: {refused} messages over ~1/s (burst {CHAT_BURST})")
    return problems
