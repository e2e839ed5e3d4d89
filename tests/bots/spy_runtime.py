"""`python -m tests.bots.spy_runtime`: the real runtime, after keeping a copy of what it received.

The process backend hands a bot its token and secrets through a pipe, never the environment, so
a test that must act as a bot (use its token) cannot read them from /proc/PID/environ. Managers
of such tests run this instead of `python -m botfleet.runtime` (tests/support.py `SPY_RUNTIME_ENV`);
it writes the environment plus the pipe's variables to `received-env.json` (0600) in the bot's
private working directory, where a root test reads it through /proc/PID/cwd, then hands the
secrets on through a new pipe and runs the runtime.
"""

from __future__ import annotations

import json
import os
import runpy

from botfleet.runtime.env import SECRET_ENV_FD, with_secret_env


def main() -> None:
    received = with_secret_env(os.environ)
    fd = os.open("received-env.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(received, out)
    secret_env = {k: v for k, v in received.items() if k not in os.environ}
    read_fd, write_fd = os.pipe()
    os.write(write_fd, json.dumps(secret_env).encode())  # small: fits the pipe's buffer
    os.close(write_fd)
    os.environ[SECRET_ENV_FD] = str(read_fd)
    runpy.run_module("botfleet.runtime", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
