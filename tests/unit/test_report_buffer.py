"""Bots' reports, the pure parts: the runtime refuses a report over 16 KiB before sending, and the
manager's buffer writes one report per bot per interval, keeping the latest."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from botfleet.manager.hot_path.report_batches import ReportBuffer, ReportsFull
from botfleet.runtime.bot import Bot


def test_the_runtime_refuses_a_report_over_16_kib_before_sending() -> None:
    sent: list[dict[str, Any]] = []

    async def send(data: dict[str, Any]) -> bool:
        sent.append(data)
        return True

    bot = Bot(bot_id="b", config={}, secrets={}, logger=logging.getLogger())
    bot._send_report = send
    assert asyncio.run(bot.report({"n": 1})) is True
    with pytest.raises(ValueError, match="16384"):
        asyncio.run(bot.report({"blob": "x" * 16_400}))
    with pytest.raises(TypeError):
        asyncio.run(bot.report(["not", "an", "object"]))  # type: ignore[arg-type]
    assert sent == [{"n": 1}]


def test_the_buffer_writes_one_report_per_interval_and_keeps_the_latest() -> None:
    now = [100.0]
    buffer = ReportBuffer(min_interval_s=2.0, max_entries=2, clock=lambda: now[0])
    first = buffer.offer("a", "digest-a", {"n": 1})
    assert first is not None and first.data == {"n": 1}  # a quiet bot: written at once
    assert buffer.offer("a", "digest-a", {"n": 2}) is None  # within the interval: kept
    assert buffer.offer("a", "digest-a", {"n": 3}) is None  # ...replacing the older one
    assert buffer.offer("b", "digest-b", {"m": 1}) is not None  # another bot is not held up
    now[0] += 1.0
    assert buffer.take_due() == []  # a's interval is not over
    now[0] += 1.0
    due = buffer.take_due()
    assert [(r.bot_id, r.data) for r in due] == [("a", {"n": 3})]
    assert buffer.offer("a", "digest-a", {"n": 4}) is None  # just written: the next one waits

    # A batch the database refused goes back, and a newer report of the same bot wins.
    now[0] += 2.0
    refused = buffer.take_due()
    assert [r.data for r in refused] == [{"n": 4}]
    now[0] += 0.1
    assert buffer.offer("a", "digest-a", {"n": 5}) is None
    buffer.restore(refused)
    now[0] += 2.0
    assert [r.data for r in buffer.take_due()] == [{"n": 5}]

    # Past `max_entries` waiting bots a report is refused (503), never silently dropped.
    for bot_id in ("c", "d", "e"):
        assert buffer.offer(bot_id, "x", {"first": True}) is not None
    assert buffer.offer("c", "x", {}) is None and buffer.offer("d", "x", {}) is None
    with pytest.raises(ReportsFull):
        buffer.offer("e", "x", {"again": 1})
    assert len(buffer) == 2
