"""An attacking bot for tests/integration/isolation/test_isolation_process.py: from inside a real
bot process it tries to read what belongs to other bots and to the manager, and prints what it
could read.

It prints one line `SNOOP <json>` (read back through GET /bots/{id}/logs): per target, "read"
when the attack worked, else the errno name (EACCES, EPERM, ENOENT, ...). It also starts two
`sleep 120` children, one in its process group and one escaped with setsid, and prints their
pids, so the test can check that they die with the bot.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botfleet.runtime.bot import Bot


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "read"


class SnoopBot(Bot):
    """Config: `victim_pid`, `victim_workdir`, `data_dir` (the manager's), `files` (names in it)."""

    callbacks_enabled = True

    async def on_start(self) -> None:
        config: dict[str, Any] = self.config
        data_dir = Path(config["data_dir"])
        victim = int(config["victim_pid"])
        attacks: dict[str, Callable[[], object]] = {
            "victim_environ": Path(f"/proc/{victim}/environ").read_bytes,
            "victim_memory": lambda: Path(f"/proc/{victim}/mem").open("rb").close(),
            "victim_signal": lambda: os.kill(victim, 0),
            "victim_workdir": lambda: os.listdir(config["victim_workdir"]),
            "manager_environ": Path(f"/proc/{os.getppid()}/environ").read_bytes,
            "data_dir_listing": lambda: os.listdir(data_dir),
        }
        for name in config["files"]:
            attacks[name] = (data_dir / name).read_bytes
        own_environ = Path("/proc/self/environ").read_bytes().decode(errors="replace")
        in_group = subprocess.Popen(["sleep", "120"])
        escaped = subprocess.Popen(["sleep", "120"], start_new_session=True)
        verdict = {
            "attacks": {name: _attempt(action) for name, action in attacks.items()},
            "secret_in_environ": self.secrets.get("api_key", "") in own_environ,
            "secret_names_in_environ": [
                n for n in ("BOTFLEET_BOT_TOKEN", "BOTFLEET_BOT_SECRETS") if n in own_environ
            ],
            "got_secret": bool(self.secrets.get("api_key")),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": os.getgroups(),
            "cwd": os.getcwd(),
            "home": os.environ.get("HOME"),
            "children": [in_group.pid, escaped.pid],
        }
        print("SNOOP " + json.dumps(verdict), flush=True)
