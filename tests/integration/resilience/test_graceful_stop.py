"""A manager stops promptly on SIGTERM while clients hold its long streams open.

uvicorn's graceful stop waits for open responses; the event stream and a followed log never
finish on their own, so before `manager/http/shutdown.py` every open dashboard tab or `botfleet
events` held a stop (Ctrl-C on `make run`, a rolling deploy's SIGTERM) for half a minute.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import RedisServer, running_manager, wait_for_status

# Far below the half minute a stream held the stop for, far above a stop's own few seconds.
STOP_WITHIN_S = 12


def _hold_open(url: str, headers: dict[str, str], opened: threading.Event) -> None:
    """Read a long response until the server ends it."""
    try:
        with httpx.stream("GET", url, headers=headers, timeout=None) as response:
            opened.set()
            for _ in response.iter_raw():
                pass
    except httpx.HTTPError:
        pass


def test_sigterm_ends_open_streams_and_the_manager_exits(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with running_manager(tmp_path, redis_server.url) as manager:
        user, client = manager.new_user()
        with client:
            bot = client.post("/bots", json={"bot": "demo", "config": {}}).json()
            wait_for_status(client, bot["id"], {"active"})
            headers = {"Authorization": f"Bearer {user['api_key']}"}
            streams = [
                f"{manager.url}/events",
                f"{manager.url}/bots/{bot['id']}/logs?follow=true",
            ]
            readers = []
            for url in streams:
                opened = threading.Event()
                reader = threading.Thread(target=_hold_open, args=(url, headers, opened))
                reader.start()
                assert opened.wait(10), f"{url} did not open"
                readers.append(reader)

            assert manager.proc is not None
            manager.proc.send_signal(signal.SIGTERM)
            try:
                code = manager.proc.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"the manager was still running {STOP_WITHIN_S}s after SIGTERM with two"
                    f" streams open:\n{manager.log_tail()}"
                )
            # uvicorn stops cleanly, then re-raises the signal it caught (exit by SIGTERM).
            assert code in (0, -signal.SIGTERM), manager.log_tail()
            assert "Application shutdown complete" in manager.log_tail()
            for reader in readers:
                reader.join(10)
                assert not reader.is_alive(), "a stream stayed open after the manager stopped"
