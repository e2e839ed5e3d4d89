"""The `docker` backend: one container per bot attempt, on a Docker Engine via the docker SDK.

Containers are hardened by the shared policy (orchestrators/hardening.py: no new privileges,
every capability dropped, read-only root with a tmpfs /tmp, a non-root user, CPU/memory/pids
limits) and carry labels that identify botfleet, the bot and the user; never the environment,
which holds the bot's token and secrets. They are not auto-removed: the exit code and the last
log lines are read first, then the reconciler removes them (`remove`).

The docker SDK blocks; the manager calls every method here from worker threads.

Modules: `backend` (the Orchestrator), `config` (`BOTFLEET_DOCKER_*`), `engine` (the client and
its errors), `containers` (a container's create arguments and its state), `network` (the network
bots join, created if missing), `volumes` (`state_key` volumes) and `logs` (tails and followers).
"""

from botfleet.orchestrators.base import STATE_MOUNT
from botfleet.orchestrators.docker.backend import DockerOrchestrator
from botfleet.orchestrators.docker.config import DockerOrchestratorConfig

__all__ = ["STATE_MOUNT", "DockerOrchestrator", "DockerOrchestratorConfig"]
