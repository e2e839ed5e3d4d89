"""How the Telegram stand-in measures flood: violations per chat and per bot from send times, and
the sustained rate; pure."""

from __future__ import annotations

from tests.telegram_standin import SentMessage
from tests.telegram_standin.limits import flood_violations, sustained_rate


def test_flood_violations_are_measured_from_send_times() -> None:
    def at(chat_id: int, t: float) -> SentMessage:
        return SentMessage(1, chat_id, "x", [], t, False)

    assert flood_violations([at(1, t) for t in (0, 0.1, 0.2, 1.2, 2.2)]) == []
    assert flood_violations([at(1, t) for t in (0, 0.01, 0.02, 0.03)]) == [
        "chat 1: 1 messages over ~1/s (burst 3)"
    ]
    thirty_one = [at(chat_id, 0.01 * chat_id) for chat_id in range(31)]
    assert flood_violations(thirty_one) == [
        f"31 messages in one second from the bot (gaps ms: {[10] * 30})"
    ]
    assert flood_violations([*thirty_one[:30], at(30, 1.0)]) == []
    assert sustained_rate([0.0, 0.5, 1.0]) == 2.0
