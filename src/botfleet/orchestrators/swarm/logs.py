"""A bot's output on swarm: from its node's own engine where botfleet reaches it, else through
the swarm (`service logs`, bounded and never followed).

`service logs` fails for a node after a partition of 45 s or more until that node's engine
restarts (moby#35011), and its `follow` never ends once the task ended: so the task's
container is read on its node's engine (nodes.py), with the docker backend's capped tail and
polling follower (orchestrators/docker/logs.py), and the manager ends a follow once `inspect`
says the task ended. Where only the swarm can be asked, its logs are read without `follow`,
at most one answer's worth of bytes kept. A node that cannot be asked is BackendUnavailable
saying which node, never an empty log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker

from botfleet.orchestrators.base import TailFirstFollower
from botfleet.orchestrators.docker.engine import engine_errors
from botfleet.orchestrators.docker.logs import ContainerFollower
from botfleet.orchestrators.log_tail import BLOCK, LogLimits


class ServiceLogs:
    """A service's logs read through the swarm, shaped as a docker Container's `logs` (the one
    method the docker backend's tail and follower call), bounded to `limits`."""

    def __init__(self, client: docker.DockerClient, service_id: str, limits: LogLimits) -> None:
        self.id = service_id
        self._client = client
        self._window = limits.max_bytes + BLOCK

    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | str = "all",
        timestamps: bool = False,
        since: float | None = None,
    ) -> bytes:
        kept = bytearray()
        with engine_errors(f"reading the swarm's logs of service {self.id[:12]}"):
            chunks = self._client.api.service_logs(
                self.id,
                stdout=stdout,
                stderr=stderr,
                tail=tail,
                timestamps=timestamps,
                since=since or None,
                follow=False,
                is_tty=False,
            )
            for chunk in chunks:  # the last window only: a bot's output may be huge
                kept += chunk
                if len(kept) > 2 * self._window:
                    del kept[: len(kept) - self._window]
        return bytes(kept)


#: What a reader is opened on: a Container of a node engine, or a ServiceLogs.
LogSource = Any


class LazyFollower(TailFirstFollower):
    """Follows a task whose container may not exist yet: `resolve` is asked again on each read
    until it names a source, then that source is polled (ContainerFollower)."""

    def __init__(
        self, first: str, resolve: Callable[[], LogSource | None], limits: LogLimits
    ) -> None:
        super().__init__(first)
        self._resolve = resolve
        self._limits = limits
        self._inner: ContainerFollower | None = None

    def read_new(self) -> bytes:
        if self._inner is None:
            source = self._resolve()
            if source is None:
                return b""
            self._inner = ContainerFollower(source, "", self._limits)
        return self._inner.read_new()
