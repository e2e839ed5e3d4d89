"""The unit tier stays a unit tier: a test here that starts a process or opens a network socket
fails at once, instead of slowly turning `make test-fast` into an integration run."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import croniter  # noqa: F401  (imported before the guard: its import runs `file` once)
import pytest

NETWORK = (socket.AF_INET, socket.AF_INET6)


class NotAUnitTest(AssertionError):
    """What a unit test did that belongs to tests/integration."""


@pytest.fixture(autouse=True)
def no_processes_nor_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def no_process(*args: Any, **kwargs: Any) -> None:
        raise NotAUnitTest(f"a unit test started a process: {args[:1]}")

    def guarded(method: Any) -> Any:
        def call(self: socket.socket, *args: Any, **kwargs: Any) -> Any:
            if self.family in NETWORK:
                raise NotAUnitTest(f"a unit test used the network: {method.__name__}{args}")
            return method(self, *args, **kwargs)

        return call

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, guarded(getattr(socket.socket, name)))
    yield
