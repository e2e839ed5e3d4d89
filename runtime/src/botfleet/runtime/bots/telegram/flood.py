"""Telegram's flood limits, kept on our side: about one message a second per chat (a short
burst allowed) and about thirty a second per bot. A 429 `retry_after` holds every send.

Each limit is a GCRA (a leaky bucket that schedules instead of refusing): `acquire` waits until
the message may go (per chat a little under the limit, to absorb the jitter between our clock
and the server's). Concurrent senders (the update loop, automatic steps, a broadcast) share one
pacer, so together they stay within the limits.

A schedule is only as good as the event loop that keeps it: when the loop stalls (a busy host,
a starved CPU share), every sender whose slot passed meanwhile wakes at once. So the bot-wide
limit is also checked against when sends really left: no more than the limit in any second.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque

# A little under Telegram's one a second: right after a burst, a send paced to the exact limit
# reaches the server a few milliseconds early by its clock as often as late, and is refused.
PER_CHAT_PER_S = 0.9
CHAT_BURST = 3
# Likewise a little under thirty a second per bot: a busy host's timer jitter bunches sends, and
# paced to the exact limit one second's window sometimes held 31.
PER_BOT_PER_S = 28.0
MAX_TRACKED_CHATS = 10_000


class _Gcra:
    """When the next event may happen, for `rate` a second with bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.interval = 1.0 / rate
        self.tolerance = (burst - 1) * self.interval
        self.tat = 0.0  # the theoretical arrival time of the next event

    def reserve(self, now: float) -> float:
        """Book the next slot; return when it is (>= now)."""
        at = max(now, self.tat - self.tolerance)
        self.tat = max(self.tat, at) + self.interval
        return at


class FloodPacer:
    def __init__(
        self,
        *,
        per_chat_per_s: float = PER_CHAT_PER_S,
        chat_burst: int = CHAT_BURST,
        per_bot_per_s: float = PER_BOT_PER_S,
    ) -> None:
        self.per_chat_per_s, self.chat_burst = per_chat_per_s, chat_burst
        self._chats: OrderedDict[int, _Gcra] = OrderedDict()
        # The bot-wide limit allows no burst: with one, a window of one second could see
        # burst + rate messages, above what Telegram allows.
        self._bot = _Gcra(per_bot_per_s, 1)
        self._per_bot = max(1, int(per_bot_per_s))
        self._sent: deque[float] = deque(maxlen=self._per_bot)  # when the last sends left
        self._hold_until = 0.0

    def hold(self, seconds: float) -> None:
        """Telegram said 429 retry_after: nothing is sent for `seconds`."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    async def wait_hold(self) -> None:
        while (left := self._hold_until - time.monotonic()) > 0:
            await asyncio.sleep(left)

    async def acquire(self, chat_id: int) -> None:
        """Wait until one more message to `chat_id` stays within every limit."""
        await _sleep_until(self._chat(chat_id).reserve(time.monotonic()))
        await self.wait_hold()
        await _sleep_until(self._bot.reserve(time.monotonic()))
        # A late wake-up (the loop stalled past the slot) must not let a backlog out at once.
        while len(self._sent) == self._per_bot and (free := self._sent[0] + 1.0) > time.monotonic():
            await _sleep_until(free)
        self._sent.append(time.monotonic())

    def _chat(self, chat_id: int) -> _Gcra:
        bucket = self._chats.get(chat_id)
        if bucket is None:
            if len(self._chats) >= MAX_TRACKED_CHATS:
                self._chats.popitem(last=False)
            bucket = self._chats[chat_id] = _Gcra(self.per_chat_per_s, self.chat_burst)
        self._chats.move_to_end(chat_id)
        return bucket


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
