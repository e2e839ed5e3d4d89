"""The network bots' containers join (`BOTFLEET_DOCKER_NETWORK`).

By default a container shares the host's network (`host`), because on one machine the manager's
default callback URL and Redis listen on 127.0.0.1, which only a host-networked container
reaches. That also lets a bot reach every port of the host (the database and Redis included). A
named network that the engine does not have is created on the first launch (a bridge labelled
`botfleet.managed=true`); it is never removed, since other fleets' bots may share it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import docker
import docker.errors

from botfleet.orchestrators.base import LABEL_MANAGED, LaunchFailed
from botfleet.orchestrators.docker.engine import engine_errors

log = logging.getLogger(__name__)


def is_network_mode(network: str) -> bool:
    """`host`, `none` and `container:<id>` are modes, not networks: nothing to look up or create."""
    return network in ("host", "none") or network.startswith("container:")


class NetworkMissing(Exception):
    """The engine says the configured network does not exist (any more)."""


class BotNetwork:
    """The configured network: looked up once (and again if a launch finds it gone), created
    when missing. Launches run on many worker threads: one of them looks it up."""

    def __init__(self, name: str, client: Callable[[], docker.DockerClient]) -> None:
        self.name = name
        self._client = client
        self._lock = threading.Lock()
        self._ready = is_network_mode(name)

    def container_args(self) -> dict[str, Any]:
        """How `containers.create` joins it."""
        if is_network_mode(self.name):
            return {"network_mode": self.name}
        return {"network": self.name}

    def forget(self) -> None:
        """A launch found it gone: look it up (and create it) again."""
        self._ready = False

    def raise_if_missing(self, exc: docker.errors.APIError) -> None:
        """NetworkMissing if `exc` says so; the engine checks the network at create or at start,
        depending on its version."""
        explanation = str(exc.explanation or exc)
        named_network = not is_network_mode(self.name)
        if exc.status_code == 404 and named_network and "network" in explanation:
            raise NetworkMissing(explanation) from exc

    def ensure(self) -> None:
        """Make sure the network exists: create it, as a labelled bridge, if not.

        Raises LaunchFailed (`network_unavailable`) when the engine refuses to create it,
        BackendUnavailable when the engine cannot be asked.
        """
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            with engine_errors(f"looking up the Docker network {self.name!r}"):
                # The name filter matches substrings: compare the names exactly.
                networks = self._client().api.networks(names=[self.name])
                if not [n for n in networks if n["Name"] == self.name]:
                    self._create()
            self._ready = True

    def _create(self) -> None:
        log.info("creating the Docker network %r (a bridge) for the bots", self.name)
        try:
            self._client().api.create_network(
                self.name,
                driver="bridge",
                check_duplicate=True,
                labels={LABEL_MANAGED: "true"},
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # another manager created it meanwhile
                return
            raise LaunchFailed(  # the engine answered, and refused
                f"the Docker network {self.name!r} does not exist and the engine refused to "
                f"create it: {exc.explanation or exc}. Create it yourself, or set "
                "BOTFLEET_DOCKER_NETWORK to an existing network or to `host`",
                code="network_unavailable",
            ) from exc
