"""Figure 10, telegram: updates answered per second by `telegram` bots (issue 20).

Real `telegram` bots (the runtime, aiogram, the scenario, the state file written after every
update) run on the process backend of a real manager and long-poll the Telegram Bot API
stand-in (tests/telegram_standin) in this process. A backlog of `/help` messages, one per chat so
the per-chat limit never binds, is queued at once; the figure is the backlog divided by the time
until its last answer reached the stand-in: for one bot, then for the fleet of twenty together.
The bots pace themselves to Telegram's flood limit of about thirty messages a second per bot, so
thirty a second (six hundred for twenty) is the ceiling a bot should reach, not a shortfall.

The floor is the stand-in's own: a bare asyncio client (httpx) running the same
getUpdates + sendMessage loop per token with no framework, no state and no pacing, measured in
the same run on the same backlog. The stand-in shares this process and the machine's cores
with the bots, so both figures include its cost; neither says anything about api.telegram.org.
Also reported: the reply latency of one message at a time (user message queued to answer
recorded), bot beside floor.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import Figure, bench_manager, latency_stats, median, ms, ratio, stop_all
from tests.support import wait_until
from tests.telegram_standin import TelegramStandIn

HELP_TEXT = "Send /start to begin."
TELEGRAM_CAP_PER_BOT = 30  # messages a second, Telegram's documented approximate limit
LATENCY_SAMPLES = 30
NEW_CHATS = itertools.count(10_000_000)  # every measurement talks in chats of its own

SCENARIO = {
    "start": "welcome",
    "help": {"en": HELP_TEXT},
    "steps": {
        "welcome": {"message": {"en": "Hi! What is your name?"}, "collect": "name", "next": "hi"},
        "hi": {"message": {"en": "Hello {name}!"}},
    },
}


def tokens(prefix: int, count: int) -> list[str]:
    return [f"{prefix + i}:AAB{uuid.uuid4().hex}" for i in range(count)]


def backlog(standin: TelegramStandIn, tokens_: list[str], per_token: int) -> float:
    """Queue `per_token` /help messages (one per new chat) for each token and wait for every
    answer; answers per second from the first message queued to the last answer recorded."""
    before = {token: len(standin.messages(token)) for token in tokens_}
    chats = [next(NEW_CHATS) for _ in range(per_token)]
    began = time.time()
    for chat in chats:
        for token in tokens_:
            standin.user_sends(token, chat, "/help")
    last = began
    for token in tokens_:
        want = before[token] + per_token
        sent = wait_until(
            lambda token=token, want=want: len(m := standin.messages(token)) >= want and m,
            timeout=300,
            interval=0.2,
            what=f"{per_token} answers of {token.split(':')[0]}",
        )
        assert all(m.text == HELP_TEXT for m in sent[before[token] :])
        last = max(last, sent[want - 1].at)
    return len(tokens_) * per_token / (last - began)


def latencies(standin: TelegramStandIn, token: str, samples: int) -> list[float]:
    """One message at a time, each in a new chat (one chat would measure the bot's pacing of
    about one message a second): from the user's message queued to the answer recorded."""
    result = []
    for chat in (next(NEW_CHATS) for _ in range(samples)):
        sent_at = time.time()
        standin.user_sends(token, chat, "/help")
        answer = standin.wait_for_messages(token, chat, 1, timeout=30)[0]
        result.append(answer.at - sent_at)
    return result


