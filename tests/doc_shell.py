"""One bash that keeps its variables and directory between commands, like a terminal: how the
tutorial's walk (tests/e2e/test_readme_walk.py) and the guide (tests/e2e/test_byob_guide.py) run
their documents' blocks line by line."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path


class Shell:
    """`run(command)` answers (exit status, output) once the command is done."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
        )

    def run(self, command: str) -> tuple[int, str]:
        marker = f"__shell_done_{uuid.uuid4().hex}__"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\nprintf '\\n{marker}%s\\n' $?\n")
        self.proc.stdin.flush()
        output: list[str] = []
        for line in self.proc.stdout:
            if line.startswith(marker):
                return int(line[len(marker) :]), "".join(output)
            output.append(line)
        raise AssertionError(f"bash ended while running {command!r}: {''.join(output)}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
