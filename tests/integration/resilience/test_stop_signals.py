"""A manager signalled twice still stops (found in CI: `make run` and its manager both got
SIGTERM, and the manager hung for good). The stopping flag used to be a threading.Event, set from
the signal handler: a second signal arriving inside `Event.set` re-entered it and deadlocked on
its lock. Here a process installs the manager's real handler and is sent SIGTERM thousands of
times a second by another process; it must still finish."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO

SCRIPT = r"""
import os, signal, subprocess, sys, time
import uvicorn
from fastapi import FastAPI
from botfleet.manager.http.shutdown import StoppingServer, stopping_flag

app = FastAPI()
server = StoppingServer(uvicorn.Config(app), app)
signal.signal(signal.SIGTERM, server.handle_exit)
# Another process sends the signals: no GIL of ours to wait for, so one lands mid-handler.
storm = subprocess.Popen([sys.executable, "-c", (
    "import os, signal, sys, time\n"
    "end = time.monotonic() + 1.5\n"
    "while time.monotonic() < end:\n"
    "    os.kill(int(sys.argv[1]), signal.SIGTERM)\n"
), str(os.getpid())])
while storm.poll() is None:
    sum(range(1000))  # the main thread busy in Python, where handlers run
assert stopping_flag(app).is_set() and server.should_exit
print("stopped")
"""


def test_a_storm_of_stop_signals_never_hangs_the_manager() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr[-2000:]