async def _bare_loop(base: str, stop: threading.Event) -> None:
    """What a bot does at the least: long-poll, answer each message, confirm by offset."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        offset: int | None = None
        while not stop.is_set():
            params: dict[str, Any] = {"timeout": 1, "allowed_updates": json.dumps(["message"])}
            if offset is not None:
                params["offset"] = offset
            updates = (await client.post("/getUpdates", data=params)).json()["result"]
            for update in updates:
                offset = update["update_id"] + 1
                chat_id = update["message"]["chat"]["id"]
                await client.post("/sendMessage", data={"chat_id": chat_id, "text": HELP_TEXT})


@contextmanager
def bare_clients(standin: TelegramStandIn, tokens_: list[str]) -> Iterator[None]:
    """The floor's loops, one per token, in one asyncio thread (as one bot's process is)."""
    stop = threading.Event()

    async def main() -> None:
        await asyncio.gather(*(_bare_loop(f"{standin.url}/bot{t}", stop) for t in tokens_))

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def start_fleet(client: httpx.Client, standin: TelegramStandIn, tokens_: list[str]) -> list[str]:
    ids = []
    for n, token in enumerate(tokens_):
        response = client.post(
            "/bots",
            json={
                "bot": "telegram",
                "name": f"bench-telegram-{n}",
                "config": {"language": "en", "api_url": standin.url, "scenario": SCENARIO},
                "secrets": {"bot_token": token},
                "state_key": f"bench-tg-{n}-{uuid.uuid4().hex[:6]}",
            },
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    for token in tokens_:  # polling: the bot started and asked for updates
        wait_until(
            lambda token=token: standin.calls(token, "getUpdates"),
            timeout=180,
            interval=0.2,
            what="the telegram bots' first long polls",
        )
    return ids


def run(tmp: Path, redis_url: str, *, fleet: int = 20, updates: int = 300) -> Figure:
    per_bot = max(1, updates // 2)
    with TelegramStandIn() as standin:
        floor_tokens = tokens(5_000_000, fleet)
        bot_tokens = tokens(6_000_000, fleet)
        for token in floor_tokens + bot_tokens:
            standin.add_bot(token)
        with bare_clients(standin, floor_tokens[:1]):
            floor_one = backlog(standin, floor_tokens[:1], updates)
            floor_latency = latencies(standin, floor_tokens[0], LATENCY_SAMPLES)
        with bare_clients(standin, floor_tokens):
            floor_fleet = backlog(standin, floor_tokens, per_bot)
        with bench_manager(tmp / "telegram", redis_url) as manager:
            _, client = manager.new_user(max_bots=fleet)
            with client:
                ids = start_fleet(client, standin, bot_tokens)
                one = backlog(standin, bot_tokens[:1], updates)
                bot_latency = latencies(standin, bot_tokens[0], LATENCY_SAMPLES)
                together = backlog(standin, bot_tokens, per_bot)
                stop_all(client, ids)
    cap = TELEGRAM_CAP_PER_BOT
    values = {
        "one_bot_updates_per_s": one,
        "fleet_updates_per_s": together,
        "fleet_bots": fleet,
        "backlog_one_bot": updates,
        "backlog_per_fleet_bot": per_bot,
        "telegram_cap_per_bot_per_s": cap,
        "one_bot_share_of_cap": one / cap,
        "fleet_share_of_cap": together / (cap * fleet),
        "reply_latency": latency_stats(bot_latency, 50, 99),
    }
    floor = {
        "one_client_updates_per_s": floor_one,
        "fleet_clients_updates_per_s": floor_fleet,
        "reply_latency": latency_stats(floor_latency, 50, 99),
    }
    r = ratio(one, floor_one)
    return Figure(
        key="telegram_updates",
        title=f"Updates answered per second by telegram bots (1 and {fleet}), stand-in API",
        label=f"telegram updates/s (1 bot, {fleet} bots; Telegram caps a bot near {cap}/s)",
        measured=(
            f"1 bot {one:.0f}/s, {fleet} bots {together:.0f}/s in all; one reply "
            f"p50 {ms(median(bot_latency))}"
        ),
        floor_text=(
            f"bare client loop {floor_one:.0f}/s, {fleet} loops {floor_fleet:.0f}/s; "
            f"p50 {ms(median(floor_latency))}"
        ),
        ratio_text=(
            f"{r:.2f}x (1 bot), {ratio(together, floor_fleet):.2f}x ({fleet} bots); "
            f"1 bot at {one / cap:.0%} of Telegram's cap"
        ),
        values=values,
        floor=floor,
        ratio=r,
        ratio_of="one bot's updates/s / one bare loop's",
        samples={"bot reply": bot_latency, "floor reply": floor_latency},
        notes=f"the bots pace themselves to about {cap} messages/s each (Telegram's flood "
        "limit); the stand-in runs in the benchmark's process",
    )
